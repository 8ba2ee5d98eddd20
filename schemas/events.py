"""The one discriminated union of every event, and its decoder and encoder.

Decode every inbound event with :func:`decode_event` and encode with
:func:`encode_event`; both go through the module-level :data:`EVENT_ADAPTER`
(built once: building a ``TypeAdapter`` is expensive). A current-version JSON
event is validated in one pass; otherwise decoding is:

1. parse JSON (bytes/str) or copy a mapping;
2. check ``type`` names a known event and ``schema_version`` is an integer;
3. apply the upcasters from that version to the current one;
4. validate against the union, discriminated on ``type``.

Every failure is an :class:`~schemas.errors.InvalidEvent` whose ``problems``
name the fields at fault (dotted paths such as ``payload.location.lat``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, TypeAlias, cast, get_args

from pydantic import Field, TypeAdapter, ValidationError

from schemas.broadcasts import (
    BroadcastDelivered,
    BroadcastFailed,
    BroadcastPublished,
    BroadcastRequested,
)
from schemas.common import NonFiniteNumber, dotted, refuse_non_finite
from schemas.envelope import Envelope
from schemas.errors import FieldProblem, InvalidEvent, MalformedEvent, UnknownEventType
from schemas.evacuation import (
    CommandRejected,
    EvacuationCommand,
    EvacuationRecommended,
    OrderIssued,
    OrderLifted,
    OrderUpdated,
    RecommendationClosed,
)
from schemas.hazards import GaugeReading, HazardDataQuality, HazardWarning, SeismicIntensity
from schemas.people import AtHomeReported, HouseholdCheckedIn, HouseholdCheckedOut, WelfareChecked
from schemas.reports import ReportAccepted, ReportRejected, ReportSubmitted
from schemas.shelters import (
    ShelterAreaSummary,
    ShelterCapacityAlert,
    ShelterClosed,
    ShelterNeedsReported,
    ShelterOccupancyReported,
    ShelterOpened,
    ShelterStatusChanged,
)
from schemas.supplies import (
    GeneratorRegistered,
    GeneratorStatusReported,
    SupplyAssigned,
    SupplyCancelled,
    SupplyDispatched,
    SupplyReceived,
    SupplyRequested,
)
from schemas.upcasting import UPCASTERS

__all__ = [
    "CURRENT_VERSIONS",
    "EVENT_ADAPTER",
    "EVENT_CLASSES",
    "Event",
    "decode_event",
    "encode_event",
    "problems_from",
]

_AnyEvent: TypeAlias = (
    ReportSubmitted
    | ReportAccepted
    | ReportRejected
    | ShelterOpened
    | ShelterClosed
    | ShelterOccupancyReported
    | ShelterNeedsReported
    | HouseholdCheckedIn
    | HouseholdCheckedOut
    | ShelterStatusChanged
    | ShelterCapacityAlert
    | ShelterAreaSummary
    | GaugeReading
    | HazardWarning
    | SeismicIntensity
    | HazardDataQuality
    | EvacuationRecommended
    | RecommendationClosed
    | EvacuationCommand
    | CommandRejected
    | OrderIssued
    | OrderUpdated
    | OrderLifted
    | BroadcastRequested
    | BroadcastDelivered
    | BroadcastFailed
    | BroadcastPublished
    | AtHomeReported
    | WelfareChecked
    | SupplyRequested
    | SupplyAssigned
    | SupplyDispatched
    | SupplyReceived
    | SupplyCancelled
    | GeneratorRegistered
    | GeneratorStatusReported
)

Event: TypeAlias = Annotated[_AnyEvent, Field(discriminator="type")]
"""Any Sonae event; ``event.type`` tells which."""

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
"""The one validator/serialiser of :data:`Event`."""

EVENT_CLASSES: Mapping[str, type[Envelope]] = MappingProxyType(
    {cls.EVENT_TYPE: cls for cls in get_args(_AnyEvent)}
)
"""Event type string → model class, in declaration order."""

_EVENT_CLASS_TUPLE: tuple[type[Envelope], ...] = get_args(_AnyEvent)

CURRENT_VERSIONS: Mapping[str, int] = MappingProxyType(
    {name: cls.SCHEMA_VERSION for name, cls in EVENT_CLASSES.items()}
)
"""Event type string → the schema_version this code produces and validates."""


def problems_from(error: ValidationError, *, tag: str | None = None) -> tuple[FieldProblem, ...]:
    """Turn a pydantic error into field problems with dotted paths.

    Errors from the union carry the discriminator value as the first location
    element (``report.submitted.payload.severity``); pass it as ``tag`` to drop
    it, so paths are relative to the event document (``payload.severity``).
    """
    problems = []
    for e in error.errors():
        loc = e["loc"]
        if tag is not None and loc[:1] == (tag,):
            loc = loc[1:]
        problems.append(FieldProblem(dotted(loc), e["msg"]))
    return tuple(problems)


def _document(raw: bytes | bytearray | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        # parse_constant refuses NaN/Infinity: they are not JSON, and a number
        # field must not silently become non-finite.
        parsed = json.loads(raw, parse_constant=refuse_non_finite)
    except (UnicodeDecodeError, json.JSONDecodeError, NonFiniteNumber) as e:
        raise MalformedEvent(f"not valid JSON: {e}") from e
    except RecursionError as e:
        raise MalformedEvent("JSON nested too deeply") from e
    if not isinstance(parsed, dict):
        raise MalformedEvent(f"expected a JSON object, got {type(parsed).__name__}")
    return parsed



def decode_event(raw: bytes | bytearray | str | Mapping[str, Any]) -> Event:
    """Decode one event from JSON bytes/text or a mapping, upcasting older versions.

    Raises :class:`~schemas.errors.InvalidEvent` (or a subclass) naming the fields at fault.
    """
    if not isinstance(raw, Mapping):
        # Fast path for the common case, a current-version event on the wire:
        # pydantic's own JSON parser validates in one pass (~1.6x the throughput
        # of json.loads + validate_python). Anything it refuses (an old version
        # that needs upcasting, or a bad message) takes the full path below,
        # which upcasts and produces the errors; the property tests check that
        # both paths agree.
        try:
            return EVENT_ADAPTER.validate_json(raw)
        except ValidationError:
            pass
    document = _document(raw)
    event_type = document.get("type")
    if "type" not in document:
        raise InvalidEvent([FieldProblem("type", "Field required")])
    if not isinstance(event_type, str) or event_type not in EVENT_CLASSES:
        raise UnknownEventType(event_type)
    if "schema_version" not in document:
        raise InvalidEvent([FieldProblem("schema_version", "Field required")])
    target = CURRENT_VERSIONS[event_type]
    if document["schema_version"] != target or isinstance(document["schema_version"], bool):
        document = UPCASTERS.upcast(document, target)
    try:
        return EVENT_ADAPTER.validate_python(document)
    except ValidationError as e:
        raise InvalidEvent(problems_from(e, tag=event_type)) from e


def encode_event(event: Envelope) -> bytes:
    """Serialise an event as compact UTF-8 JSON (non-ASCII kept as is, times in UTC)."""
    if not isinstance(event, _EVENT_CLASS_TUPLE):
        raise TypeError(f"{type(event).__name__} is not an event of the union")
    # The isinstance check above is what makes this cast true.
    return EVENT_ADAPTER.dump_json(cast(_AnyEvent, event))
