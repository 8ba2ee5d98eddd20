"""Exceptions of the contract layer: one base, named after the rule broken.

::

    SchemaError
    ├── InvalidEvent            input cannot become an event; .problems name the fields
    │   ├── MalformedEvent      not JSON, or not a JSON object
    │   ├── UnknownEventType    the type is not one Sonae knows
    │   └── UnsupportedSchemaVersion  newer than this code, or no upcaster path
    ├── UnknownTopic            a topic name outside the catalogue
    ├── WrongTopic              an event sent to a topic that does not carry its type
    ├── InvalidNamespace        a topic namespace that is not a valid prefix
    ├── SupplyTransitionRefused a supply request step its current status does not allow
    └── UpcasterConflict        two upcasters registered for one (type, version)

A consumer dead-letters on :class:`InvalidEvent` (the message is bad) and lets
the others propagate (the code or configuration is bad).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FieldProblem",
    "InvalidEvent",
    "InvalidNamespace",
    "MalformedEvent",
    "SchemaError",
    "SupplyTransitionRefused",
    "UnknownEventType",
    "UnknownTopic",
    "UnsupportedSchemaVersion",
    "UpcasterConflict",
    "WrongTopic",
]


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One validation failure: the dotted path of the field (``""`` for the whole input)."""

    field: str
    message: str


class SchemaError(Exception):
    """Base of every error raised by :mod:`schemas`."""


class InvalidEvent(SchemaError, ValueError):
    """The input is not a valid event; ``problems`` names each offending field."""

    def __init__(self, problems: list[FieldProblem] | tuple[FieldProblem, ...]) -> None:
        self.problems: tuple[FieldProblem, ...] = tuple(problems)
        super().__init__(
            "; ".join(f"{p.field or '<input>'}: {p.message}" for p in self.problems)
            or "invalid event"
        )

    @property
    def fields(self) -> tuple[str, ...]:
        """The dotted paths at fault, in the order reported."""
        return tuple(p.field for p in self.problems)


class MalformedEvent(InvalidEvent):
    """The input is not JSON, or not a JSON object."""

    def __init__(self, message: str) -> None:
        super().__init__([FieldProblem("", message)])


class UnknownEventType(InvalidEvent):
    """The ``type`` is not an event type of the union."""

    def __init__(self, event_type: object) -> None:
        self.event_type = event_type
        super().__init__([FieldProblem("type", f"unknown event type {event_type!r}")])


class UnsupportedSchemaVersion(InvalidEvent):
    """The ``schema_version`` is newer than this code knows, or no upcaster reaches it."""

    def __init__(self, event_type: str, version: int, message: str) -> None:
        self.event_type = event_type
        self.version = version
        super().__init__([FieldProblem("schema_version", message)])


class UnknownTopic(SchemaError, LookupError):
    """A topic name that the catalogue does not declare."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(f"unknown topic {topic!r}: not in schemas.topics.CATALOGUE")


class WrongTopic(SchemaError):
    """An event was routed to a topic that does not carry its type."""

    def __init__(self, topic: str, event_type: str, expected: str | None) -> None:
        self.topic = topic
        self.event_type = event_type
        self.expected = expected
        where = f"; it belongs on {expected!r}" if expected else ""
        super().__init__(f"topic {topic!r} does not carry {event_type!r}{where}")


class InvalidNamespace(SchemaError, ValueError):
    """A topic namespace that would not make valid, isolated topic names."""


class UpcasterConflict(SchemaError):
    """Two upcasters claim the same (type, from_version), or one is out of range."""


class SupplyTransitionRefused(SchemaError, ValueError):
    """A supply request step that the request's current status does not allow."""
