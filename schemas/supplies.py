"""Supplies and power: requests from shelters and facilities, community generators.

Supply requests (topic ``supplies.requests``, keyed by the request): a shelter, a
stranded-commuter facility or a generator's owner asks for items; HQ assigns the
request, marks it dispatched, and the site (or HQ) marks it received. Every step
is an event, so the queue is audited and a drill replays it:

    requested ──assign──> assigned ──dispatch──> dispatched ──receive──> received
        └──────cancel──────┴──────cancel─────┘

:func:`next_status` is that table; intake checks each step against the request's
current status before it accepts it, and every reader folds the events with it.

Community generators (topic ``generators``, keyed by the generator): HQ registers
the generators a 地域防災組織 or a site keeps (owner, place, fuel, output,
runtime on a full tank); during an outage their state is reported (running,
stopped, fuel low, fault) and fuel is requested like any other supply.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Final, Literal
from uuid import UUID

from pydantic import Field, Strict

from schemas.common import (
    INT_ONLY,
    ActorId,
    AreaId,
    ContractModel,
    GeoPoint,
    Name,
    Note,
    Reporter,
    Slug,
)
from schemas.envelope import Envelope
from schemas.errors import SupplyTransitionRefused

__all__ = [
    "STEP_EVENTS",
    "FuelType",
    "GeneratorRegistered",
    "GeneratorRegisteredPayload",
    "GeneratorState",
    "GeneratorStatusReported",
    "GeneratorStatusReportedPayload",
    "RequesterKind",
    "SupplyAssigned",
    "SupplyCancelled",
    "SupplyDispatched",
    "SupplyItem",
    "SupplyLine",
    "SupplyReceived",
    "SupplyRequestStatus",
    "SupplyRequested",
    "SupplyRequestedPayload",
    "SupplyStepPayload",
    "Urgency",
    "next_status",
]

Quantity = Annotated[int, Strict(), Field(ge=1, le=1_000_000)]
"""How many units of an item, 1..1000000."""
Hours = Annotated[float, Strict(), Field(ge=0.0, le=10_000.0, allow_inf_nan=False)]
"""A duration in hours."""
Kva = Annotated[float, Strict(), Field(gt=0.0, le=10_000.0, allow_inf_nan=False)]
"""Rated output in kVA."""


class RequesterKind(StrEnum):
    """What kind of place a request comes from."""

    SHELTER = "shelter"
    """A shelter (指定避難所) of the region pack."""
    FACILITY = "facility"
    """A stranded-commuter facility (一時滞在施設) of the region pack."""
    GENERATOR = "generator"
    """A registered community generator (for fuel)."""


class SupplyItem(StrEnum):
    """What is asked for."""

    WATER = "water"
    """Drinking water (litres)."""
    FOOD = "food"
    """Meals."""
    BLANKETS = "blankets"
    """Blankets."""
    MEDICAL = "medical"
    """Medical supplies."""
    FUEL = "fuel"
    """Fuel for generators (litres)."""
    HYGIENE = "hygiene"
    """Toilets, nappies, sanitary goods."""
    OTHER = "other"
    """Anything else (say what in the line's note)."""


class Urgency(StrEnum):
    """How soon a request must be met."""

    ROUTINE = "routine"
    """Within the day."""
    URGENT = "urgent"
    """Within hours."""
    CRITICAL = "critical"
    """Now: lives depend on it."""


class SupplyLine(ContractModel):
    """One item of a request."""

    item: SupplyItem
    """What."""
    quantity: Quantity
    """How many units."""
    note: Note = ""
    """Details, e.g. which medicine, or what "other" is."""


class SupplyRequestStatus(StrEnum):
    """Where a supply request stands."""

    REQUESTED = "requested"
    ASSIGNED = "assigned"
    DISPATCHED = "dispatched"
    RECEIVED = "received"
    CANCELLED = "cancelled"


class SupplyRequestedPayload(ContractModel):
    """A site asked for supplies."""

    request_id: UUID
    """The request (intake derives it from the client's id)."""
    requester_kind: RequesterKind
    """What the requesting site is."""
    site_id: Slug
    """The site: a region-pack shelter or facility id, or a generator id."""
    area_id: AreaId
    """The site's district (intake fills it from the region pack or the generator)."""
    lines: Annotated[tuple[SupplyLine, ...], Field(min_length=1, max_length=20)]
    """What is asked for."""
    urgency: Urgency = Urgency.ROUTINE
    """How soon."""
    note: Note = ""
    """Remark from the site."""
    requested_by: Reporter
    """Who asked."""


class SupplyRequested(Envelope):
    """A supply request was made."""

    type: Literal["supply.requested"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: SupplyRequestedPayload


class SupplyStepPayload(ContractModel):
    """A step of a supply request after it was made."""

    request_id: UUID
    """The request."""
    by: ActorId
    """Who took the step (token subject)."""
    assignee: Name | None = None
    """For ``supply.assigned``: the team or depot that will deliver."""
    note: Note = ""
    """Remark, e.g. the vehicle, what was short, why it was cancelled."""


class SupplyAssigned(Envelope):
    """HQ assigned a request to a team or depot."""

    type: Literal["supply.assigned"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: SupplyStepPayload


class SupplyDispatched(Envelope):
    """The supplies left for the site."""

    type: Literal["supply.dispatched"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: SupplyStepPayload


class SupplyReceived(Envelope):
    """The site received the supplies."""

    type: Literal["supply.received"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: SupplyStepPayload


class SupplyCancelled(Envelope):
    """The request was withdrawn before dispatch."""

    type: Literal["supply.cancelled"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: SupplyStepPayload


STEP_EVENTS: Final[Mapping[str, SupplyRequestStatus]] = MappingProxyType({
    "supply.requested": SupplyRequestStatus.REQUESTED,
    "supply.assigned": SupplyRequestStatus.ASSIGNED,
    "supply.dispatched": SupplyRequestStatus.DISPATCHED,
    "supply.received": SupplyRequestStatus.RECEIVED,
    "supply.cancelled": SupplyRequestStatus.CANCELLED,
})
"""Event type → the status it moves a request to."""

_ALLOWED: Final[Mapping[SupplyRequestStatus | None, frozenset[SupplyRequestStatus]]] = {
    None: frozenset({SupplyRequestStatus.REQUESTED}),
    SupplyRequestStatus.REQUESTED: frozenset({SupplyRequestStatus.ASSIGNED,
                                              SupplyRequestStatus.CANCELLED}),
    SupplyRequestStatus.ASSIGNED: frozenset({SupplyRequestStatus.DISPATCHED,
                                             SupplyRequestStatus.CANCELLED}),
    SupplyRequestStatus.DISPATCHED: frozenset({SupplyRequestStatus.RECEIVED}),
    SupplyRequestStatus.RECEIVED: frozenset(),
    SupplyRequestStatus.CANCELLED: frozenset(),
}


def next_status(current: SupplyRequestStatus | None,
                event_type: str) -> SupplyRequestStatus:
    """The status after ``event_type`` from ``current`` (None: no such request yet).

    Raises :class:`SupplyTransitionRefused` naming both when the table above does
    not allow the step (e.g. receiving what was never dispatched).
    """
    target = STEP_EVENTS.get(event_type)
    if target is None:
        raise SupplyTransitionRefused(f"{event_type!r} is not a supply request step")
    if target not in _ALLOWED[current]:
        if current is None:
            raise SupplyTransitionRefused(f"no such request: {target.value} needs a request "
                                          "made first")
        allowed = ", ".join(sorted(s.value for s in _ALLOWED[current])) or "nothing"
        raise SupplyTransitionRefused(
            f"a {current.value} request cannot become {target.value} (from {current.value}: "
            f"{allowed})")
    return target


# --- community generators -------------------------------------------------------------------


class FuelType(StrEnum):
    """What a generator burns."""

    GASOLINE = "gasoline"
    DIESEL = "diesel"
    LPG = "lpg"
    GAS_CARTRIDGE = "gas_cartridge"
    """Cassette gas (カセットボンベ)."""


class GeneratorRegisteredPayload(ContractModel):
    """A generator HQ knows of; a later registration of the same id replaces it."""

    generator_id: Slug
    """The generator's id (chosen at registration, e.g. ``kanda-koen-gen-1``)."""
    owner: Name
    """Who keeps it: a 地域防災組織 (町会, 自主防災組織) or a site."""
    site_id: Slug | None = None
    """The shelter or facility it stands at, if any."""
    area_id: AreaId
    """Its district."""
    location: GeoPoint
    """Where it is."""
    fuel: FuelType
    """What it burns."""
    rated_kva: Kva
    """Rated output, kVA."""
    runtime_full_hours: Annotated[Hours, Field(gt=0.0)]
    """Running time at full load on a full tank, hours."""
    registered_by: ActorId
    """The HQ subject who registered it."""


class GeneratorRegistered(Envelope):
    """A community generator was registered (or its details changed)."""

    type: Literal["generator.registered"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: GeneratorRegisteredPayload


class GeneratorState(StrEnum):
    """How a generator is doing."""

    RUNNING = "running"
    STOPPED = "stopped"
    FUEL_LOW = "fuel_low"
    """Running, fuel low: ask for fuel."""
    FAULT = "fault"
    """Broken down."""


class GeneratorStatusReportedPayload(ContractModel):
    """A generator's state during an outage."""

    generator_id: Slug
    """The generator (registered)."""
    state: GeneratorState
    """Its state now."""
    fuel_hours_left: Hours | None = None
    """Running time left on its fuel, if known."""
    reported_by: Reporter
    """Who reported."""
    note: Note = ""
    """Remark."""


class GeneratorStatusReported(Envelope):
    """A generator's state was reported."""

    type: Literal["generator.status_reported"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: GeneratorStatusReportedPayload
