"""The OASIS CAP 1.2 XML Schema (``CAP-v1.2.xsd``, © OASIS Open 2010), kept as package data.

Intake validates every ingested CAP alert against it; the broadcaster can validate
what it produces against the same file.
"""
