"""Exceptions of the JMA XML reader: one base, named after the rule broken.

::

    JmaError                    a JMA message was refused; .problems point at the cause
    ├── JmaTooLarge             more bytes or elements than the limits allow
    ├── JmaNotWellFormed        not XML, empty, or carries a DOCTYPE (no DTDs, no entities)
    ├── JmaSchemaInvalid        not valid against JMA's schemas (jmx*.xsd)
    └── JmaUnsupported          valid, but a data type (InfoKind) Sonae does not read

An adapter answers :class:`JmaError` as the CAP path does: ``JmaTooLarge`` 413,
``JmaNotWellFormed`` 400, ``JmaSchemaInvalid`` and ``JmaUnsupported`` 422, each
with its ``problems``; a feed poller dead-letters the entry with the same.
A wrong JMA code table in a region pack is not a message problem: loading it
raises the region pack's own errors (:class:`schemas.region.RegionPackError`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "JmaError",
    "JmaNotWellFormed",
    "JmaProblem",
    "JmaSchemaInvalid",
    "JmaTooLarge",
    "JmaUnsupported",
]


@dataclass(frozen=True, slots=True)
class JmaProblem:
    """One reason for a refusal: where (an XPath-like pointer), what, and the line if known."""

    pointer: str
    """E.g. ``/Report/Head/InfoType``; ``""`` for the whole document."""
    message: str
    line: int | None = None
    code: str = "jma"
    """A short machine-readable kind, e.g. ``jma_schema``, ``too_large``."""


class JmaError(Exception):
    """Base of every refusal of a JMA message; ``problems`` says what and where."""

    def __init__(self, message: str, problems: tuple[JmaProblem, ...] = ()) -> None:
        self.problems: tuple[JmaProblem, ...] = problems or (JmaProblem("", message),)
        super().__init__(message)

    @property
    def pointer(self) -> str:
        """The pointer of the first problem."""
        return self.problems[0].pointer


class JmaTooLarge(JmaError):
    """The document is larger (bytes) or has more elements than the limit."""

    def __init__(self, message: str, *, limit: int, actual: int | None = None) -> None:
        self.limit = limit
        self.actual = actual
        super().__init__(message, (JmaProblem("", message, None, "too_large"),))


class JmaNotWellFormed(JmaError):
    """Not well-formed XML, empty, or a DOCTYPE (refused: DTDs are how XXE gets in)."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.line = line
        super().__init__(message, (JmaProblem("", message, line, "not_well_formed"),))


class JmaSchemaInvalid(JmaError):
    """Not valid against JMA's XML schemas; each problem names the element path and line."""


class JmaUnsupported(JmaError):
    """A valid JMA message of a data type (``Head/InfoKind``) that Sonae does not read."""

    def __init__(self, info_kind: str, title: str) -> None:
        self.info_kind = info_kind
        self.title = title
        message = (f"JMA data type {info_kind!r} ({title}) is not read by Sonae; "
                   "see docs/jma.md for the data types that are")
        super().__init__(message, (JmaProblem("/Report/Head/InfoKind", message, None,
                                              "unsupported"),))

