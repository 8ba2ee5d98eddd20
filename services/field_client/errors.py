"""Exceptions of the field client: one base, named after the rule broken.

::

    FieldClientError
    └── OutboxCorrupt       a line of the local outbox file is not an entry (it may hold
                            unsent reports, so the file is never rewritten over it)

The commands (:mod:`services.field_client.cli`) print the message and exit 1;
answers from intake are not exceptions here but outcomes of a delivery.
"""

from __future__ import annotations

__all__ = ["FieldClientError", "OutboxCorrupt"]


class FieldClientError(Exception):
    """Base of every error raised by :mod:`services.field_client`."""


class OutboxCorrupt(FieldClientError):
    """The outbox file holds a line that is not a valid entry; the message names the line."""
