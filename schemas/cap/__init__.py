"""The OASIS CAP 1.2 XML Schema (``CAP-v1.2.xsd``, © OASIS Open 2010), kept as package data.

Intake validates every ingested CAP alert against it; the broadcaster validates
what it produces against the same schema, loaded once per process by
:func:`cap_schema`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from lxml import etree

from schemas.xml import hardened_parser

__all__ = ["cap_schema"]


@cache
def cap_schema() -> etree.XMLSchema:
    """The OASIS CAP 1.2 schema (read once, on first use)."""
    xsd = resources.files("schemas.cap").joinpath("CAP-v1.2.xsd").read_bytes()
    # The schema is our own package data; still, never fetch anything it names.
    return etree.XMLSchema(etree.fromstring(xsd, hardened_parser()))
