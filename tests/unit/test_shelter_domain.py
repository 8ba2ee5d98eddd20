"""The shelter tracker's pure rules: transitions, hysteresis, fuel, ordering, bounds, areas."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.envelope import new_event
from schemas.errors import InvalidEvent
from schemas.events import decode_event, encode_event
from schemas.hazards import Hazard
from schemas.region import load_pack_section, load_region
from schemas.shelters import (
    AlertKind,
    NeedLevel,
    PowerKind,
    ShelterCapacityAlert,
    ShelterClosed,
    ShelterNeedsReported,
    ShelterOccupancyReported,
    ShelterOpened,
    ShelterStatus,
    ShelterStatusChanged,
)
from services.shelter_tracker.areas import AreaTracked, decide_area, summarize_area
from services.shelter_tracker.domain import (
    DEFAULT_THRESHOLDS,
    Decision,
    Outcome,
    ShelterPackSection,
    ShelterSite,
    ShelterUpdate,
    Thresholds,
    Tracked,
    decide,
    shelter_sites,
)
from services.shelter_tracker.errors import ShelterNotRegistered

REGION = load_region("testville")
SITES = shelter_sites(REGION)
SCHOOL = SITES["tv-school"]  # riverside, capacity 200, earthquake + large_fire
GYM = SITES["tv-gym"]  # hilltop, capacity 80, no designated hazards
T0 = datetime(2025, 8, 21, 5, 0, tzinfo=UTC)
RECORDED = T0 + timedelta(days=1)
TEAM = {"team": "Testville School shelter team", "name": "A. Person"}


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def _event(cls: type[Any], payload: dict[str, Any], minute: float, *,
           exercise: bool = False) -> Any:
    return new_event(cls, {"reported_by": TEAM, **payload}, occurred_at=at(minute),
                     source="intake", recorded_at=at(minute), exercise=exercise)


def opened(minute: float, stage: str = "open", capacity: int | None = None,
           shelter: str = "tv-school") -> ShelterOpened:
    payload: dict[str, Any] = {"shelter_id": shelter, "stage": stage}
    if capacity is not None:
        payload["capacity"] = capacity
    result: ShelterOpened = _event(ShelterOpened, payload, minute)
    return result


def closed(minute: float, stage: str = "closed", shelter: str = "tv-school") -> ShelterClosed:
    result: ShelterClosed = _event(ShelterClosed, {"shelter_id": shelter, "stage": stage},
                                   minute)
    return result


def count(minute: float, occupancy: int, *, capacity: int | None = None,
          households: int | None = None, special_care: int | None = None,
          shelter: str = "tv-school") -> ShelterOccupancyReported:
    payload: dict[str, Any] = {"shelter_id": shelter, "occupancy": occupancy,
                               "capacity": capacity, "households": households,
                               "special_care": special_care}
    result: ShelterOccupancyReported = _event(ShelterOccupancyReported, payload, minute)
    return result


def needs(minute: float, *, fuel: float | None = None, power: str | None = None,
          shelter: str = "tv-school", **levels: str) -> ShelterNeedsReported:
    payload: dict[str, Any] = {"shelter_id": shelter, "needs": levels}
    if fuel is not None:
        payload["power"] = {"kind": "generator", "fuel_hours_left": fuel}
    elif power is not None:
        payload["power"] = {"kind": power}
    result: ShelterNeedsReported = _event(ShelterNeedsReported, payload, minute)
    return result


def step(tracked: Tracked, event: ShelterUpdate, site: ShelterSite = SCHOOL,
         thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Decision:
    return decide(tracked, event, site, recorded_at=RECORDED, thresholds=thresholds)


def run(events: Iterable[ShelterUpdate], tracked: Tracked | None = None,
        site: ShelterSite = SCHOOL) -> tuple[Tracked, list[Decision]]:
    """Fold events in order; return the final tracked state and every decision."""
    current = tracked or Tracked()
    decisions = []
    for event in events:
        decision = step(current, event, site)
        decisions.append(decision)
        current = decision.tracked
    return current, decisions


def alerts_of(decisions: Sequence[Decision]) -> list[tuple[str, str | None]]:
    """(kind, cleared_kind) of every alert emitted, in order."""
    return [(e.payload.kind.value, e.payload.cleared_kind.value if e.payload.cleared_kind
             else None)
            for d in decisions for e in d.emit if isinstance(e, ShelterCapacityAlert)]


def status(tracked: Tracked) -> ShelterStatus:
    assert tracked.state is not None
    return tracked.state.status


# --- the transition table ------------------------------------------------------

START: dict[str, list[ShelterUpdate]] = {
    "closed": [closed(0)],
    "opening": [opened(0, "opening")],
    "open": [opened(0)],
    "crowded": [opened(0), count(1, 170)],  # 85 %
    "full": [opened(0), count(1, 200)],  # 100 %
    "closing": [opened(0), count(1, 40), closed(2, "closing")],
}
EVENTS: dict[str, Callable[[], ShelterUpdate]] = {
    "open(opening)": lambda: opened(10, "opening"),
    "open(open)": lambda: opened(10),
    "close(closing)": lambda: closed(10, "closing"),
    "close(closed)": lambda: closed(10),
    "count 20": lambda: count(10, 20),
    "needs": lambda: needs(10, water="low"),
}
# from status -> (event -> new status); docs/shelter-tracker.md has the same table.
TABLE = {
    "closed": ["opening", "open", "closed", "closed", "closed", "closed"],
    "opening": ["opening", "open", "closing", "closed", "opening", "opening"],
    "open": ["open", "open", "closing", "closed", "open", "open"],
    "crowded": ["crowded", "crowded", "closing", "closed", "open", "crowded"],
    "full": ["full", "full", "closing", "closed", "open", "full"],
    "closing": ["opening", "open", "closing", "closed", "closing", "closing"],
}
CASES = [(start, name, TABLE[start][i]) for start in TABLE for i, name in enumerate(EVENTS)]


@pytest.mark.parametrize(("start", "event_name", "expected"), CASES)
def test_every_transition(start: str, event_name: str, expected: str) -> None:
    """Each (status, update) pair leads to the status in the documented transition table."""
    tracked, _ = run(START[start])
    assert status(tracked) == start
    decision = step(tracked, EVENTS[event_name]())
    assert decision.outcome is Outcome.APPLIED
    assert status(decision.tracked) == expected
    assert decision.tracked.state is not None
    assert decision.tracked.state.previous_status == start


def test_the_first_update_publishes_version_one_with_region_data() -> None:
    """The first state has version 1, no previous status, the pack's name, capacity, hazards."""
    decision = step(Tracked(), opened(0))
    changed = decision.state_changed
    assert changed is not None and decision.emit == (changed,)
    state = changed.payload
    assert (state.version, state.status, state.previous_status) == (1, "open", None)
    assert state.name == "Testville School"  # the pack's default language is English
    assert state.capacity == 200
    assert state.hazards == (Hazard.EARTHQUAKE, Hazard.LARGE_FIRE)
    assert state.last_reported_at == at(0) and state.last_reported_by is not None
    assert changed.occurred_at == at(0) and changed.recorded_at == RECORDED
    assert changed.source == "shelter-tracker"


def test_outputs_are_chained_to_and_derived_from_their_cause() -> None:
    """Outputs name the update as cause, inherit its drill flag, and replay to the same ids."""
    update = new_event(ShelterOpened, {"shelter_id": "tv-school", "reported_by": TEAM},
                       occurred_at=at(0), source="intake", recorded_at=at(0), exercise=True)
    first, again = step(Tracked(), update), step(Tracked(), update)
    assert first.emit == again.emit
    changed = first.state_changed
    assert changed is not None
    assert changed.causation_id == update.event_id
    assert changed.correlation_id == update.correlation_id
    assert changed.exercise is True
    assert decode_event(encode_event(changed)) == changed


def test_version_increases_by_one_per_change() -> None:
    """Every applied change publishes the next version."""
    _, decisions = run([opened(0), count(1, 10), count(2, 20), needs(3, food="low")])
    versions = [d.state_changed.payload.version for d in decisions if d.state_changed]
    assert versions == [1, 2, 3, 4]


def test_opening_never_demotes_an_admitting_shelter() -> None:
    """A later 'opening' report leaves an open shelter open, but still applies its capacity."""
    tracked, _ = run([opened(0), count(1, 100)])
    decision = step(tracked, opened(2, "opening", capacity=120))
    assert status(decision.tracked) == "crowded"  # 100 of 120 = 83 %
    assert decision.tracked.state is not None and decision.tracked.state.capacity == 120


# --- decisions: closed shelters ------------------------------------------------


def test_occupancy_at_a_closed_shelter_is_recorded_and_it_stays_closed() -> None:
    """A count at a closed shelter is kept and published, without opening it or alerting."""
    tracked, _ = run([closed(0)])
    decision = step(tracked, count(1, 250, households=90))
    assert decision.outcome is Outcome.APPLIED
    state = decision.tracked.state
    assert state is not None
    assert (state.status, state.occupancy, state.households, state.version) == \
        ("closed", 250, 90, 2)
    assert alerts_of([decision]) == []  # a closed shelter raises no capacity alerts
    assert decision.tracked.alerts == ()


def test_occupancy_before_any_opening_is_recorded_as_closed() -> None:
    """People counted at a never-opened shelter: version 1, status closed (self-evacuation)."""
    decision = step(Tracked(), count(0, 12))
    state = decision.tracked.state
    assert state is not None and (state.status, state.occupancy, state.version) == \
        ("closed", 12, 1)


def test_closing_resets_the_counts_and_clears_every_alert() -> None:
    """closed(closed) sets the counts to zero and clears crowded, full and fuel alerts."""
    tracked, _ = run([opened(0), count(1, 200, households=70, special_care=9),
                      needs(2, fuel=3.0)])
    assert set(tracked.alerts) == {AlertKind.CROWDED, AlertKind.FULL, AlertKind.FUEL_LOW}
    decision = step(tracked, closed(3))
    state = decision.tracked.state
    assert state is not None
    assert (state.occupancy, state.households, state.special_care) == (0, 0, 0)
    assert alerts_of([decision]) == [("cleared", "fuel_low"), ("cleared", "full"),
                                      ("cleared", "crowded")]
    assert decision.tracked.alerts == ()


def test_reopening_raises_a_still_low_fuel_alert_again() -> None:
    """After a close cleared it, reopening with low generator fuel alerts once more."""
    tracked, _ = run([opened(0), needs(1, fuel=3.0), closed(2)])
    decision = step(tracked, opened(3))
    assert alerts_of([decision]) == [("fuel_low", None)]


# --- ordering and duplicates ---------------------------------------------------


def test_an_update_older_than_the_state_is_ignored_and_says_why() -> None:
    """An update with an earlier occurred_at has no effect; the reason names both times."""
    tracked, _ = run([opened(0), count(10, 50)])
    decision = step(tracked, count(5, 190))
    assert decision.outcome is Outcome.STALE
    assert decision.tracked is tracked and decision.emit == ()
    assert "older than the state's last update" in decision.reason
    assert at(5).isoformat() in decision.reason and at(10).isoformat() in decision.reason


def test_a_duplicate_event_id_has_no_effect() -> None:
    """Redelivering the latest update changes nothing and is reported as a duplicate."""
    first = count(1, 50)
    tracked, _ = run([opened(0), first])
    decision = step(tracked, first)
    assert decision.outcome is Outcome.DUPLICATE
    assert decision.tracked is tracked and decision.emit == ()


def test_a_duplicate_of_an_older_update_has_no_effect() -> None:
    """Redelivering an older update after newer ones is ignored (it is stale)."""
    older = count(1, 170)
    tracked, _ = run([opened(0), older, count(2, 10)])
    decision = step(tracked, older)
    assert decision.outcome is Outcome.STALE and decision.emit == ()
    assert decision.tracked is tracked


def test_duplicates_at_the_same_event_time_are_recognised() -> None:
    """With several updates at one instant, redelivering the first does not undo the second."""
    a, b = count(1, 50), count(1, 60)
    tracked, _ = run([opened(0), a, b])
    decision = step(tracked, a)
    assert decision.outcome is Outcome.DUPLICATE
    assert decision.tracked.state is not None and decision.tracked.state.occupancy == 60


def test_a_repeat_at_the_same_time_with_the_same_values_publishes_nothing() -> None:
    """A distinct event carrying the same values at the same time leaves the version alone."""
    tracked, _ = run([opened(0), count(1, 50)])
    decision = step(tracked, count(1, 50))
    assert decision.outcome is Outcome.UNCHANGED and decision.emit == ()
    assert decision.tracked.state == tracked.state


def test_a_later_repeat_of_the_same_count_is_a_change() -> None:
    """The same count later is published: HQ sees when the shelter last reported."""
    tracked, _ = run([opened(0), count(1, 50)])
    decision = step(tracked, count(30, 50))
    assert decision.outcome is Outcome.APPLIED
    assert decision.tracked.state is not None
    assert decision.tracked.state.last_reported_at == at(30)


# --- bounds --------------------------------------------------------------------


def rejected(decision: Decision, tracked: Tracked, field: str, words: str) -> None:
    assert decision.outcome is Outcome.REJECTED
    assert decision.tracked is tracked and decision.emit == ()
    assert decision.rejection is not None and decision.rejection.field == field
    assert words in decision.reason


def test_a_count_over_three_times_capacity_is_rejected_with_the_reason() -> None:
    """600 fits 3 × 200; 601 does not, and the reason names the bound and the capacity."""
    tracked, _ = run([opened(0)])
    assert step(tracked, count(1, 600)).outcome is Outcome.APPLIED
    rejected(step(tracked, count(1, 601)), tracked, "payload.occupancy",
             "more than 3 times the capacity 200")


def test_a_capacity_that_makes_the_count_implausible_is_rejected() -> None:
    """Reporting capacity 20 while 100 are counted blames the capacity."""
    tracked, _ = run([opened(0), count(1, 100)])
    rejected(step(tracked, opened(2, capacity=20)), tracked, "payload.capacity",
             "more than 3 times")


def test_a_zero_capacity_is_rejected() -> None:
    """A reported capacity of 0 is refused: such a shelter should be reported closing."""
    tracked, _ = run([opened(0)])
    rejected(step(tracked, count(1, 0, capacity=0)), tracked, "payload.capacity",
             "reported closing")


def test_households_or_care_above_the_head_count_are_rejected() -> None:
    """Households and people needing care are part of the count and cannot exceed it."""
    tracked, _ = run([opened(0)])
    rejected(step(tracked, count(1, 10, households=11)), tracked, "payload.households",
             "more than the 10 people counted")
    rejected(step(tracked, count(1, 10, special_care=12)), tracked, "payload.special_care",
             "more than the 10 people counted")


def test_a_negative_count_is_rejected() -> None:
    """A negative count built in code (bypassing the contract) is refused by the rules too."""
    tracked, _ = run([opened(0)])
    good = count(1, 5)
    bad = good.model_copy(update={"payload": good.payload.model_copy(
        update={"occupancy": -5})})
    rejected(step(tracked, bad), tracked, "payload.occupancy", "-5 is negative")


@pytest.mark.parametrize("occupancy", [-1, 100_001, "12", 1.5])
def test_the_contract_refuses_out_of_range_counts_by_field(occupancy: object) -> None:
    """On the wire, a negative, huge or non-integer count fails decoding naming the field."""
    document = json.loads(encode_event(count(1, 5)))
    document["payload"]["occupancy"] = occupancy
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(document)
    assert "payload.occupancy" in excinfo.value.fields


# --- hysteresis ------------------------------------------------------------------


def test_a_count_hovering_at_80_percent_does_not_flap() -> None:
    """Crowded fires at 80 %, stays through 77 %-81 %, clears below 75 %, fires again at 80 %."""
    counts = [160, 155, 161, 152, 158, 151, 149, 152, 155, 159, 160, 158]
    _, decisions = run([opened(0), *(count(i + 1, n) for i, n in enumerate(counts))])
    assert alerts_of(decisions) == [("crowded", None), ("cleared", "crowded"),
                                    ("crowded", None)]
    statuses = [d.tracked.state.status for d in decisions[1:] if d.tracked.state]
    assert statuses == ["crowded"] * 6 + ["open"] * 4 + ["crowded"] * 2


def test_full_clears_only_below_its_margin() -> None:
    """Full at 100 %, still full at 96 %, crowded again below 95 %, open below 75 %."""
    _, decisions = run([opened(0), count(1, 200), count(2, 192), count(3, 189), count(4, 149)])
    assert alerts_of(decisions) == [("crowded", None), ("full", None), ("cleared", "full"),
                                    ("cleared", "crowded")]
    assert [d.tracked.state.status for d in decisions if d.tracked.state] == \
        ["open", "full", "full", "crowded", "open"]


def test_each_alert_carries_its_threshold_and_the_counts() -> None:
    """Raising alerts carry the raising threshold, clearings the clearing one."""
    _, decisions = run([opened(0), count(1, 200), count(2, 10)])
    payloads = [e.payload for d in decisions for e in d.emit
                if isinstance(e, ShelterCapacityAlert)]
    assert [(p.kind, p.cleared_kind, p.threshold, p.occupancy, p.capacity) for p in payloads] == [
        ("crowded", None, 0.8, 200, 200), ("full", None, 1.0, 200, 200),
        ("cleared", "full", 0.95, 10, 200), ("cleared", "crowded", 0.75, 10, 200)]


def test_thresholds_use_the_reported_capacity() -> None:
    """A reported capacity replaces the planned one in state and in the share."""
    tracked, _ = run([opened(0, capacity=100), count(1, 80)])
    assert tracked.state is not None and tracked.state.capacity == 100
    assert status(tracked) == "crowded"


def test_a_shelter_of_unknown_capacity_never_raises_occupancy_alerts() -> None:
    """Without a capacity there is no share, hence no crowded/full."""
    unknown = ShelterSite("tv-school", "Testville School", "riverside", None, ())
    tracked, decisions = run([opened(0), count(1, 500)], site=unknown)
    assert status(tracked) == "open" and alerts_of(decisions) == []


def test_custom_thresholds_apply() -> None:
    """Thresholds are parameters: a 50 % crowded threshold fires at 100 of 200."""
    strict = Thresholds(crowded_percent=50, crowded_clear_percent=40)
    tracked = step(Tracked(), opened(0), thresholds=strict).tracked
    decision = step(tracked, count(1, 100), thresholds=strict)
    assert alerts_of([decision]) == [("crowded", None)]


@pytest.mark.parametrize("bad", [
    {"crowded_clear_percent": 80}, {"full_clear_percent": 100}, {"fuel_clear_hours": 6.0},
    {"crowded_percent": 96}, {"crowded_percent": 0},
])
def test_thresholds_without_a_hysteresis_margin_are_refused(bad: dict[str, Any]) -> None:
    """Each clearing value must lie below its raising value, and crowded below full."""
    with pytest.raises(ValidationError):
        Thresholds(**bad)


@pytest.mark.parametrize("pack", ["chiyoda", "testville"])
def test_each_pack_ships_the_documented_thresholds(pack: str) -> None:
    """shelters.toml of both packs loads and holds the defaults documented here."""
    assert load_pack_section(pack, "shelters.toml", ShelterPackSection).thresholds == \
        DEFAULT_THRESHOLDS


# --- fuel and needs ------------------------------------------------------------


def test_fuel_alert_fires_below_6_hours_and_clears_above_8() -> None:
    """Generator fuel: alert below 6 h once, no flapping between 6 and 8 h, clear above 8 h."""
    hours = [10.0, 6.0, 5.9, 5.0, 7.5, 5.5, 8.0, 8.5, 7.0, 5.0]
    _, decisions = run([opened(0), *(needs(i + 1, fuel=h) for i, h in enumerate(hours))])
    assert alerts_of(decisions) == [("fuel_low", None), ("cleared", "fuel_low"),
                                    ("fuel_low", None)]
    fuel = [e.payload.fuel_hours_left for d in decisions for e in d.emit
            if isinstance(e, ShelterCapacityAlert)]
    assert fuel == [5.9, 8.5, 5.0]


def test_switching_back_to_the_grid_clears_the_fuel_alert() -> None:
    """A fuel alert ends when the shelter is no longer on its generator."""
    _, decisions = run([opened(0), needs(1, fuel=2.0), needs(2, power="grid")])
    assert alerts_of(decisions) == [("fuel_low", None), ("cleared", "fuel_low")]


def test_needs_reports_are_partial() -> None:
    """A null level keeps the previous one; power is kept when not reported."""
    tracked, _ = run([opened(0), needs(1, water="low", food="ok", fuel=12.0),
                      needs(2, food="out", medical="low")])
    state = tracked.state
    assert state is not None and state.power is not None
    assert (state.needs.water, state.needs.food, state.needs.medical, state.needs.sanitation) \
        == (NeedLevel.LOW, NeedLevel.OUT, NeedLevel.LOW, None)
    assert state.power.kind is PowerKind.GENERATOR and state.power.fuel_hours_left == 12.0


def test_a_head_count_replaces_the_previous_count_whole() -> None:
    """Households and special care not counted this time are unknown, not carried over."""
    tracked, _ = run([opened(0), count(1, 100, households=40, special_care=7), count(2, 30)])
    state = tracked.state
    assert state is not None and (state.occupancy, state.households, state.special_care) == \
        (30, None, None)


# --- misuse and the region ------------------------------------------------------


def test_an_update_for_another_shelter_is_a_programming_error() -> None:
    """decide refuses to fold one shelter's update into another's state."""
    with pytest.raises(ValueError, match="tv-gym"):
        step(Tracked(), opened(0, shelter="tv-gym"))


def test_only_sites_that_take_people_are_tracked() -> None:
    """shelter_sites keeps shelters (指定避難所) and stranded-commuter facilities
    (一時滞在施設), and leaves out evacuation-only sites."""
    assert set(SITES) == {"tv-school", "tv-gym", "tv-station"}
    assert GYM.hazards == () and GYM.area_id == "hilltop"
    chiyoda = shelter_sites(load_region("chiyoda"))
    assert len(chiyoda) == 15 + 5 and chiyoda["e1310100006201"].name == "区立スポーツセンター"
    assert chiyoda["ts-ogawamachi"].hazards == (Hazard.EARTHQUAKE,)


def test_a_facility_opens_fills_and_closes_like_a_shelter() -> None:
    """A stranded-commuter facility is tracked exactly as a shelter: open, crowded, closed."""
    station = SITES["tv-station"]  # capacity 50
    assert station.planned_capacity == 50 and station.hazards == (Hazard.EARTHQUAKE,)
    tracked, _ = run([opened(0, shelter="tv-station"),
                      count(1, 45, shelter="tv-station")], site=station)
    assert tracked.state is not None
    assert tracked.state.status is ShelterStatus.CROWDED and tracked.state.occupancy == 45
    closing = step(tracked, _event(ShelterClosed, {"shelter_id": "tv-station",
                                                   "stage": "closed"}, 2), station)
    assert closing.tracked.state is not None
    assert closing.tracked.state.status is ShelterStatus.CLOSED


def test_tracked_state_round_trips_through_the_table_bytes() -> None:
    """The table value survives serialisation exactly (restarts restore from it)."""
    tracked, _ = run([opened(0), count(1, 170, households=60), needs(2, fuel=4.0)])
    assert Tracked.from_bytes(tracked.to_bytes()) == tracked
    assert Tracked.from_bytes(None) == Tracked()


# --- property: whatever arrives, in whatever order ------------------------------

MINUTES = st.integers(0, 30)
UPDATES = st.one_of(
    st.builds(lambda m, s: opened(m, s), MINUTES, st.sampled_from(["opening", "open"])),
    st.builds(lambda m, s: closed(m, s), MINUTES, st.sampled_from(["closing", "closed"])),
    st.builds(lambda m, n, h: count(m, n, households=h), MINUTES, st.integers(0, 700),
              st.none() | st.integers(0, 40)),
    st.builds(lambda m, f: needs(m, fuel=f), MINUTES, st.floats(0, 12)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(UPDATES, max_size=25), st.data())
def test_any_sequence_keeps_the_invariants(updates: list[ShelterUpdate],
                                           data: st.DataObject) -> None:
    """Versions strictly increase, counts stay non-negative, alerts alternate per kind."""
    # Redeliver some updates, as at-least-once delivery does.
    for _ in range(data.draw(st.integers(0, 3))):
        if updates:
            updates.insert(data.draw(st.integers(0, len(updates))),
                           data.draw(st.sampled_from(updates)))
    tracked, decisions = run(updates)
    versions = [d.state_changed.payload.version for d in decisions if d.state_changed]
    assert versions == list(range(1, len(versions) + 1))
    raised: dict[AlertKind, bool] = {}
    for decision in decisions:
        state = decision.tracked.state
        if state is not None:
            assert state.occupancy >= 0 and state.version >= 1
            active = set(decision.tracked.alerts)
            if AlertKind.FULL in active:
                assert AlertKind.CROWDED in active  # full implies crowded
            if state.status in ("open", "crowded", "full"):
                expected = "full" if AlertKind.FULL in active else \
                    "crowded" if AlertKind.CROWDED in active else "open"
                assert state.status == expected
        for event in decision.emit:
            if isinstance(event, ShelterCapacityAlert):
                kind = event.payload.cleared_kind or event.payload.kind
                now_raised = event.payload.kind is not AlertKind.CLEARED
                assert raised.get(kind, False) != now_raised  # once per crossing
                raised[kind] = now_raised
        if decision.outcome in (Outcome.DUPLICATE, Outcome.STALE, Outcome.REJECTED):
            assert decision.emit == ()
    assert {k for k, v in raised.items() if v} == set(tracked.alerts)


# --- area aggregates --------------------------------------------------------------


def change(event: ShelterUpdate, tracked: Tracked | None = None,
           site: ShelterSite = SCHOOL) -> tuple[Tracked, ShelterStatusChanged]:
    decision = step(tracked or Tracked(), event, site)
    assert decision.state_changed is not None
    return decision.tracked, decision.state_changed


RIVERSIDE = (SCHOOL,)


def test_an_area_summary_counts_unreported_shelters_as_closed() -> None:
    """Before any report every shelter is closed and nothing is free."""
    summary = summarize_area("hilltop", 1, (GYM,), {})
    assert summary.shelters.closed == 1 and summary.shelters_open == 0
    assert (summary.capacity, summary.occupancy, summary.free_capacity) == (0, 0, 0)
    assert summary.by_hazard == ()


def test_the_first_shelter_change_publishes_the_area_summary() -> None:
    """Opening a shelter publishes version 1 of its area's summary, with free places per hazard."""
    tracked, opened_change = change(opened(0))
    _, counted = change(count(1, 150, households=50), tracked)
    area = decide_area(AreaTracked(), opened_change, RIVERSIDE, recorded_at=RECORDED)
    assert area.emit is not None and area.emit.payload.version == 1
    second = decide_area(area.tracked, counted, RIVERSIDE, recorded_at=RECORDED)
    assert second.emit is not None
    summary = second.emit.payload
    assert (summary.area_id, summary.version, summary.shelters.open, summary.shelters_open) == \
        ("riverside", 2, 1, 1)
    assert (summary.capacity, summary.occupancy, summary.free_capacity) == (200, 150, 50)
    assert [(h.hazard, h.shelters_open, h.free_capacity) for h in summary.by_hazard] == [
        (Hazard.EARTHQUAKE, 1, 50), (Hazard.LARGE_FIRE, 1, 50)]
    assert second.emit.causation_id == counted.event_id
    assert second.emit.exercise is counted.exercise


def test_full_shelters_are_open_but_offer_no_free_places() -> None:
    """A full shelter counts as open, adds its capacity, and no free capacity."""
    tracked, _ = change(opened(0))
    _, full = change(count(1, 195), change(count(1, 200), tracked)[0])  # full, held at 97.5 %
    assert full.payload.status == "full"
    summary = decide_area(AreaTracked(), full, RIVERSIDE, recorded_at=RECORDED).emit
    assert summary is not None
    assert (summary.payload.shelters.full, summary.payload.shelters_open,
            summary.payload.capacity, summary.payload.free_capacity) == (1, 1, 200, 0)


def test_an_older_shelter_version_leaves_the_area_alone() -> None:
    """Replayed or reordered shelter states never move an area summary backwards."""
    tracked, first = change(opened(0))
    _, second = change(count(1, 100), tracked)
    area = decide_area(AreaTracked(), second, RIVERSIDE, recorded_at=RECORDED).tracked
    again = decide_area(area, first, RIVERSIDE, recorded_at=RECORDED)
    assert again.emit is None and again.tracked is area and "not newer" in again.reason


def test_a_change_that_does_not_move_the_area_publishes_nothing() -> None:
    """A needs report changes the shelter but not the area figures: no new summary version."""
    tracked, first = change(opened(0))
    _, needy = change(needs(1, water="out"), tracked)
    area = decide_area(AreaTracked(), first, RIVERSIDE, recorded_at=RECORDED).tracked
    after = decide_area(area, needy, RIVERSIDE, recorded_at=RECORDED)
    assert after.emit is None
    assert after.tracked.shelters["tv-school"].version == 2
    assert after.tracked.summary is not None and after.tracked.summary.version == 1


def test_a_shelter_of_another_area_is_refused() -> None:
    """Folding a riverside shelter into hilltop is a ShelterNotRegistered error."""
    _, first = change(opened(0))
    with pytest.raises(ShelterNotRegistered):
        decide_area(AreaTracked(), first, (GYM,), recorded_at=RECORDED)


def test_area_state_round_trips_through_the_table_bytes() -> None:
    """The area table value survives serialisation exactly."""
    _, first = change(opened(0))
    area = decide_area(AreaTracked(), first, RIVERSIDE, recorded_at=RECORDED).tracked
    assert AreaTracked.from_bytes(area.to_bytes()) == area


def test_distinct_updates_get_distinct_output_ids() -> None:
    """Derived ids depend on the input event, so two updates never share an output id."""
    tracked, a = change(opened(0))
    _, b = change(count(1, 10), tracked)
    assert a.event_id != b.event_id
    assert isinstance(a.event_id, uuid.UUID)
