"""Exceptions of the websocket gateway: one base, named after the rule broken.

::

    GatewayError
    ├── GatewayStartupError     the gateway cannot start (a port taken, no region pack)
    ├── LogReplaced             a partition's offsets went backwards: the broker's log is
    │                           not the one the picture was read from
    ├── InvalidPosition         a resume position this gateway cannot read
    ├── Refused                 a client's message refused with an ``error`` reply
    │                           (``code``) and, with ``close``, a close code
    └── BadPublicRequest        a public HTTP request the portal cannot answer (400)
        ├── UnknownArea         an area id that is not in the region pack
        └── TooManyAreas        more areas than a resident may follow at once

:class:`GatewayStartupError` ends the process with a one-line reason;
:class:`LogReplaced` makes the gateway rebuild its picture and close every
client so it reconnects for a fresh snapshot; an :class:`InvalidPosition` in a
hello just means a snapshot instead of a resume; a :class:`Refused`
never leaves its connection. Driver errors (Kafka, PostgreSQL, the intake HTTP
call) are caught where they happen and become one of these or a logged
fallback. The base classes the gateway raised before (``RuntimeError``,
``ValueError``) stay in each class's bases, so existing handlers still match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "BadPublicRequest",
    "GatewayError",
    "GatewayStartupError",
    "InvalidPosition",
    "LogReplaced",
    "Refused",
    "TooManyAreas",
    "UnknownArea",
]


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class GatewayStartupError(GatewayError, RuntimeError):
    """The gateway cannot start; the message says what to fix."""


class LogReplaced(GatewayError, RuntimeError):
    """A partition's offsets went backwards: the broker's log is not the one we read."""


class InvalidPosition(GatewayError, ValueError):
    """A position string that this gateway cannot read (garbled, or from another format)."""


class Refused(GatewayError):
    """A request refused with an error reply (and, with ``close``, a close code)."""

    def __init__(self, code: str, message: str, *, close: int | None = None,
                 errors: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close
        self.errors = errors


class BadPublicRequest(GatewayError, ValueError):
    """A request to the public HTTP documents that names something wrong (answered 400)."""


class UnknownArea(BadPublicRequest):
    """An area id that is not a district of the region pack."""


class TooManyAreas(BadPublicRequest):
    """More areas than a resident may follow at once."""
