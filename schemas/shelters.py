"""Shelters: updates from shelter staff, the tracker's derived state, capacity alerts.

Inputs (topic ``shelters.updates``): ``shelter.opened``, ``shelter.closed``,
``shelter.occupancy_reported``, ``shelter.needs_reported``. The shelter tracker
folds them into one state per shelter and emits ``shelter.status_changed`` (the
full state, on a compacted topic) and ``shelter.capacity_alert``.

State machine (owned by the tracker, recorded here as the vocabulary):
closed → opening → open → crowded → full → closing → closed. A shelter's
capacity comes from the region pack unless staff report the real figure.
docs/shelter-tracker.md has the transition table, thresholds and hysteresis.

Area aggregates (topic ``shelters.areas``, compacted, keyed by area):
``shelter.area_summary`` counts an area's shelters by status and sums their
capacity, occupancy and free capacity, in total and per designated hazard, for
the evacuation decision and the COP.

Added to version 1 before any publication outside tests (so without a version
bump or an upcaster): ``households`` and ``special_care`` in
``shelter.occupancy_reported`` and in ``ShelterState``, both optional with a
null default; and the ``shelter.area_summary`` event.

Added to version 1 with defaults, so every stored state still decodes: the
check-in fields of ``ShelterState`` (``registered``, ``registered_households``,
``unregistered``, ``household_needs``), folded from the households of
:mod:`schemas.people` (docs/people.md has the reconciliation rule).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, Strict, ValidationInfo, field_validator

from schemas.common import (
    INT_ONLY,
    UNIQUE_ITEMS,
    AreaId,
    ContractModel,
    Count,
    Name,
    Note,
    Reporter,
    ShelterId,
    UtcDatetime,
    Version,
    no_duplicates,
)
from schemas.envelope import Envelope
from schemas.hazards import Hazard

__all__ = [
    "AlertKind",
    "AreaHazardCapacity",
    "AreaStatusCounts",
    "ClosingStage",
    "HouseholdNeedCounts",
    "NeedLevel",
    "Needs",
    "OpeningStage",
    "Power",
    "PowerKind",
    "ShelterAreaSummary",
    "ShelterAreaSummaryPayload",
    "ShelterCapacityAlert",
    "ShelterCapacityAlertPayload",
    "ShelterClosed",
    "ShelterClosedPayload",
    "ShelterNeedsReported",
    "ShelterNeedsReportedPayload",
    "ShelterOccupancyReported",
    "ShelterOccupancyReportedPayload",
    "ShelterOpened",
    "ShelterOpenedPayload",
    "ShelterState",
    "ShelterStatus",
    "ShelterStatusChanged",
]

Hours = Annotated[float, Strict(), Field(ge=0.0, le=10_000.0, allow_inf_nan=False)]
"""A duration in hours, 0..10000."""
Total = Annotated[int, Strict(), Field(ge=0, le=10_000_000)]
"""A sum of head counts or capacities over several shelters, 0..10000000."""
Difference = Annotated[int, Strict(), Field(ge=-100_000, le=100_000)]
"""A signed difference between two head counts."""


class HouseholdNeedCounts(ContractModel):
    """Households checked in at a shelter, per need (``schemas.people.HouseholdNeed``)."""

    wheelchair: Count = 0
    """Households with someone using a wheelchair."""
    medical_care: Count = 0
    """Households with someone needing medical care."""
    infant: Count = 0
    """Households with an infant."""
    pet: Count = 0
    """Households with a pet."""
    language: Count = 0
    """Households speaking a language other than Japanese."""
    dietary: Count = 0
    """Households with a dietary requirement."""




class ShelterStatus(StrEnum):
    """Derived status of a shelter."""

    CLOSED = "closed"
    OPENING = "opening"
    OPEN = "open"
    CROWDED = "crowded"
    FULL = "full"
    CLOSING = "closing"


class NeedLevel(StrEnum):
    """Stock of a supply at a shelter."""

    OK = "ok"
    """Enough for now."""
    LOW = "low"
    """Running low: resupply needed."""
    OUT = "out"
    """None left."""


class Needs(ContractModel):
    """Supply levels at a shelter; null means not reported (keep the previous value)."""

    water: NeedLevel | None = None
    """Drinking water."""
    food: NeedLevel | None = None
    """Food."""
    medical: NeedLevel | None = None
    """Medical supplies and care."""
    sanitation: NeedLevel | None = None
    """Toilets and hygiene."""

    def is_empty(self) -> bool:
        """True when no supply level is given."""
        return all(v is None for v in (self.water, self.food, self.medical, self.sanitation))


class PowerKind(StrEnum):
    """Where a shelter's electricity comes from."""

    GRID = "grid"
    GENERATOR = "generator"
    NONE = "none"


class Power(ContractModel):
    """Power supply at a shelter."""

    kind: PowerKind
    """Grid, generator, or none."""
    fuel_hours_left: Hours | None = Field(default=None, validate_default=True)
    """Generator running time left on current fuel; required iff kind is generator."""

    @field_validator("fuel_hours_left")
    @classmethod
    def _fuel_iff_generator(cls, value: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("kind")
        if kind is None:  # kind itself was invalid; that error suffices
            return value
        if kind is PowerKind.GENERATOR and value is None:
            raise ValueError("fuel_hours_left is required when power kind is generator")
        if kind is not PowerKind.GENERATOR and value is not None:
            raise ValueError("fuel_hours_left is only allowed when power kind is generator")
        return value


# --- inputs from shelter staff ---------------------------------------------


class OpeningStage(StrEnum):
    """How far an opening has got."""

    OPENING = "opening"
    """Staff are on site preparing; not yet receiving evacuees."""
    OPEN = "open"
    """Receiving evacuees."""


class ShelterOpenedPayload(ContractModel):
    """Staff started opening a shelter, or finished opening it."""

    shelter_id: ShelterId
    """The shelter (region-pack id)."""
    stage: OpeningStage = OpeningStage.OPEN
    """``opening`` while preparing, ``open`` when receiving evacuees."""
    capacity: Count | None = None
    """Actual capacity if it differs from the region pack's planned figure."""
    reported_by: Reporter
    """Who reported it."""
    note: Note = ""
    """Remark from staff."""


class ShelterOpened(Envelope):
    """A shelter is opening or open."""

    type: Literal["shelter.opened"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: ShelterOpenedPayload


class ClosingStage(StrEnum):
    """How far a closing has got."""

    CLOSING = "closing"
    """Not admitting; evacuees still leaving or being moved."""
    CLOSED = "closed"
    """Closed."""


class ShelterClosedPayload(ContractModel):
    """Staff started closing a shelter, or closed it."""

    shelter_id: ShelterId
    """The shelter (region-pack id)."""
    stage: ClosingStage = ClosingStage.CLOSED
    """``closing`` while evacuees leave, ``closed`` when done."""
    reason: Note = ""
    """Why, e.g. hazard on site or no longer needed."""
    reported_by: Reporter
    """Who reported it."""


class ShelterClosed(Envelope):
    """A shelter is closing or closed."""

    type: Literal["shelter.closed"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: ShelterClosedPayload


class ShelterOccupancyReportedPayload(ContractModel):
    """A head count at a shelter (the envelope's occurred_at is the time of the count)."""

    shelter_id: ShelterId
    """The shelter (region-pack id)."""
    occupancy: Count
    """People currently sheltering."""
    households: Count | None = None
    """Households among them, if counted in this count."""
    special_care: Count | None = None
    """People needing special care among them (要配慮者: elderly, disabled, infants,
    pregnant, ill), if counted in this count."""
    capacity: Count | None = None
    """Actual capacity if it differs from the region pack's planned figure."""
    reported_by: Reporter
    """Who counted."""


class ShelterOccupancyReported(Envelope):
    """Shelter staff reported how many people are there."""

    type: Literal["shelter.occupancy_reported"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: ShelterOccupancyReportedPayload


class ShelterNeedsReportedPayload(ContractModel):
    """Supply levels and power at a shelter; omitted items keep their previous value."""

    shelter_id: ShelterId
    """The shelter (region-pack id)."""
    needs: Needs = Needs()
    """Supply levels reported now."""
    power: Power | None = Field(default=None, validate_default=True)
    """Power supply, if reported."""
    reported_by: Reporter
    """Who reported."""
    note: Note = ""
    """Remark from staff, e.g. what exactly is missing."""

    @field_validator("power")
    @classmethod
    def _something_reported(cls, value: Power | None, info: ValidationInfo) -> Power | None:
        needs = info.data.get("needs")
        if value is None and isinstance(needs, Needs) and needs.is_empty():
            raise ValueError("report at least one of needs.water/food/medical/sanitation or power")
        return value


class ShelterNeedsReported(Envelope):
    """Shelter staff reported supply levels or power."""

    type: Literal["shelter.needs_reported"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: ShelterNeedsReportedPayload


# --- derived by the shelter tracker -----------------------------------------


class ShelterState(ContractModel):
    """The tracker's full view of one shelter: the compacted topic keeps the latest."""

    shelter_id: ShelterId
    """The shelter (region-pack id)."""
    version: Version
    """Increases by one with every state change; consumers keep the highest."""
    status: ShelterStatus
    """Current status."""
    previous_status: ShelterStatus | None = None
    """Status before this change; null for the first state."""
    name: Name
    """Display name (from the region pack)."""
    occupancy: Count = 0
    """People sheltering: the last typed count moved by the check-ins and check-outs
    after it, or the people checked in when nobody typed a count."""
    households: Count | None = None
    """Households at the last count; null when that count did not include them."""
    registered: Count = 0
    """People in the households checked in now."""
    registered_households: Count = 0
    """Households checked in now."""
    unregistered: Difference | None = None
    """At the last typed count: the count minus the people checked in at its time
    (above 0: people not checked in; below 0: households gone without checking
    out); null when no count was typed, or while no household has checked in at
    the shelter (nothing to reconcile). HQ sees it beside the occupancy."""
    household_needs: HouseholdNeedCounts = HouseholdNeedCounts()
    """Households checked in now, per need (HQ and the shelter's staff only)."""
    special_care: Count | None = None
    """People needing special care at the last count; null when not counted."""
    capacity: Count | None = None
    """Capacity in use (reported, else planned); null when unknown."""
    needs: Needs = Needs()
    """Latest supply levels; null items were never reported."""
    power: Power | None = None
    """Latest power report."""
    hazards: Annotated[
        tuple[Hazard, ...],
        Field(max_length=7, json_schema_extra=UNIQUE_ITEMS),
        AfterValidator(no_duplicates),
    ] = ()
    """Hazards the shelter is designated for (from the region pack)."""
    last_reported_by: Reporter | None = None
    """Who sent the update that caused this change (HQ only: may hold a name)."""
    last_reported_at: UtcDatetime | None = None
    """Event time of that update."""


class ShelterStatusChanged(Envelope):
    """The shelter tracker derived a new state for a shelter."""

    type: Literal["shelter.status_changed"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: ShelterState


class AlertKind(StrEnum):
    """What a capacity alert is about."""

    CROWDED = "crowded"
    """Occupancy reached the crowded threshold (a share of capacity)."""
    FULL = "full"
    """Occupancy reached the full threshold (a share of capacity)."""
    FUEL_LOW = "fuel_low"
    """Generator fuel fell below the threshold (hours)."""
    CLEARED = "cleared"
    """An earlier alert no longer applies."""


class ShelterCapacityAlertPayload(ContractModel):
    """A threshold crossing at a shelter.

    ``threshold`` is a share of capacity (0..1) for crowded/full and for
    clearing either of them, and hours for fuel_low and its clearing.
    """

    shelter_id: ShelterId
    """The shelter (region-pack id)."""
    kind: AlertKind
    """What crossed its threshold."""
    cleared_kind: AlertKind | None = Field(default=None, validate_default=True)
    """For ``cleared``: which alert ended; null otherwise."""
    threshold: Annotated[float, Strict(), Field(ge=0.0, le=10_000.0, allow_inf_nan=False)]
    """The configured threshold that was crossed (share of capacity, or hours)."""
    occupancy: Count
    """Occupancy when the alert fired."""
    capacity: Count | None = None
    """Capacity in use when the alert fired."""
    fuel_hours_left: Hours | None = None
    """Generator fuel left, for fuel alerts."""

    @field_validator("cleared_kind")
    @classmethod
    def _cleared_names_kind(cls, value: AlertKind | None, info: ValidationInfo) -> AlertKind | None:
        kind = info.data.get("kind")
        if kind is None:
            return value
        if kind is AlertKind.CLEARED and (value is None or value is AlertKind.CLEARED):
            raise ValueError("cleared_kind must name the alert that ended: crowded, full, fuel_low")
        if kind is not AlertKind.CLEARED and value is not None:
            raise ValueError("cleared_kind is only allowed when kind is cleared")
        return value

    @field_validator("threshold")
    @classmethod
    def _ratio_for_occupancy(cls, value: float, info: ValidationInfo) -> float:
        # Catches "80" meant as 80 %: occupancy thresholds are shares of capacity.
        kind = info.data.get("cleared_kind") or info.data.get("kind")
        if kind in (AlertKind.CROWDED, AlertKind.FULL) and value > 1.0:
            raise ValueError("an occupancy threshold is a share of capacity, 0..1")
        return value


class ShelterCapacityAlert(Envelope):
    """A shelter crossed (or cleared) a crowding, full or fuel threshold."""

    type: Literal["shelter.capacity_alert"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: ShelterCapacityAlertPayload


# --- area aggregates, derived by the shelter tracker --------------------------


class AreaStatusCounts(ContractModel):
    """How many of an area's shelters are in each status (never-reported ones are closed)."""

    closed: Count = 0
    """Closed (including shelters never reported)."""
    opening: Count = 0
    """Being prepared, not yet receiving evacuees."""
    open: Count = 0
    """Receiving evacuees, below the crowded threshold."""
    crowded: Count = 0
    """Receiving evacuees, at or above the crowded threshold."""
    full: Count = 0
    """At or above capacity."""
    closing: Count = 0
    """Not admitting; evacuees leaving."""


class AreaHazardCapacity(ContractModel):
    """Open shelters and free capacity in an area for one designated hazard."""

    hazard: Hazard
    """The hazard the counted shelters are designated for."""
    shelters_open: Count
    """Shelters designated for the hazard that are open, crowded or full."""
    free_capacity: Total
    """Free places in those of them that are open or crowded (full ones admit no one)."""


def _one_entry_per_hazard(
    entries: tuple[AreaHazardCapacity, ...],
) -> tuple[AreaHazardCapacity, ...]:
    hazards = [entry.hazard for entry in entries]
    if len(set(hazards)) != len(hazards):
        raise ValueError("each hazard may appear only once")
    return entries


class ShelterAreaSummaryPayload(ContractModel):
    """The shelters of one area (district) at a glance; the compacted topic keeps the latest."""

    area_id: AreaId
    """The area (region-pack district id)."""
    version: Version
    """Increases by one with every change of this summary; consumers keep the highest."""
    shelters: AreaStatusCounts
    """The area's shelters (every one in the region pack) by status."""
    shelters_open: Count
    """Shelters open to evacuees: open, crowded or full."""
    capacity: Total
    """Capacity of the open, crowded and full shelters."""
    occupancy: Total
    """People at the area's shelters, whatever their status."""
    free_capacity: Total
    """Free places in open and crowded shelters (capacity minus occupancy, never below 0)."""
    by_hazard: Annotated[
        tuple[AreaHazardCapacity, ...],
        Field(max_length=7),
        AfterValidator(_one_entry_per_hazard),
    ] = ()
    """Per hazard some shelter of the area is designated for: open shelters, free capacity."""


class ShelterAreaSummary(Envelope):
    """The shelter tracker's summary of one area's shelters changed."""

    type: Literal["shelter.area_summary"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: ShelterAreaSummaryPayload
