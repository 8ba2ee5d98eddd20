"""The recorder's pure rules: event-store rows and projection reducers.

No I/O and no clock here. :func:`event_row` turns a decoded event and the
metadata of the record it came in (topic, partition, offset, key) into a row of
the ``events`` table. The reducers fold events into projections: one row per
aggregate, the shape the ``*_current`` tables of migrations 0003 and 0012 hold.

Every reducer keeps, per aggregate, what the *winning* event under a total order
says, so folding is order-independent: a duplicate delivery changes nothing, a
late or replayed event never moves a row backwards, and how two partitions
interleave does not matter (the recorder reads many partitions at once, and
related events can sit on different ones). The orders:

- **reports** (``report_id``): the status comes from the latest event by event
  time (``occurred_at``), ties broken submitted < rejected < accepted, then by
  event id. The report's details (category, severity, area, position) come from
  the latest acceptance if there is one, else from the latest submission; an
  acceptance carries the validated report and the resolved area, so it is the
  better source. Only an acceptance names the report id; a submission and a
  rejection join their report through it (see :func:`report_submission`).
- **shelters** (``shelter_id``): the ``shelter.status_changed`` with the highest
  ``version`` (the tracker increments it with every change), then event id.
- **orders** (``order_id``): the highest ``version``, then event id; a lift is a
  version like any other, so an old update arriving late never revives a lifted
  order.
- **broadcasts** (``message_id, version, language, channel``): delivered beats
  failed beats requested; among failures the highest attempt, then event time,
  then event id. ``broadcast.requested`` creates a row per language × channel
  and supplies the message kind.

- **households** (``shelter_id, household_code``): the latest check-in (event
  time, then event id) gives the details, the latest check-out its time; the
  household is ``in`` when its latest check-in is later than its latest check-out
  (at the same instant the check-out applies, as in the shelter tracker).
- **at home** (``household_id``): the latest report by event time, then event id
  (a later report replaces it); beside it the latest welfare check, ordered alike.
- **supply requests** (``request_id``): the status is the furthest step (requested
  < assigned < dispatched < received or cancelled; intake accepts only the steps of
  ``schemas.supplies.next_status``), each step keeps its earliest time.
- **generators** (``generator_id``): the latest registration and, apart, the
  latest status report, each by event time, then event id.

A reducer returns ``current`` itself (the same object) when the event changes
nothing, so the store writes only rows that changed; ``last_event_id`` is the
event that last changed the row.

Why one file over ~500 lines: the eight projections follow the one rule above
(fold by a total order per aggregate); each is short, and side by side the
orders can be compared at a glance.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Generic, NamedTuple, TypeAlias, TypeVar
from uuid import UUID

from schemas.broadcasts import BroadcastDelivered, BroadcastFailed, BroadcastRequested
from schemas.deadletter import DeadLetter
from schemas.evacuation import OrderIssued, OrderLifted, OrderUpdated
from schemas.events import Event
from schemas.people import AtHomeReported, HouseholdCheckedIn, HouseholdCheckedOut, WelfareChecked
from schemas.reports import ReportAccepted, ReportRejected, ReportSubmitted, ReportSubmittedPayload
from schemas.shelters import ShelterStatusChanged
from schemas.supplies import (
    STEP_EVENTS,
    GeneratorRegistered,
    GeneratorStatusReported,
    SupplyAssigned,
    SupplyCancelled,
    SupplyDispatched,
    SupplyReceived,
    SupplyRequested,
    SupplyRequestStatus,
)
from schemas.topics import split_qualified
from services.recorder.errors import NotAnEvent

__all__ = [
    "AT_HOME",
    "BROADCASTS",
    "DEAD_LETTER_COLUMNS",
    "EVENT_COLUMNS",
    "GENERATORS",
    "HOUSEHOLDS",
    "ORDERS",
    "PROJECTIONS",
    "PROJECTIONS_FOR",
    "REPORTS",
    "SHELTERS",
    "SUPPLY_REQUESTS",
    "AtHomeRow",
    "BroadcastRow",
    "BroadcastStatus",
    "DeadLetterRow",
    "EventRow",
    "GeneratorRow",
    "HouseholdRow",
    "HouseholdStatus",
    "Key",
    "OrderRow",
    "OrderStatus",
    "Projection",
    "Recorded",
    "ReportRow",
    "ReportStatus",
    "ShelterRow",
    "SupplyRequestRow",
    "apply_at_home",
    "apply_broadcast",
    "apply_generator",
    "apply_household",
    "apply_order",
    "apply_report",
    "apply_shelter",
    "apply_supply",
    "broadcast_keys",
    "catalogue_name_of",
    "dead_letter_row",
    "event_row",
    "key_text",
    "namespace_of",
    "report_keys",
    "report_submission",
]

# --- the event store ---------------------------------------------------------------


class EventRow(NamedTuple):
    """One row of the ``events`` table, fields in the order of :data:`EVENT_COLUMNS`."""

    event_id: UUID
    type: str
    schema_version: int
    topic: str
    partition: int
    offset: int
    key: str | None
    occurred_at: datetime
    recorded_at: datetime
    exercise: bool
    namespace: str
    envelope: str
    """The event's JSON, stored as jsonb (as received unless it was upcast)."""


EVENT_COLUMNS: tuple[str, ...] = EventRow._fields
"""The ``events`` columns the recorder writes (``seq`` and ``stored_at`` are the database's)."""


class Recorded(NamedTuple):
    """A decoded event with the row that stores it."""

    row: EventRow
    event: Event


@functools.lru_cache(maxsize=1024)
def namespace_of(topic: str) -> str:
    """The namespace of a qualified catalogue topic (cached: topics are few, events many)."""
    return split_qualified(topic)[0]


@functools.lru_cache(maxsize=1024)
def catalogue_name_of(topic: str) -> str:
    """The catalogue (unqualified) name of a qualified topic, e.g. ``deadletter``."""
    return split_qualified(topic)[1].name


def key_text(key: bytes | None) -> str | None:
    """A record key as text for the ``key`` column; raise NotAnEvent if it cannot be one.

    Sonae keys are aggregate ids (UTF-8 text). A key that is not text could not
    be republished byte for byte from a text column, so such a record is refused
    rather than stored altered.
    """
    if key is None:
        return None
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotAnEvent(f"the record key is not UTF-8 text: {e}") from e
    if "\x00" in text:
        raise NotAnEvent("the record key contains NUL, which a PostgreSQL text cannot hold")
    return text


def event_row(
    event: Event, *, topic: str, partition: int, offset: int, key: str | None, envelope: str
) -> EventRow:
    """The ``events`` row for ``event``, read from ``topic[partition]@offset`` with ``key``.

    ``envelope`` is the event's JSON; which bytes (as received, or re-encoded after
    an upcast) is the caller's choice, so this module stays free of serialisation.
    """
    return EventRow(
        event_id=event.event_id,
        type=event.type,
        schema_version=event.schema_version,
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        exercise=event.exercise,
        namespace=namespace_of(topic),
        envelope=envelope,
    )


class DeadLetterRow(NamedTuple):
    """One row of the ``dead_letters`` table."""

    namespace: str
    letter_id: str
    topic: str
    partition: int
    offset: int
    service: str
    error: str
    failed_at: datetime
    letter: str


DEAD_LETTER_COLUMNS: tuple[str, ...] = DeadLetterRow._fields


def dead_letter_row(value: bytes, *, topic: str) -> DeadLetterRow:
    """The ``dead_letters`` row for a record of a deadletter topic.

    Raises pydantic's ``ValidationError`` when ``value`` is not a DeadLetter. The
    id is the SHA-256 of the record's bytes: a redelivery is the same letter,
    while the same input failing again later (a new ``failed_at``) is a new one.
    """
    letter = DeadLetter.model_validate_json(value)
    return DeadLetterRow(
        namespace=namespace_of(topic),
        letter_id=hashlib.sha256(value).hexdigest(),
        topic=letter.topic,
        partition=letter.partition,
        offset=letter.offset,
        service=letter.service,
        error=letter.error,
        failed_at=letter.failed_at,
        letter=letter.model_dump_json(),
    )


# --- projections -------------------------------------------------------------------

Key: TypeAlias = tuple[Any, ...]
"""A projection row's natural key, in the order of its ``key_columns``."""

R = TypeVar("R")


@dataclass(frozen=True)
class Projection(Generic[R]):
    """One projection: its table, natural key, row type, and how events fold into it."""

    table: str
    key_columns: tuple[str, ...]
    row_type: type[R]
    event_types: frozenset[str]
    """The event types whose keys name rows of this projection."""
    keys: Callable[[Event], tuple[Key, ...]]
    """The keys of the rows an event changes (empty when it changes none)."""
    apply: Callable[[R | None, Event, Key], R]
    """Fold one event into the row at one key; return the row itself when unchanged."""

    def key_of(self, row: R) -> Key:
        """The natural key of ``row``."""
        return tuple(getattr(row, column) for column in self.key_columns)


# --- reports -------------------------------------------------------------------------


class ReportStatus(StrEnum):
    """Where a report stands."""

    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


ReportEvent: TypeAlias = ReportSubmitted | ReportAccepted | ReportRejected

_REPORT_STATUS: dict[str, ReportStatus] = {
    ReportSubmitted.EVENT_TYPE: ReportStatus.SUBMITTED,
    ReportAccepted.EVENT_TYPE: ReportStatus.ACCEPTED,
    ReportRejected.EVENT_TYPE: ReportStatus.REJECTED,
}
# At the same event time a decision outranks the submission it decides, and an
# acceptance outranks a rejection (a corrected resend accepted in the same instant).
_STATUS_RANK: dict[str, int] = {
    ReportStatus.SUBMITTED: 0,
    ReportStatus.REJECTED: 1,
    ReportStatus.ACCEPTED: 2,
}


@dataclass(frozen=True, slots=True)
class ReportRow:
    """A report as it stands (``reports_current``)."""

    report_id: UUID
    status: str
    status_at: datetime
    status_event_id: UUID
    reasons: str | None
    submitted_event_id: UUID | None
    submitted_at: datetime | None
    client_report_id: str | None
    reporter_team: str | None
    category: str | None
    severity: int | None
    area_id: str | None
    outside_region: bool | None
    lat: float | None
    lon: float | None
    details_at: datetime | None
    details_event_id: UUID | None
    last_event_id: UUID


def report_keys(event: Event) -> tuple[Key, ...]:
    """The report an event names by id: only an acceptance carries ``report_id``."""
    if isinstance(event, ReportAccepted):
        return ((event.payload.report_id,),)
    return ()


def report_submission(event: Event) -> UUID | None:
    """The ``report.submitted`` a report event is about (its own id for a submission).

    Intake derives ``report_id`` from the authenticated sender and the device's
    id; a submission does not carry the sender, so only its acceptance can say
    which report it is. Submissions and rejections therefore join their report
    through the acceptance of the same submission, whichever is stored first (the
    store resolves it). A rejection of input that never became a submission, or a
    submission never accepted, has no report id and stays in the event store only.
    """
    if isinstance(event, ReportSubmitted):
        return event.event_id
    if isinstance(event, ReportAccepted | ReportRejected):
        return event.payload.submitted_event_id
    return None


def _reasons_json(event: ReportEvent) -> str | None:
    if not isinstance(event, ReportRejected):
        return None
    return json.dumps([r.model_dump(mode="json") for r in event.payload.reasons],
                      ensure_ascii=False)


def apply_report(current: ReportRow | None, event: ReportEvent, report_id: UUID) -> ReportRow:
    """Fold a report event into the report ``report_id``."""
    at, event_id = event.occurred_at, event.event_id
    status = _REPORT_STATUS[event.type]
    # Which field groups this event wins (see the module docstring for the orders).
    takes_status = current is None or (
        (at, _STATUS_RANK[status], event_id)
        > (current.status_at, _STATUS_RANK[current.status], current.status_event_id))
    takes_submission = isinstance(event, ReportSubmitted) and (
        current is None or current.submitted_at is None or current.submitted_event_id is None
        or (at, event_id) > (current.submitted_at, current.submitted_event_id))
    body: ReportSubmittedPayload | None = None
    area_id: str | None = None
    outside_region: bool | None = None
    if isinstance(event, ReportSubmitted):
        body, area_id = event.payload, event.payload.area_id
    elif isinstance(event, ReportAccepted):
        body, area_id = event.payload.report, event.payload.area_id
        outside_region = event.payload.outside_region
    takes_details = body is not None and (
        current is None or current.details_at is None or current.details_event_id is None
        # Details from an acceptance (outside_region set) outrank any submission's.
        or ((0 if outside_region is None else 1, at, event_id)
            > (0 if current.outside_region is None else 1, current.details_at,
               current.details_event_id)))
    if current is not None and not (takes_status or takes_submission or takes_details):
        return current
    # One constructor call rather than a dataclasses.replace per group: this runs for
    # every report event, and replace() is the slow part of a fold.
    keep = current
    location = body.location if body is not None else None
    return ReportRow(
        report_id=report_id,
        status=status if takes_status or keep is None else keep.status,
        status_at=at if takes_status or keep is None else keep.status_at,
        status_event_id=event_id if takes_status or keep is None else keep.status_event_id,
        reasons=(_reasons_json(event) if takes_status or keep is None else keep.reasons),
        submitted_event_id=(event_id if takes_submission
                            else keep.submitted_event_id if keep is not None else None),
        submitted_at=at if takes_submission else keep.submitted_at if keep is not None else None,
        **(_details(body, at, event_id, area_id, outside_region, location)
           if takes_details and body is not None else _kept_details(keep)),
        last_event_id=event_id,
    )


def _details(body: ReportSubmittedPayload, at: datetime, event_id: UUID, area_id: str | None,
             outside_region: bool | None, location: Any) -> dict[str, Any]:
    return {
        "client_report_id": body.client_report_id,
        "reporter_team": body.reporter.team,
        "category": body.category.value,
        "severity": body.severity,
        "area_id": area_id,
        "outside_region": outside_region,
        "lat": location.lat if location is not None else None,
        "lon": location.lon if location is not None else None,
        "details_at": at,
        "details_event_id": event_id,
    }


_DETAIL_FIELDS = ("client_report_id", "reporter_team", "category", "severity", "area_id",
                  "outside_region", "lat", "lon", "details_at", "details_event_id")


def _kept_details(row: ReportRow | None) -> dict[str, Any]:
    if row is None:
        return dict.fromkeys(_DETAIL_FIELDS)
    return {name: getattr(row, name) for name in _DETAIL_FIELDS}


def _apply_report(current: ReportRow | None, event: Event, key: Key) -> ReportRow:
    if not isinstance(event, ReportSubmitted | ReportAccepted | ReportRejected):
        raise TypeError(f"{event.type} does not fold into reports")
    return apply_report(current, event, key[0])


REPORTS: Projection[ReportRow] = Projection(
    "reports_current", ("report_id",), ReportRow, frozenset({ReportAccepted.EVENT_TYPE}),
    report_keys, _apply_report,
)


# --- shelters ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShelterRow:
    """A shelter's latest state from the tracker (``shelters_current``)."""

    shelter_id: str
    version: int
    status: str
    name: str
    occupancy: int
    capacity: int | None
    state: str
    changed_at: datetime
    last_event_id: UUID


def apply_shelter(current: ShelterRow | None, event: ShelterStatusChanged) -> ShelterRow:
    """Keep the shelter state with the highest version."""
    state = event.payload
    if current is not None and (state.version, event.event_id) <= (current.version,
                                                                   current.last_event_id):
        return current
    return ShelterRow(
        shelter_id=state.shelter_id,
        version=state.version,
        status=state.status.value,
        name=state.name,
        occupancy=state.occupancy,
        capacity=state.capacity,
        state=state.model_dump_json(),
        changed_at=event.occurred_at,
        last_event_id=event.event_id,
    )


def _shelter_keys(event: Event) -> tuple[Key, ...]:
    if isinstance(event, ShelterStatusChanged):
        return ((event.payload.shelter_id,),)
    return ()


def _apply_shelter(current: ShelterRow | None, event: Event, key: Key) -> ShelterRow:
    if not isinstance(event, ShelterStatusChanged):
        raise TypeError(f"{event.type} does not fold into shelters")
    return apply_shelter(current, event)


SHELTERS: Projection[ShelterRow] = Projection(
    "shelters_current", ("shelter_id",), ShelterRow,
    frozenset({ShelterStatusChanged.EVENT_TYPE}), _shelter_keys, _apply_shelter,
)


# --- orders --------------------------------------------------------------------------


class OrderStatus(StrEnum):
    """Whether an order is in force."""

    ACTIVE = "active"
    LIFTED = "lifted"


OrderEvent: TypeAlias = OrderIssued | OrderUpdated | OrderLifted


@dataclass(frozen=True, slots=True)
class OrderRow:
    """An evacuation order at its latest version (``orders_current``)."""

    order_id: UUID
    version: int
    status: str
    level: int
    hazard: str
    area_ids: tuple[str, ...]
    designated_shelter_ids: tuple[str, ...]
    issued_by: str
    approved_at: datetime
    automatic: bool
    recommendation_id: UUID | None
    lifted_by: str | None
    lift_reason: str | None
    state: str
    changed_at: datetime
    last_event_id: UUID


def apply_order(current: OrderRow | None, event: OrderEvent) -> OrderRow:
    """Keep the order's highest version; an older version never replaces a newer one."""
    body = event.payload
    if current is not None and (body.version, event.event_id) <= (current.version,
                                                                  current.last_event_id):
        return current
    lifted = isinstance(event, OrderLifted)
    return OrderRow(
        order_id=body.order_id,
        version=body.version,
        status=OrderStatus.LIFTED if lifted else OrderStatus.ACTIVE,
        level=int(body.level),
        hazard=body.hazard.value,
        area_ids=tuple(body.area_ids),
        designated_shelter_ids=tuple(body.designated_shelter_ids),
        issued_by=body.issued_by,
        approved_at=body.approved_at,
        automatic=body.automatic,
        recommendation_id=body.recommendation_id,
        lifted_by=event.payload.lifted_by if isinstance(event, OrderLifted) else None,
        lift_reason=event.payload.reason if isinstance(event, OrderLifted) else None,
        state=body.model_dump_json(),
        changed_at=event.occurred_at,
        last_event_id=event.event_id,
    )


def _order_keys(event: Event) -> tuple[Key, ...]:
    if isinstance(event, OrderIssued | OrderUpdated | OrderLifted):
        return ((event.payload.order_id,),)
    return ()


def _apply_order(current: OrderRow | None, event: Event, key: Key) -> OrderRow:
    if not isinstance(event, OrderIssued | OrderUpdated | OrderLifted):
        raise TypeError(f"{event.type} does not fold into orders")
    return apply_order(current, event)


ORDERS: Projection[OrderRow] = Projection(
    "orders_current", ("order_id",), OrderRow,
    frozenset(c.EVENT_TYPE for c in (OrderIssued, OrderUpdated, OrderLifted)),
    _order_keys, _apply_order,
)


# --- broadcasts ----------------------------------------------------------------------


class BroadcastStatus(StrEnum):
    """Where one (message, version, language, channel) delivery stands."""

    REQUESTED = "requested"
    FAILED = "failed"
    DELIVERED = "delivered"


BroadcastEvent: TypeAlias = BroadcastRequested | BroadcastDelivered | BroadcastFailed

# Delivered is final: the broadcaster promises one successful delivery, and a failed
# attempt reported late must not hide it.
_PHASE: dict[str, int] = {
    BroadcastStatus.REQUESTED: 0,
    BroadcastStatus.FAILED: 1,
    BroadcastStatus.DELIVERED: 2,
}


@dataclass(frozen=True, slots=True)
class BroadcastRow:
    """The latest outcome of one delivery (``broadcasts_current``)."""

    message_id: UUID
    version: int
    language: str
    channel: str
    status: str
    kind: str | None
    attempt: int
    will_retry: bool | None
    next_attempt_at: datetime | None
    error: str | None
    delivered_at: datetime | None
    receipt: str | None
    status_at: datetime
    status_event_id: UUID
    last_event_id: UUID


def broadcast_keys(event: Event) -> tuple[Key, ...]:
    """The deliveries a broadcast event is about: every language × channel of a request."""
    if isinstance(event, BroadcastRequested):
        p = event.payload
        return tuple((p.message_id, p.version, language, channel)
                     for language in p.languages for channel in p.channels)
    if isinstance(event, BroadcastDelivered | BroadcastFailed):
        q = event.payload
        return ((q.message_id, q.version, q.language, q.channel),)
    return ()


def apply_broadcast(current: BroadcastRow | None, event: BroadcastEvent, key: Key) -> BroadcastRow:
    """Fold a broadcast event into the delivery at ``key``."""
    message_id, version, language, channel = key
    if isinstance(event, BroadcastRequested):
        kind = event.payload.kind.value
        if current is None:
            return BroadcastRow(
                message_id=message_id, version=version, language=language, channel=channel,
                status=BroadcastStatus.REQUESTED, kind=kind, attempt=0, will_retry=None,
                next_attempt_at=None, error=None, delivered_at=None, receipt=None,
                status_at=event.occurred_at, status_event_id=event.event_id,
                last_event_id=event.event_id,
            )
        if current.kind is None:  # an outcome was recorded before its request
            return replace(current, kind=kind, last_event_id=event.event_id)
        return current
    status = (BroadcastStatus.DELIVERED if isinstance(event, BroadcastDelivered)
              else BroadcastStatus.FAILED)
    attempt = event.payload.attempt
    if current is not None and (
        (_PHASE[status], attempt, event.occurred_at, event.event_id)
        <= (_PHASE[current.status], current.attempt, current.status_at, current.status_event_id)
    ):
        return current
    failed = event.payload if isinstance(event, BroadcastFailed) else None
    delivered = event.payload if isinstance(event, BroadcastDelivered) else None
    return BroadcastRow(
        message_id=message_id, version=version, language=language, channel=channel,
        status=status,
        kind=current.kind if current is not None else None,
        attempt=attempt,
        will_retry=failed.will_retry if failed is not None else None,
        next_attempt_at=failed.next_attempt_at if failed is not None else None,
        error=failed.error if failed is not None else None,
        delivered_at=delivered.delivered_at if delivered is not None else None,
        receipt=delivered.receipt if delivered is not None else None,
        status_at=event.occurred_at,
        status_event_id=event.event_id,
        last_event_id=event.event_id,
    )


def _apply_broadcast(current: BroadcastRow | None, event: Event, key: Key) -> BroadcastRow:
    if not isinstance(event, BroadcastRequested | BroadcastDelivered | BroadcastFailed):
        raise TypeError(f"{event.type} does not fold into broadcasts")
    return apply_broadcast(current, event, key)


BROADCASTS: Projection[BroadcastRow] = Projection(
    "broadcasts_current",
    ("message_id", "version", "language", "channel"),
    BroadcastRow,
    frozenset(c.EVENT_TYPE for c in (BroadcastRequested, BroadcastDelivered, BroadcastFailed)),
    broadcast_keys,
    _apply_broadcast,
)

# --- households at shelters ----------------------------------------------------------


class HouseholdStatus(StrEnum):
    """Whether a household is at the shelter of its row."""

    IN = "in"
    OUT = "out"


@dataclass(frozen=True, slots=True)
class HouseholdRow:
    """A household at one shelter: its latest check-in and check-out there
    (``households_current``; ``name`` and ``contact`` are personal)."""

    shelter_id: str
    household_code: str
    status: str
    size: int | None
    needs: tuple[str, ...]
    language: str | None
    name: str | None
    contact: str | None
    transferred_from: str | None
    transferred_to: str | None
    checked_in_at: datetime | None
    in_event_id: UUID | None
    checked_out_at: datetime | None
    out_event_id: UUID | None
    reporter_team: str | None
    last_event_id: UUID


def _later(at: datetime, event_id: UUID, than_at: datetime | None,
           than_id: UUID | None) -> bool:
    """Whether (at, event_id) wins over a field group last set at (than_at, than_id)."""
    return than_at is None or than_id is None or (at, event_id) > (than_at, than_id)


def _household_status(checked_in_at: datetime | None,
                      checked_out_at: datetime | None) -> str:
    # A check-out at the same instant as the check-in is not older than it: it applies
    # (the shelter tracker's rule: only a check-out older than the check-in is stale).
    if checked_in_at is not None and (checked_out_at is None or checked_in_at > checked_out_at):
        return HouseholdStatus.IN
    return HouseholdStatus.OUT


def apply_household(current: HouseholdRow | None,
                    event: HouseholdCheckedIn | HouseholdCheckedOut) -> HouseholdRow:
    """Fold a check-in or check-out into the household's row at its shelter."""
    at, event_id = event.occurred_at, event.event_id
    if isinstance(event, HouseholdCheckedIn):
        if current is not None and not _later(at, event_id, current.checked_in_at,
                                              current.in_event_id):
            return current
        p = event.payload
        checked_out_at = current.checked_out_at if current is not None else None
        return HouseholdRow(
            shelter_id=p.shelter_id, household_code=p.household_code,
            status=_household_status(at, checked_out_at),
            size=p.size, needs=tuple(n.value for n in p.needs), language=p.language,
            name=p.name, contact=p.contact, transferred_from=p.transferred_from,
            transferred_to=current.transferred_to if current is not None else None,
            checked_in_at=at, in_event_id=event_id,
            checked_out_at=checked_out_at,
            out_event_id=current.out_event_id if current is not None else None,
            reporter_team=p.reported_by.team, last_event_id=event_id,
        )
    q = event.payload
    if current is None:
        return HouseholdRow(
            shelter_id=q.shelter_id, household_code=q.household_code,
            status=HouseholdStatus.OUT, size=None, needs=(), language=None, name=None,
            contact=None, transferred_from=None, transferred_to=q.transferred_to,
            checked_in_at=None, in_event_id=None, checked_out_at=at, out_event_id=event_id,
            reporter_team=None, last_event_id=event_id,
        )
    if not _later(at, event_id, current.checked_out_at, current.out_event_id):
        return current
    return replace(current, status=_household_status(current.checked_in_at, at),
                   transferred_to=q.transferred_to, checked_out_at=at, out_event_id=event_id,
                   last_event_id=event_id)


def _household_keys(event: Event) -> tuple[Key, ...]:
    if isinstance(event, HouseholdCheckedIn | HouseholdCheckedOut):
        return ((event.payload.shelter_id, event.payload.household_code),)
    return ()


def _apply_household(current: HouseholdRow | None, event: Event, key: Key) -> HouseholdRow:
    if not isinstance(event, HouseholdCheckedIn | HouseholdCheckedOut):
        raise TypeError(f"{event.type} does not fold into households")
    return apply_household(current, event)


HOUSEHOLDS: Projection[HouseholdRow] = Projection(
    "households_current", ("shelter_id", "household_code"), HouseholdRow,
    frozenset({HouseholdCheckedIn.EVENT_TYPE, HouseholdCheckedOut.EVENT_TYPE}),
    _household_keys, _apply_household,
)


# --- residents at home ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AtHomeRow:
    """A household sheltering at home: its latest report and latest welfare check
    (``at_home_current``; ``contact``, ``address``, ``note`` and ``welfare_note`` are
    personal)."""

    household_id: UUID
    area_id: str
    size: int | None
    needs: tuple[str, ...]
    via: str | None
    contact: str | None
    address: str | None
    note: str
    reporter_team: str | None
    reported_at: datetime | None
    report_event_id: UUID | None
    welfare_outcome: str | None
    welfare_note: str
    welfare_checked_by: str | None
    welfare_checked_at: datetime | None
    welfare_event_id: UUID | None
    last_event_id: UUID


def apply_at_home(current: AtHomeRow | None,
                  event: AtHomeReported | WelfareChecked) -> AtHomeRow:
    """Fold an at-home report (a later one replaces it) or a welfare check into its row."""
    at, event_id = event.occurred_at, event.event_id
    if isinstance(event, AtHomeReported):
        if current is not None and not _later(at, event_id, current.reported_at,
                                              current.report_event_id):
            return current
        p = event.payload
        return AtHomeRow(
            household_id=p.household_id, area_id=p.area_id, size=p.size,
            needs=tuple(n.value for n in p.needs), via=p.via, contact=p.contact,
            address=p.address, note=p.note,
            reporter_team=p.reported_by.team if p.reported_by is not None else None,
            reported_at=at, report_event_id=event_id,
            **_kept_welfare(current), last_event_id=event_id,
        )
    q = event.payload
    if current is not None and not _later(at, event_id, current.welfare_checked_at,
                                          current.welfare_event_id):
        return current
    welfare: dict[str, Any] = {"welfare_outcome": q.outcome.value, "welfare_note": q.note,
               "welfare_checked_by": q.checked_by, "welfare_checked_at": at,
               "welfare_event_id": event_id}
    if current is None:
        return AtHomeRow(
            household_id=q.household_id, area_id=q.area_id, size=None, needs=(), via=None,
            contact=None, address=None, note="", reporter_team=None, reported_at=None,
            report_event_id=None, **welfare, last_event_id=event_id,
        )
    return replace(current, **welfare, last_event_id=event_id)


def _kept_welfare(row: AtHomeRow | None) -> dict[str, Any]:
    if row is None:
        return {"welfare_outcome": None, "welfare_note": "", "welfare_checked_by": None,
                "welfare_checked_at": None, "welfare_event_id": None}
    return {"welfare_outcome": row.welfare_outcome, "welfare_note": row.welfare_note,
            "welfare_checked_by": row.welfare_checked_by,
            "welfare_checked_at": row.welfare_checked_at,
            "welfare_event_id": row.welfare_event_id}


def _at_home_keys(event: Event) -> tuple[Key, ...]:
    if isinstance(event, AtHomeReported | WelfareChecked):
        return ((event.payload.household_id,),)
    return ()


def _apply_at_home(current: AtHomeRow | None, event: Event, key: Key) -> AtHomeRow:
    if not isinstance(event, AtHomeReported | WelfareChecked):
        raise TypeError(f"{event.type} does not fold into at-home households")
    return apply_at_home(current, event)


AT_HOME: Projection[AtHomeRow] = Projection(
    "at_home_current", ("household_id",), AtHomeRow,
    frozenset({AtHomeReported.EVENT_TYPE, WelfareChecked.EVENT_TYPE}),
    _at_home_keys, _apply_at_home,
)


# --- supply requests -----------------------------------------------------------------

SupplyEvent: TypeAlias = (SupplyRequested | SupplyAssigned | SupplyDispatched | SupplyReceived
                          | SupplyCancelled)
_SUPPLY_EVENTS = (SupplyRequested, SupplyAssigned, SupplyDispatched, SupplyReceived,
                  SupplyCancelled)

# How far along each status is. Intake accepts only the steps of
# schemas.supplies.next_status, so a request holds either a dispatch or a cancel,
# never both; the furthest step is the status whatever order the steps arrive in.
_SUPPLY_RANK: dict[str, int] = {
    SupplyRequestStatus.REQUESTED: 0,
    SupplyRequestStatus.ASSIGNED: 1,
    SupplyRequestStatus.DISPATCHED: 2,
    SupplyRequestStatus.RECEIVED: 3,
    SupplyRequestStatus.CANCELLED: 3,
}
_STEP_COLUMN: dict[str, str] = {
    SupplyRequestStatus.REQUESTED: "requested_at",
    SupplyRequestStatus.ASSIGNED: "assigned_at",
    SupplyRequestStatus.DISPATCHED: "dispatched_at",
    SupplyRequestStatus.RECEIVED: "received_at",
    SupplyRequestStatus.CANCELLED: "cancelled_at",
}


@dataclass(frozen=True, slots=True)
class SupplyRequestRow:
    """A supply request: its furthest step and each step's event time
    (``supply_requests_current``)."""

    request_id: UUID
    status: str
    requester_kind: str | None
    site_id: str | None
    area_id: str | None
    lines: str | None
    """The requested lines as JSON."""
    urgency: str | None
    requester_team: str | None
    assignee: str | None
    requested_at: datetime | None
    assigned_at: datetime | None
    dispatched_at: datetime | None
    received_at: datetime | None
    cancelled_at: datetime | None
    status_at: datetime
    status_event_id: UUID
    last_event_id: UUID


def apply_supply(current: SupplyRequestRow | None, event: SupplyEvent) -> SupplyRequestRow:
    """Fold a supply request step into the request's row."""
    at, event_id = event.occurred_at, event.event_id
    status = STEP_EVENTS[event.type]
    column = _STEP_COLUMN[status]
    step_at: datetime | None = getattr(current, column) if current is not None else None
    # Each step happens once; a step seen twice keeps its earliest time.
    takes_step = step_at is None or at < step_at
    takes_status = current is None or (
        (_SUPPLY_RANK[status], at, event_id)
        > (_SUPPLY_RANK[current.status], current.status_at, current.status_event_id))
    if current is not None and not (takes_step or takes_status):
        return current
    changes: dict[str, Any] = {"last_event_id": event_id}
    if takes_step:
        changes[column] = at
        if isinstance(event, SupplyRequested):
            p = event.payload
            changes.update(
                requester_kind=p.requester_kind.value, site_id=p.site_id, area_id=p.area_id,
                lines=json.dumps([line.model_dump(mode="json") for line in p.lines],
                                 ensure_ascii=False),
                urgency=p.urgency.value, requester_team=p.requested_by.team)
        elif isinstance(event, SupplyAssigned):
            changes["assignee"] = event.payload.assignee
    if takes_status:
        changes.update(status=status, status_at=at, status_event_id=event_id)
    if current is None:
        empty = SupplyRequestRow(
            request_id=event.payload.request_id, status=status, requester_kind=None,
            site_id=None, area_id=None, lines=None, urgency=None, requester_team=None,
            assignee=None, requested_at=None, assigned_at=None, dispatched_at=None,
            received_at=None, cancelled_at=None, status_at=at, status_event_id=event_id,
            last_event_id=event_id)
        return replace(empty, **changes)
    return replace(current, **changes)


def _supply_keys(event: Event) -> tuple[Key, ...]:
    if isinstance(event, _SUPPLY_EVENTS):
        return ((event.payload.request_id,),)
    return ()


def _apply_supply(current: SupplyRequestRow | None, event: Event, key: Key) -> SupplyRequestRow:
    if not isinstance(event, _SUPPLY_EVENTS):
        raise TypeError(f"{event.type} does not fold into supply requests")
    return apply_supply(current, event)


SUPPLY_REQUESTS: Projection[SupplyRequestRow] = Projection(
    "supply_requests_current", ("request_id",), SupplyRequestRow,
    frozenset(c.EVENT_TYPE for c in _SUPPLY_EVENTS), _supply_keys, _apply_supply,
)


# --- community generators ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeneratorRow:
    """A community generator: its latest registration and latest reported state
    (``generators_current``)."""

    generator_id: str
    owner: str | None
    site_id: str | None
    area_id: str | None
    lat: float | None
    lon: float | None
    fuel: str | None
    rated_kva: float | None
    runtime_full_hours: float | None
    registered_at: datetime | None
    registered_event_id: UUID | None
    state: str | None
    fuel_hours_left: float | None
    state_note: str | None
    reporter_team: str | None
    state_at: datetime | None
    state_event_id: UUID | None
    last_event_id: UUID


_NO_GENERATOR: dict[str, Any] = {
    "owner": None, "site_id": None, "area_id": None, "lat": None, "lon": None, "fuel": None,
    "rated_kva": None, "runtime_full_hours": None, "registered_at": None,
    "registered_event_id": None, "state": None, "fuel_hours_left": None, "state_note": None,
    "reporter_team": None, "state_at": None, "state_event_id": None,
}


def apply_generator(current: GeneratorRow | None,
                    event: GeneratorRegistered | GeneratorStatusReported) -> GeneratorRow:
    """Fold a registration (a later one replaces it) or a status report into its row."""
    at, event_id = event.occurred_at, event.event_id
    if isinstance(event, GeneratorRegistered):
        if current is not None and not _later(at, event_id, current.registered_at,
                                              current.registered_event_id):
            return current
        p = event.payload
        changes: dict[str, Any] = {
            "owner": p.owner, "site_id": p.site_id, "area_id": p.area_id,
            "lat": p.location.lat, "lon": p.location.lon, "fuel": p.fuel.value,
            "rated_kva": p.rated_kva, "runtime_full_hours": p.runtime_full_hours,
            "registered_at": at, "registered_event_id": event_id}
    else:
        if current is not None and not _later(at, event_id, current.state_at,
                                              current.state_event_id):
            return current
        q = event.payload
        changes = {"state": q.state.value, "fuel_hours_left": q.fuel_hours_left,
                   "state_note": q.note, "reporter_team": q.reported_by.team,
                   "state_at": at, "state_event_id": event_id}
    if current is None:
        return GeneratorRow(generator_id=event.payload.generator_id,
                            **{**_NO_GENERATOR, **changes}, last_event_id=event_id)
    return replace(current, **changes, last_event_id=event_id)


def _generator_keys(event: Event) -> tuple[Key, ...]:
    if isinstance(event, GeneratorRegistered | GeneratorStatusReported):
        return ((event.payload.generator_id,),)
    return ()


def _apply_generator(current: GeneratorRow | None, event: Event, key: Key) -> GeneratorRow:
    if not isinstance(event, GeneratorRegistered | GeneratorStatusReported):
        raise TypeError(f"{event.type} does not fold into generators")
    return apply_generator(current, event)


GENERATORS: Projection[GeneratorRow] = Projection(
    "generators_current", ("generator_id",), GeneratorRow,
    frozenset({GeneratorRegistered.EVENT_TYPE, GeneratorStatusReported.EVENT_TYPE}),
    _generator_keys, _apply_generator,
)

PROJECTIONS: tuple[Projection[Any], ...] = (REPORTS, SHELTERS, ORDERS, BROADCASTS, HOUSEHOLDS,
                                             AT_HOME, SUPPLY_REQUESTS, GENERATORS)
"""Every projection the recorder keeps, with its table."""

PROJECTIONS_FOR: Mapping[str, tuple[Projection[Any], ...]] = MappingProxyType({
    event_type: tuple(p for p in PROJECTIONS if event_type in p.event_types)
    for p in PROJECTIONS for event_type in p.event_types
})
"""Event type -> the projections it names rows of (most types: none)."""
