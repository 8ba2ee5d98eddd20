"""Broadcaster: multilingual public messages, CAP 1.2, signed webhooks, exactly-once delivery.

See docs/broadcaster.md.
"""
