"""The one envelope every event travels in, and the helper that builds events.

Field meanings:

- ``event_id``: unique id of this event; consumers deduplicate on it. Services
  that must be deterministic (the evacuation decision) derive it with
  :func:`derive_id` from their input, so a replay produces the same ids.
- ``type`` / ``schema_version``: what the payload is, and which shape of it.
- ``occurred_at``: when the thing happened in the world (event time). Rules use
  this, never the wall clock.
- ``recorded_at``: when Sonae recorded the event (processing time).
- ``source``: the service or feed that emitted it.
- ``correlation_id``: the id of the first event of the chain this one belongs
  to (a root event correlates to itself), so a drill timeline can follow a
  gauge reading through recommendation, approval, order and broadcast.
- ``causation_id``: the id of the event that directly caused this one.
- ``exercise``: true for drill traffic; it is inherited from the cause and can
  never be switched off downstream.

Every envelope field is required, on the wire and in the model: if decoding
filled ``event_id`` or ``recorded_at``, two deliveries of one message would
decode to different events and idempotency would break, and a drill event that
lost its ``exercise`` flag must not default to live. :func:`new_event` fills
them all when a service creates an event.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, TypeVar, get_args
from uuid import UUID

from pydantic import BaseModel, ConfigDict, StrictBool

from schemas.common import Source, UtcDatetime, utc_now

__all__ = ["SONAE_ID_NAMESPACE", "Envelope", "derive_id", "new_event"]

SONAE_ID_NAMESPACE = UUID("5b0a3e6c-7d1f-5c2e-9a4b-0e5f6a7b8c9d")
"""UUIDv5 namespace for ids Sonae derives deterministically. Never change it:
derived ids would stop matching the ones already stored."""


def _envelope_schema_extra(schema: dict[str, Any]) -> None:
    # Concrete events redeclare type/schema_version/payload without docstrings;
    # keep the envelope's descriptions in every generated schema.
    for name, prop in schema.get("properties", {}).items():
        described = Envelope.model_fields.get(name)
        if described is not None and described.description and "description" not in prop:
            prop["description"] = described.description


class Envelope(BaseModel):
    """Common shape of every event; concrete events narrow ``type`` and ``payload``."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra=_envelope_schema_extra,
    )

    EVENT_TYPE: ClassVar[str] = ""
    """The ``type`` string of a concrete event class (set by ``__pydantic_init_subclass__``)."""
    SCHEMA_VERSION: ClassVar[int] = 0
    """The current ``schema_version`` of a concrete event class."""

    event_id: UUID
    """Unique id of this event; consumers deduplicate on it."""
    type: str
    """The event type, e.g. ``report.submitted``; the union's discriminator."""
    schema_version: int
    """Version of this type's payload shape; older versions are upcast on decode."""
    occurred_at: UtcDatetime
    """When it happened in the world (event time, UTC)."""
    recorded_at: UtcDatetime
    """When Sonae recorded it (processing time, UTC)."""
    source: Source
    """The service or feed that emitted the event."""
    correlation_id: UUID
    """The first event of this chain (a root event names itself)."""
    causation_id: UUID | None
    """The event that directly caused this one; null for a root event."""
    exercise: StrictBool
    """True for drill traffic; inherited from the cause."""
    payload: BaseModel
    """The type-specific body."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # Read the Literal once so callers can say ReportSubmitted.EVENT_TYPE without
        # an instance; an abstract intermediate class (plain str/int) has neither.
        type_args = get_args(cls.model_fields["type"].annotation)
        version_args = get_args(cls.model_fields["schema_version"].annotation)
        if len(type_args) == 1 and isinstance(type_args[0], str):
            cls.EVENT_TYPE = type_args[0]
        if len(version_args) == 1 and isinstance(version_args[0], int):
            cls.SCHEMA_VERSION = version_args[0]


E = TypeVar("E", bound=Envelope)


def derive_id(*parts: str | UUID | int) -> UUID:
    """A deterministic event or aggregate id: UUIDv5 of the parts in Sonae's namespace.

    Use it wherever a replay of the same input must yield the same id, e.g.
    ``derive_id("recommendation", rule_id, area_id, trigger_event_id)``.
    """
    if not parts:
        raise ValueError("derive_id needs at least one part")
    # A unit separator cannot occur in a slug or a UUID, so ("a-b", "c") and
    # ("a", "b-c") never collide.
    name = "\x1f".join(str(p) for p in parts)
    return uuid.uuid5(SONAE_ID_NAMESPACE, name)


def new_event(
    event_cls: type[E],
    payload: BaseModel | Mapping[str, Any],
    *,
    occurred_at: datetime,
    source: str,
    cause: Envelope | None = None,
    event_id: UUID | None = None,
    recorded_at: datetime | None = None,
    correlation_id: UUID | None = None,
    exercise: bool | None = None,
) -> E:
    """Build and validate an event of ``event_cls``.

    ``occurred_at`` is required: only the caller knows when the thing happened.
    ``event_id`` defaults to a random UUIDv4 (pass :func:`derive_id` output for
    determinism) and ``recorded_at`` to now in UTC. With ``cause``, the new event
    records ``causation_id=cause.event_id``, joins the cause's correlation chain
    and inherits its ``exercise`` flag; a conflicting ``exercise`` or
    ``correlation_id`` is a ``ValueError`` because drill traffic must never turn
    into live traffic. Without a cause the event starts a chain of its own.
    """
    if not event_cls.EVENT_TYPE:
        raise TypeError(f"{event_cls.__name__} is not a concrete event type")
    the_id = event_id if event_id is not None else uuid.uuid4()
    causation: UUID | None = None
    if cause is not None:
        causation = cause.event_id
        if exercise is not None and exercise != cause.exercise:
            raise ValueError(
                f"exercise={exercise} contradicts the cause {cause.event_id} "
                f"(exercise={cause.exercise}); the flag is inherited"
            )
        if correlation_id is not None and correlation_id != cause.correlation_id:
            raise ValueError("correlation_id contradicts the cause's correlation chain")
        exercise = cause.exercise
        correlation_id = cause.correlation_id
    return event_cls.model_validate(
        {
            "event_id": the_id,
            "type": event_cls.EVENT_TYPE,
            "schema_version": event_cls.SCHEMA_VERSION,
            "occurred_at": occurred_at,
            "recorded_at": recorded_at if recorded_at is not None else utc_now(),
            "source": source,
            "correlation_id": correlation_id if correlation_id is not None else the_id,
            "causation_id": causation,
            "exercise": bool(exercise),
            "payload": payload,
        }
    )
