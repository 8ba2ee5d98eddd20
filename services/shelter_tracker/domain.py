"""The shelter tracker's rules: a pure state machine per shelter, and area aggregates.

Nothing here does I/O or reads a clock: rules use event time (``occurred_at``)
only, the caller passes ``recorded_at`` for the events it will publish, and
every derived event id comes from :func:`~schemas.envelope.derive_id` over the
input event's id, so replaying the same input yields the same events.

Per shelter, :func:`decide` folds one update into the tracked state:

    (Tracked, update) -> Decision(outcome, Tracked, events to emit, reason)

- a duplicate ``event_id`` or an update older than the last applied one is
  ignored (outcome ``duplicate`` / ``stale``, with the reason);
- a household's check-in or check-out (:mod:`schemas.people`) is ordered per
  household, never against the shelter's other updates: it is a duplicate only
  if that household has its event id, and the occupancy it moves is derived by
  :mod:`services.shelter_tracker.households` from event times alone;
- a count that is negative, over a sane bound, or inconsistent is rejected
  (outcome ``rejected``, with the reason naming the field); the adapter
  dead-letters it;
- otherwise the new state is derived; if it differs from the current one its
  version increases by one and ``shelter.status_changed`` is emitted, plus a
  ``shelter.capacity_alert`` for every threshold crossed (with hysteresis).

Per area, :func:`services.shelter_tracker.areas.decide_area` folds the shelters'
published states into one ``shelter.area_summary``. docs/shelter-tracker.md has
the transition table and the reasons for each decision.

Why one file over ~500 lines: the thresholds, the transitions, the checks and the
alerts are the steps of one fold over one ``Tracked`` value, read together when
a rule changes; the households' own rules are apart in
:mod:`services.shelter_tracker.households`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Self, TypeAlias
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.envelope import derive_id, new_event
from schemas.hazards import Hazard
from schemas.people import HouseholdCheckedIn, HouseholdCheckedOut
from schemas.region import Region
from schemas.shelters import (
    AlertKind,
    ClosingStage,
    Needs,
    OpeningStage,
    PowerKind,
    ShelterCapacityAlert,
    ShelterCapacityAlertPayload,
    ShelterClosed,
    ShelterNeedsReported,
    ShelterOccupancyReported,
    ShelterOpened,
    ShelterState,
    ShelterStatus,
    ShelterStatusChanged,
)
from services.shelter_tracker.errors import ShelterUpdateRejected
from services.shelter_tracker.households import (
    Household,
    HouseholdEvent,
    TypedCount,
    by_code,
    derive,
    mark_of,
    with_closing,
    with_mark,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "SOURCE",
    "Decision",
    "Outcome",
    "ShelterPackSection",
    "ShelterSite",
    "ShelterUpdate",
    "Thresholds",
    "Tracked",
    "decide",
    "shelter_sites",
]

SOURCE: Final = "shelter-tracker"
"""The ``source`` of every event the tracker emits."""

ShelterUpdate: TypeAlias = (
    ShelterOpened | ShelterClosed | ShelterOccupancyReported | ShelterNeedsReported
    | HouseholdCheckedIn | HouseholdCheckedOut
)
"""The events on ``shelters.updates``."""

ADMITTING: Final = frozenset({ShelterStatus.OPEN, ShelterStatus.CROWDED, ShelterStatus.FULL})
"""Statuses of a shelter that is open to evacuees (full ones are open but admit no one)."""

# How many event ids at the newest event time are remembered for deduplication.
# Older duplicates are caught by the stale rule (they are older than the state);
# a burst of more than this many updates with one identical timestamp is not a
# real shelter's traffic.
_IDS_AT_LAST_LIMIT: Final = 256


# --- configuration: thresholds ----------------------------------------------------------


class Thresholds(BaseModel):
    """Capacity and fuel thresholds, with the hysteresis margins that stop flapping.

    Occupancy thresholds are whole percentages of capacity (compared in integer
    arithmetic, so 80 % of 650 is exactly 520); an alert is raised when the share
    reaches its threshold and cleared only when it falls below the lower clearing
    threshold. Fuel is in hours of generator running time.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    crowded_percent: Annotated[int, Field(ge=1, le=1000)] = 80
    """Crowded at or above this share of capacity."""
    crowded_clear_percent: Annotated[int, Field(ge=0, le=1000)] = 75
    """A crowded shelter becomes open again only below this share."""
    full_percent: Annotated[int, Field(ge=1, le=1000)] = 100
    """Full at or above this share of capacity."""
    full_clear_percent: Annotated[int, Field(ge=0, le=1000)] = 95
    """A full shelter becomes crowded (or open) again only below this share."""
    fuel_low_hours: Annotated[float, Field(gt=0, le=1000)] = 6.0
    """Generator fuel alert below this many hours."""
    fuel_clear_hours: Annotated[float, Field(gt=0, le=1000)] = 8.0
    """The fuel alert clears only above this many hours."""
    max_occupancy_factor: Annotated[int, Field(ge=1, le=100)] = 3
    """A count above this multiple of capacity is refused as implausible (an extra digit)."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        # Hysteresis needs each clearing threshold below its raising one; the
        # crowded band below the full band keeps "full implies crowded" true.
        if not self.crowded_clear_percent < self.crowded_percent:
            raise ValueError("crowded_clear_percent must be below crowded_percent")
        if not self.full_clear_percent < self.full_percent:
            raise ValueError("full_clear_percent must be below full_percent")
        if not self.crowded_percent <= self.full_clear_percent:
            raise ValueError("crowded_percent must not exceed full_clear_percent")
        if not self.fuel_low_hours < self.fuel_clear_hours:
            raise ValueError("fuel_low_hours must be below fuel_clear_hours")
        return self


DEFAULT_THRESHOLDS: Final = Thresholds()
"""Crowded ≥ 80 % (clears < 75 %), full ≥ 100 % (clears < 95 %), fuel < 6 h (clears > 8 h)."""


class ShelterPackSection(BaseModel):
    """The region pack's ``shelters.toml``: the tracker's thresholds for that region."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = 1
    thresholds: Thresholds = DEFAULT_THRESHOLDS


Hazards = tuple[Hazard, ...]


@dataclass(frozen=True)
class ShelterSite:
    """What the region pack says about one shelter."""

    shelter_id: str
    name: str
    area_id: str
    planned_capacity: int | None
    """The pack's capacity; None when the pack gives 0 (unknown)."""
    hazards: Hazards
    """Hazards it is designated for, in :class:`Hazard` order."""


HAZARD_ORDER: Final = {hazard: index for index, hazard in enumerate(Hazard)}
"""The order hazards are listed in (the national data's column order)."""


def _sorted_hazards(hazards: Iterable[Hazard]) -> Hazards:
    return tuple(sorted(set(hazards), key=HAZARD_ORDER.__getitem__))


def shelter_sites(region: Region) -> dict[str, ShelterSite]:
    """Every site people stay at, by id, named in the region's default language: the
    designated shelters (指定避難所) and the stranded-commuter facilities (一時滞在施設).

    Evacuation sites that are neither are left out, as intake refuses them
    (:attr:`~schemas.region.model.Site.takes_people`, the one predicate both use).
    """
    names = region.names(region.default_language)
    return {
        site.id: ShelterSite(
            shelter_id=site.id,
            name=names[site.id],
            area_id=site.district_id,
            planned_capacity=site.capacity or None,
            hazards=_sorted_hazards(site.hazards),
        )
        for site in region.sites
        if site.takes_people
    }


# --- the per-shelter state machine ----------------------------------------------------


class Tracked(BaseModel):
    """What the tracker keeps per shelter (its table value); ``state`` is what it publishes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state: ShelterState | None = None
    """The last published state; None before the first update."""
    alerts: tuple[AlertKind, ...] = ()
    """Alerts raised and not yet cleared (the hysteresis latches), in a fixed order."""
    last_occurred_at: datetime | None = None
    """Event time of the newest applied update; older updates are stale."""
    ids_at_last: tuple[UUID, ...] = ()
    """Ids of the updates applied at ``last_occurred_at`` (deduplication)."""
    households: tuple[Household, ...] = ()
    """Every household code seen at this shelter with its check-ins and check-outs, by code."""
    count: TypedCount | None = None
    """The last typed head count (a closing counts as zero); None before the first."""
    closings: tuple[datetime, ...] = ()
    """Event times of the closings (stage closed) applied: each checks everyone out."""

    def to_bytes(self) -> bytes:
        """JSON for the table."""
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Tracked:
        """The table value back (a fresh shelter for None)."""
        return cls() if raw is None else cls.model_validate_json(raw)


class Outcome(StrEnum):
    """What :func:`decide` did with an update."""

    APPLIED = "applied"
    """The state changed: a new version (and maybe alerts) to publish."""
    UNCHANGED = "unchanged"
    """Applied, but the state is the same (a repeat at the same event time)."""
    DUPLICATE = "duplicate"
    """This event id was applied already: no effect."""
    STALE = "stale"
    """Older than the state's last update: no effect."""
    REJECTED = "rejected"
    """Its values break a rule: no effect; the adapter dead-letters it."""


ShelterOutput: TypeAlias = ShelterStatusChanged | ShelterCapacityAlert


@dataclass(frozen=True)
class Decision:
    """The result of folding one update into a shelter's tracked state."""

    outcome: Outcome
    tracked: Tracked
    """The new tracked state (the old one unless applied or unchanged)."""
    emit: tuple[ShelterOutput, ...] = ()
    """Events to publish, in order: the status change first, then alerts."""
    reason: str = ""
    """Why it was ignored or rejected."""
    rejection: ShelterUpdateRejected | None = None
    """The broken rule, for ``rejected``."""

    @property
    def state_changed(self) -> ShelterStatusChanged | None:
        """The ``shelter.status_changed`` to publish, if any."""
        for event in self.emit:
            if isinstance(event, ShelterStatusChanged):
                return event
        return None


def decide(
    tracked: Tracked,
    event: ShelterUpdate,
    site: ShelterSite,
    *,
    recorded_at: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> Decision:
    """Fold ``event`` into ``tracked``: the new state and the events to emit."""
    if event.payload.shelter_id != site.shelter_id:
        raise ValueError(f"update for {event.payload.shelter_id!r} applied to {site.shelter_id!r}")
    if isinstance(event, HouseholdCheckedIn | HouseholdCheckedOut):
        return _decide_household(tracked, event, site, recorded_at, thresholds)
    if event.event_id in tracked.ids_at_last:
        return Decision(Outcome.DUPLICATE, tracked,
                        reason=f"event {event.event_id} was applied already")
    last = tracked.last_occurred_at
    if last is not None and event.occurred_at < last:
        return Decision(
            Outcome.STALE, tracked,
            reason=f"occurred_at {event.occurred_at.isoformat()} is older than the state's "
                   f"last update at {last.isoformat()}",
        )
    current = tracked.state or _initial_state(site)
    count, closings = tracked.count, tracked.closings
    if isinstance(event, ShelterOccupancyReported):
        count = TypedCount(occupancy=event.payload.occupancy, at=event.occurred_at)
    elif isinstance(event, ShelterClosed) and event.payload.stage is ClosingStage.CLOSED:
        # Closed means everyone has left or been moved: a count of zero, and every
        # household checked out at its time.
        count = TypedCount(occupancy=0, at=event.occurred_at)
        closings = with_closing(closings, event.occurred_at)
    try:
        _check_update(event)
        candidate = _apply(current, event).model_copy(
            update=derive(tracked.households, count, closings).fields())
        _check_counts(candidate, event, thresholds)
    except ShelterUpdateRejected as rejected:
        return Decision(Outcome.REJECTED, tracked, reason=str(rejected), rejection=rejected)

    seen = (*tracked.ids_at_last, event.event_id) if event.occurred_at == last \
        else (event.event_id,)
    bookkeeping = {"last_occurred_at": event.occurred_at,
                   "ids_at_last": seen[-_IDS_AT_LAST_LIMIT:],
                   "count": count, "closings": closings}
    return _conclude(tracked, candidate, event, bookkeeping, recorded_at, thresholds)


def _decide_household(
    tracked: Tracked,
    event: HouseholdEvent,
    site: ShelterSite,
    recorded_at: datetime,
    thresholds: Thresholds,
) -> Decision:
    """Fold a check-in or check-out: ordered per household, never stale against the shelter."""
    code = event.payload.household_code
    households = dict(by_code(tracked.households))
    household = households.get(code)
    if household is not None and household.knows(event.event_id):
        return Decision(Outcome.DUPLICATE, tracked,
                        reason=f"event {event.event_id} was applied to household {code} already")
    households[code] = with_mark(household, code, mark_of(event))
    kept = tuple(households[key] for key in sorted(households))
    current = tracked.state or _initial_state(site)
    update: dict[str, object] = dict(derive(kept, tracked.count, tracked.closings).fields())
    # Who reported last is the newest report by event time, so that a check-in made
    # offline an hour ago does not pass for the shelter's latest news.
    if current.last_reported_at is None or event.occurred_at >= current.last_reported_at:
        update.update(last_reported_by=event.payload.reported_by,
                      last_reported_at=event.occurred_at)
    candidate = current.model_copy(update=update)
    # last_occurred_at and ids_at_last are the shelter's own updates' ordering:
    # a household event moves neither.
    return _conclude(tracked, candidate, event, {"households": kept}, recorded_at, thresholds)


def _conclude(
    tracked: Tracked,
    candidate: ShelterState,
    event: ShelterUpdate,
    bookkeeping: dict[str, object],
    recorded_at: datetime,
    thresholds: Thresholds,
) -> Decision:
    """Thresholds, the new version and the events to emit for an accepted update."""
    alerts = _latches(tracked.alerts, candidate, thresholds)
    if candidate.status in ADMITTING:
        candidate = candidate.model_copy(update={"status": _admitting_status(alerts)})
    if tracked.state is not None and _same(candidate, tracked.state):
        return Decision(Outcome.UNCHANGED, tracked.model_copy(update=bookkeeping))

    version = (tracked.state.version if tracked.state is not None else 0) + 1
    state = ShelterState.model_validate({
        **candidate.model_dump(),
        "version": version,
        "previous_status": tracked.state.status if tracked.state is not None else None,
    })
    changed = new_event(
        ShelterStatusChanged, state, occurred_at=event.occurred_at, source=SOURCE, cause=event,
        event_id=derive_id(SOURCE, event.event_id, "status_changed"), recorded_at=recorded_at,
    )
    emitted = _alerts(tracked.alerts, alerts, state, event, thresholds, recorded_at)
    new_tracked = tracked.model_copy(update={"state": state, "alerts": alerts, **bookkeeping})
    return Decision(Outcome.APPLIED, new_tracked, (changed, *emitted))


def _initial_state(site: ShelterSite) -> ShelterState:
    # Never published: the baseline the first update is applied to. Version 1 is
    # a placeholder; the first published state gets version 1 of its own.
    return ShelterState(
        shelter_id=site.shelter_id, version=1, status=ShelterStatus.CLOSED, name=site.name,
        capacity=site.planned_capacity, hazards=site.hazards,
    )


def _same(a: ShelterState, b: ShelterState) -> bool:
    ignore = {"version", "previous_status"}
    return a.model_dump(exclude=ignore) == b.model_dump(exclude=ignore)


def _apply(current: ShelterState, event: ShelterUpdate) -> ShelterState:
    """The state after ``event``, before thresholds refine open/crowded/full."""
    status = current.status
    update: dict[str, object] = {}
    # A check-in may be newer than the shelter's own updates (it does not move
    # their ordering): who reported last stays the newest report by event time.
    if current.last_reported_at is None or event.occurred_at >= current.last_reported_at:
        update.update(last_reported_by=event.payload.reported_by,
                      last_reported_at=event.occurred_at)
    if isinstance(event, ShelterOpened):
        if event.payload.stage is OpeningStage.OPEN:
            status = ShelterStatus.OPEN  # refined from the counts below
        elif status not in ADMITTING:
            # "opening" never demotes a shelter that is admitting people: residents
            # have been told it is open; to stop admitting, staff close it.
            status = ShelterStatus.OPENING
        if event.payload.capacity is not None:
            update["capacity"] = event.payload.capacity
    elif isinstance(event, ShelterClosed):
        if event.payload.stage is ClosingStage.CLOSED:
            status = ShelterStatus.CLOSED
            # Closed means everyone has left or been moved: the counts go to zero
            # (decide also checks every household out).
            update.update(households=0, special_care=0)
        elif status is not ShelterStatus.CLOSED:
            status = ShelterStatus.CLOSING  # a closed shelter has nothing left to close
    elif isinstance(event, ShelterOccupancyReported):
        # A head count is a snapshot: parts it did not count are unknown, not
        # carried over from an older count they could contradict. The status is
        # kept, so a count at a closed shelter is recorded and it stays closed.
        # The occupancy is derived from it and the check-ins (decide).
        update.update(households=event.payload.households,
                      special_care=event.payload.special_care)
        if event.payload.capacity is not None:
            update["capacity"] = event.payload.capacity
    elif isinstance(event, ShelterNeedsReported):
        update["needs"] = _merge_needs(current.needs, event.payload.needs)
        if event.payload.power is not None:
            update["power"] = event.payload.power
    update["status"] = status
    # model_copy skips validation; _check_counts and the final model_validate
    # of the published state catch anything out of range.
    return current.model_copy(update=update)


def _merge_needs(old: Needs, new: Needs) -> Needs:
    # A needs report is partial: a null level means "unchanged".
    return Needs(
        water=new.water if new.water is not None else old.water,
        food=new.food if new.food is not None else old.food,
        medical=new.medical if new.medical is not None else old.medical,
        sanitation=new.sanitation if new.sanitation is not None else old.sanitation,
    )


def _check_update(event: ShelterUpdate) -> None:
    """Refuse a typed count or capacity that is negative or contradicts itself."""
    # The contract already bounds every count to 0..100000 when decoding; these
    # checks also hold for events built in code. They read the update alone, so
    # whether it is refused never depends on which check-ins arrived before it.
    reported_capacity = getattr(event.payload, "capacity", None)
    if reported_capacity is not None and reported_capacity < 1:
        raise ShelterUpdateRejected(
            "payload.capacity", f"{reported_capacity} is not a capacity; a shelter that can "
                                "take no one should be reported closing")
    if not isinstance(event, ShelterOccupancyReported):
        return
    payload = event.payload
    for name in ("occupancy", "households", "special_care"):
        value = getattr(payload, name)
        if value is not None and value < 0:
            raise ShelterUpdateRejected(f"payload.{name}", f"{value} is negative")
    for name, label in (("households", "households"), ("special_care", "people needing care")):
        value = getattr(payload, name)
        if value is not None and value > payload.occupancy:
            raise ShelterUpdateRejected(
                f"payload.{name}", f"{value} {label} is more than the "
                                   f"{payload.occupancy} people counted")


def _check_counts(state: ShelterState, event: ShelterUpdate, thresholds: Thresholds) -> None:
    """Refuse a typed count, or a capacity, that makes the occupancy implausibly high."""
    capacity = state.capacity
    bound = thresholds.max_occupancy_factor
    if isinstance(event, ShelterOccupancyReported):
        # The typed figure, not the occupancy derived with the check-ins: an extra
        # digit is a typo of the count itself.
        occupancy, field = event.payload.occupancy, "payload.occupancy"
    elif getattr(event.payload, "capacity", None) is not None:
        occupancy, field = state.occupancy, "payload.capacity"
    else:
        return  # nothing typed: the crowd check-ins make is never refused (they are people)
    if capacity and occupancy > bound * capacity:
        raise ShelterUpdateRejected(
            field, f"occupancy {occupancy} is more than {bound} times the capacity "
                   f"{capacity}; check the count for an extra digit")


def _at_least(occupancy: int, capacity: int, percent: int) -> bool:
    return occupancy * 100 >= capacity * percent


def _latches(
    active: Sequence[AlertKind], state: ShelterState, thresholds: Thresholds
) -> tuple[AlertKind, ...]:
    """The alerts that hold after this update: raise at a threshold, clear below its margin."""
    if state.status is ShelterStatus.CLOSED:
        return ()  # closing a shelter ends its alerts
    was = set(active)
    now: set[AlertKind] = set()
    capacity, occupancy = state.capacity, state.occupancy
    if capacity:  # unknown capacity: no share, no occupancy alerts
        for kind, raise_at, clear_below in (
            (AlertKind.CROWDED, thresholds.crowded_percent, thresholds.crowded_clear_percent),
            (AlertKind.FULL, thresholds.full_percent, thresholds.full_clear_percent),
        ):
            limit = clear_below if kind in was else raise_at
            if _at_least(occupancy, capacity, limit):
                now.add(kind)
    power = state.power
    if power is not None and power.kind is PowerKind.GENERATOR \
            and power.fuel_hours_left is not None:
        hours = power.fuel_hours_left
        low = hours <= thresholds.fuel_clear_hours if AlertKind.FUEL_LOW in was \
            else hours < thresholds.fuel_low_hours
        if low:
            now.add(AlertKind.FUEL_LOW)
    return tuple(kind for kind in _ALERT_ORDER if kind in now)


_ALERT_ORDER: Final = (AlertKind.CROWDED, AlertKind.FULL, AlertKind.FUEL_LOW)


def _admitting_status(alerts: Sequence[AlertKind]) -> ShelterStatus:
    if AlertKind.FULL in alerts:
        return ShelterStatus.FULL
    if AlertKind.CROWDED in alerts:
        return ShelterStatus.CROWDED
    return ShelterStatus.OPEN


def _alerts(
    before: Sequence[AlertKind],
    after: Sequence[AlertKind],
    state: ShelterState,
    cause: ShelterUpdate,
    thresholds: Thresholds,
    recorded_at: datetime,
) -> list[ShelterCapacityAlert]:
    """One alert per latch that changed: clearings first (highest first), then raisings."""
    fuel = state.power.fuel_hours_left if state.power is not None else None
    raised_at = {AlertKind.CROWDED: thresholds.crowded_percent / 100,
                 AlertKind.FULL: thresholds.full_percent / 100,
                 AlertKind.FUEL_LOW: thresholds.fuel_low_hours}
    cleared_at = {AlertKind.CROWDED: thresholds.crowded_clear_percent / 100,
                  AlertKind.FULL: thresholds.full_clear_percent / 100,
                  AlertKind.FUEL_LOW: thresholds.fuel_clear_hours}
    changes: list[tuple[AlertKind, AlertKind | None, float]] = [
        (AlertKind.CLEARED, kind, cleared_at[kind])
               for kind in reversed(_ALERT_ORDER) if kind in before and kind not in after]
    changes += [(kind, None, raised_at[kind])
                for kind in _ALERT_ORDER if kind in after and kind not in before]
    out = []
    for kind, cleared, threshold in changes:
        payload = ShelterCapacityAlertPayload(
            shelter_id=state.shelter_id, kind=kind, cleared_kind=cleared,
            threshold=float(threshold), occupancy=state.occupancy, capacity=state.capacity,
            fuel_hours_left=fuel if AlertKind.FUEL_LOW in (kind, cleared) else None,
        )
        out.append(new_event(
            ShelterCapacityAlert, payload, occurred_at=cause.occurred_at, source=SOURCE,
            cause=cause, recorded_at=recorded_at,
            event_id=derive_id(SOURCE, cause.event_id, "alert", kind.value,
                               cleared.value if cleared else ""),
        ))
    return out
