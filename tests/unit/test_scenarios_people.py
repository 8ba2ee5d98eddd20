"""The shipped scenarios' people and supplies: what the demo shows, folded by the pure cores."""

from __future__ import annotations

import io
from collections import Counter

from schemas.events import Event
from schemas.shelters import ShelterState, ShelterStatus
from schemas.supplies import SupplyRequestStatus, next_status
from services.drill.logformat import read_log, write_log
from services.shelter_tracker.domain import ShelterUpdate, Tracked, decide, shelter_sites
from sonae.tools import build_heavy_rain, build_quake_commuters
from sonae.tools.build_heavy_rain import REGION, THRESHOLDS


def _states(inputs: tuple[Event, ...]) -> dict[str, list[ShelterState]]:
    """Every site's published states, folding the inputs as the shelter tracker would."""
    sites, tracked = shelter_sites(REGION), {}
    states: dict[str, list[ShelterState]] = {}
    for event in inputs:
        if not isinstance(event, ShelterUpdate):
            continue
        site = event.payload.shelter_id
        decision = decide(tracked.get(site, Tracked()), event, sites[site],
                          recorded_at=event.recorded_at, thresholds=THRESHOLDS)
        assert decision.rejection is None, decision.reason
        tracked[site] = decision.tracked
        if decision.state_changed is not None:
            states.setdefault(site, []).append(decision.state_changed.payload)
    return states


def _supply_statuses(inputs: tuple[Event, ...]) -> dict[object, SupplyRequestStatus]:
    statuses: dict[object, SupplyRequestStatus] = {}
    for event in inputs:
        if event.type.startswith("supply."):
            request = event.payload.request_id  # type: ignore[union-attr]
            statuses[request] = next_status(statuses.get(request), event.type)
    return statuses


def test_the_shipped_scenarios_are_what_their_builders_write() -> None:
    """chiyoda-heavy-rain.jsonl and chiyoda-quake-commuters.jsonl are up to date."""
    for built, output in ((build_heavy_rain.build(), build_heavy_rain.OUTPUT),
                          (build_quake_commuters.build(), build_quake_commuters.OUTPUT)):
        out = io.BytesIO()
        write_log(built, out)
        assert out.getvalue() == output.read_bytes(), output.name


def test_the_heavy_rain_demo_has_households_people_at_home_supplies_and_a_generator() -> None:
    """Check-ins move the occupancy beside the typed counts; two requests are received; a
    stranded-commuter facility fills to crowded."""
    log = read_log(build_heavy_rain.OUTPUT)
    kinds = Counter(e.type for e in log.inputs)
    assert kinds["shelter.household_checked_in"] == 8  # seven arrivals and a transfer's half
    assert kinds["shelter.household_checked_out"] == 3
    assert kinds["people.at_home_reported"] == 3 and kinds["people.welfare_checked"] == 1
    assert kinds["generator.registered"] == 1 and kinds["generator.status_reported"] == 3
    assert sorted(_supply_statuses(log.inputs).values()) == [SupplyRequestStatus.RECEIVED] * 2
    states = _states(log.inputs)
    gym = states[build_heavy_rain.KANDA_SPORTS]
    assert max(s.registered_households for s in gym) == 4
    assert any(s.unregistered is not None and s.unregistered > 0 for s in gym)
    kudan = states[build_heavy_rain.KUDAN][-1]
    assert (kudan.registered_households, kudan.household_needs.language) == (1, 1)
    commuters = [s.status for s in states[build_heavy_rain.AKIHABARA_FACILITY]]
    assert ShelterStatus.CROWDED in commuters  # stranded commuters, 総武線 stopped


def test_the_quake_variant_fills_stranded_commuter_facilities() -> None:
    """After 震度5強 the ward's facilities open; 丸の内 becomes crowded, then full, and its
    water and blankets are received; every district gets a level-3 earthquake order."""
    log = read_log(build_quake_commuters.OUTPUT)
    states = _states(log.inputs)
    marunouchi = [s.status for s in states[build_quake_commuters.MARUNOUCHI]]
    assert marunouchi.index(ShelterStatus.CROWDED) < marunouchi.index(ShelterStatus.FULL)
    assert states[build_quake_commuters.KUDAN_SOUTH][-1].registered_households == 1
    assert all(REGION.site(site).is_temporary_stay for site in states)
    assert list(_supply_statuses(log.inputs).values()) == [SupplyRequestStatus.RECEIVED]
    issued = [e for e in log.references if e.type == "evacuation.order_issued"]
    assert {a for e in issued for a in e.payload.area_ids} == {  # type: ignore[union-attr]
        d.id for d in REGION.districts}
    assert {e.payload.level for e in issued} == {3}  # type: ignore[union-attr]
