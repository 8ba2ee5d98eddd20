"""The picture's people and supplies kinds: at-home counts, welfare checks, supply
requests, generators; and what each role sees of them."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.envelope import Envelope, new_event
from schemas.examples import example
from schemas.people import AtHomeReported, WelfareChecked
from schemas.region import load_region
from schemas.shelters import ShelterStatusChanged
from schemas.supplies import (
    GeneratorRegistered,
    GeneratorStatusReported,
    SupplyAssigned,
    SupplyCancelled,
    SupplyDispatched,
    SupplyReceived,
    SupplyRequested,
)
from services.gateway.cop import COP, Kind, RegionIndex
from services.gateway.reducer import reduce
from services.gateway.views import Audience, Viewer, view_delta, view_state

REGION = RegionIndex.from_region(load_region())
BASE = datetime(2025, 8, 21, tzinfo=UTC)
HQ = Viewer(Audience.HQ)
PUBLIC = Viewer(Audience.PUBLIC)
KANDA_FIELD = Viewer(Audience.FIELD, None, frozenset({"kanda-koen"}))
SPORTS_CENTER = "e1310100006201"  # a kanda-koen shelter of the Chiyoda pack
SAKURA = "e1310100007201"         # another site of the same pack


def at(minutes: float) -> datetime:
    """``minutes`` past a fixed time."""
    return BASE + timedelta(minutes=minutes)


def fold(events: Iterable[Envelope], cop: COP | None = None) -> COP:
    """Fold events into a picture."""
    cop = cop or COP.empty(REGION)
    for event in events:
        cop, _ = reduce(cop, event)  # type: ignore[arg-type]
    return cop


def at_home(household: uuid.UUID, area: str, minutes: float, *, size: int = 2,
            needs: Sequence[str] = ("water", "welfare_check"), **extra: Any) -> Envelope:
    """An at-home report of ``household`` in ``area``."""
    body = {"household_id": str(household), "area_id": area, "size": size,
            "needs": list(needs), "contact": "090-1234-5678", "address": "神田司町二丁目 3-1",
            "note": "母が寝たきり", "via": "public", **extra}
    return new_event(AtHomeReported, body, occurred_at=at(minutes), source="intake")


def checked(household: uuid.UUID, area: str, minutes: float, outcome: str) -> Envelope:
    """A welfare-check visit of ``household`` with ``outcome``."""
    body = {"household_id": str(household), "area_id": area, "outcome": outcome,
            "note": "玄関で本人と会話", "checked_by": "field-kanda-1"}
    return new_event(WelfareChecked, body, occurred_at=at(minutes), source="intake")


def requested(request: uuid.UUID, site: str, minutes: float, *, urgency: str = "urgent",
              area: str = "kanda-koen") -> Envelope:
    """A supply request from ``site``."""
    body = {"request_id": str(request), "requester_kind": "shelter", "site_id": site,
            "area_id": area, "lines": [{"item": "water", "quantity": 600}],
            "urgency": urgency, "requested_by": {"team": "運営班", "name": "鈴木 一郎"}}
    return new_event(SupplyRequested, body, occurred_at=at(minutes), source="intake")


def step(cls: type[Envelope], request: uuid.UUID, minutes: float, **extra: Any) -> Envelope:
    """A step of a supply request."""
    body = {"request_id": str(request), "by": "hq-duty-officer", **extra}
    return new_event(cls, body, occurred_at=at(minutes), source="intake")


def registered(generator: str, minutes: float, area: str = "kanda-koen") -> Envelope:
    """A generator registration."""
    body = {"generator_id": generator, "owner": "神田司町二丁目町会", "area_id": area,
            "location": {"lat": 35.693, "lon": 139.768}, "fuel": "gasoline",
            "rated_kva": 1.6, "runtime_full_hours": 4.0, "registered_by": "hq-duty-officer"}
    return new_event(GeneratorRegistered, body, occurred_at=at(minutes), source="intake")


def status(generator: str, minutes: float, state: str) -> Envelope:
    """A generator status report."""
    body = {"generator_id": generator, "state": state,
            "reported_by": {"team": "町会", "name": "田中 次郎"}}
    return new_event(GeneratorStatusReported, body, occurred_at=at(minutes), source="intake")


def shelter_state(shelter: str, version: int, **fields: Any) -> Envelope:
    """The tracker's state of ``shelter`` with check-in counts."""
    body = {"shelter_id": shelter, "version": version, "status": "open", "name": "避難所",
            "occupancy": 120, "registered": 110, "registered_households": 40,
            "unregistered": 10, "household_needs": {"wheelchair": 2, "infant": 3},
            "last_reported_by": {"team": "運営班", "name": "鈴木 一郎"}, **fields}
    return new_event(ShelterStatusChanged, body, occurred_at=at(version), source="tracker")


# --- at home and welfare checks ---------------------------------------------------------


def test_at_home_counts_households_people_and_needs_per_area() -> None:
    """Each area counts its at-home households, their people and households per need."""
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cop = fold([at_home(a, "kanda-koen", 1, size=3, needs=("water", "medical_power")),
                at_home(b, "kanda-koen", 2, size=1, needs=("welfare_check",)),
                at_home(c, "jimbocho", 3, size=4, needs=())])
    kanda = cop.get(Kind.AT_HOME, "kanda-koen")
    assert kanda is not None
    assert (kanda["households"], kanda["people"], kanda["welfare_pending"]) == (2, 4, 1)
    assert kanda["needs"] == {"water": 1, "food": 0, "medicine": 0, "medical_power": 1,
                              "welfare_check": 1}
    assert cop.get(Kind.AT_HOME, "jimbocho")["people"] == 4  # type: ignore[index]
    assert cop.get(Kind.AT_HOME, "fujimi") is None


def test_a_later_report_replaces_the_household_and_may_move_its_area() -> None:
    """A newer report of the same household replaces it; an older one changes nothing."""
    h = uuid.uuid4()
    cop = fold([at_home(h, "kanda-koen", 1, size=2)])
    cop, deltas = reduce(cop, at_home(h, "jimbocho", 5, size=5))  # type: ignore[arg-type]
    assert cop.get(Kind.AT_HOME, "kanda-koen") is None
    assert cop.get(Kind.AT_HOME, "jimbocho")["people"] == 5  # type: ignore[index]
    assert any(d.kind is Kind.AT_HOME and d.key == "kanda-koen" and d.value is None
               for d in deltas)
    again, deltas = reduce(cop, at_home(h, "kanda-koen", 3))  # type: ignore[arg-type]
    assert deltas == () and again is cop


def test_the_work_list_keeps_a_household_until_found_safe_or_moved() -> None:
    """Not found and needs help stay on the list; safe or moved to a shelter take it off."""
    h = uuid.uuid4()
    cop = fold([at_home(h, "kanda-koen", 1)])
    assert cop.get(Kind.WELFARE, str(h))["status"] == "pending"  # type: ignore[index]
    cop = fold([checked(h, "kanda-koen", 10, "not_found")], cop)
    assert cop.get(Kind.WELFARE, str(h))["status"] == "not_found"  # type: ignore[index]
    safe = fold([checked(h, "kanda-koen", 20, "safe")], cop)
    assert safe.get(Kind.WELFARE, str(h)) is None
    assert safe.get(Kind.AT_HOME, "kanda-koen")["welfare_pending"] == 0  # type: ignore[index]
    moved = fold([checked(h, "kanda-koen", 20, "moved_to_shelter")], cop)
    assert moved.get(Kind.WELFARE, str(h)) is None
    assert moved.get(Kind.AT_HOME, "kanda-koen") is None  # no longer at home
    # Asking again after the visit puts it back on the list.
    again = fold([at_home(h, "kanda-koen", 30)], safe)
    assert again.get(Kind.WELFARE, str(h))["status"] == "pending"  # type: ignore[index]


def test_households_without_a_welfare_request_are_counted_not_listed() -> None:
    """Only households asking for a welfare check join the work list."""
    h = uuid.uuid4()
    cop = fold([at_home(h, "kanda-koen", 1, needs=("food",))])
    assert cop.get(Kind.WELFARE, str(h)) is None
    assert cop.get(Kind.AT_HOME, "kanda-koen")["needs"]["food"] == 1  # type: ignore[index]


def test_a_check_older_than_the_report_answers_an_earlier_one() -> None:
    """A safe visit made before the latest report does not close that report's request."""
    h = uuid.uuid4()
    events = [checked(h, "kanda-koen", 5, "safe"), at_home(h, "kanda-koen", 10)]
    for order in (events, events[::-1]):
        assert fold(order).get(Kind.WELFARE, str(h))["status"] == "pending"  # type: ignore[index]


# --- supply requests --------------------------------------------------------------------


def test_a_request_goes_requested_assigned_dispatched_received() -> None:
    """Each step moves the status; the steps, assignee and last change are kept."""
    r = uuid.uuid4()
    cop = fold([requested(r, SPORTS_CENTER, 1)])
    assert cop.get(Kind.SUPPLY, str(r))["status"] == "requested"  # type: ignore[index]
    cop = fold([step(SupplyAssigned, r, 2, assignee="備蓄倉庫班"),
                step(SupplyDispatched, r, 3)], cop)
    entity = cop.get(Kind.SUPPLY, str(r))
    assert entity is not None
    assert (entity["status"], entity["assignee"]) == ("dispatched", "備蓄倉庫班")
    cop = fold([step(SupplyReceived, r, 4)], cop)
    entity = cop.get(Kind.SUPPLY, str(r))
    assert entity is not None and entity["status"] == "received"
    assert [s["status"] for s in entity["steps"]] == ["assigned", "dispatched", "received"]
    assert entity["updated_at"] == at(4).isoformat()
    assert entity["lines"] == [{"item": "water", "quantity": 600, "note": ""}]


def test_steps_the_table_refuses_are_skipped() -> None:
    """A receipt of what was never dispatched, or a step after a cancel, moves nothing."""
    r = uuid.uuid4()
    cop = fold([requested(r, SPORTS_CENTER, 1), step(SupplyReceived, r, 2)])
    assert cop.get(Kind.SUPPLY, str(r))["status"] == "requested"  # type: ignore[index]
    cop = fold([step(SupplyCancelled, r, 3, note="届いた"), step(SupplyDispatched, r, 4),
                step(SupplyReceived, r, 5)], cop)
    entity = cop.get(Kind.SUPPLY, str(r))
    assert entity is not None and entity["status"] == "cancelled"
    assert [s["status"] for s in entity["steps"]] == ["cancelled"]


def test_steps_before_their_request_wait_for_it() -> None:
    """A step read before its request shows nothing until the request arrives."""
    r = uuid.uuid4()
    cop = fold([step(SupplyAssigned, r, 2)])
    assert cop.get(Kind.SUPPLY, str(r)) is None
    cop = fold([requested(r, SPORTS_CENTER, 1)], cop)
    assert cop.get(Kind.SUPPLY, str(r))["status"] == "assigned"  # type: ignore[index]


def test_steps_fold_in_lifecycle_order_whatever_their_clocks_say() -> None:
    """A dispatch stamped before its assignment (client clocks) still folds after it."""
    r = uuid.uuid4()
    events = [requested(r, SPORTS_CENTER, 10), step(SupplyDispatched, r, 5),
              step(SupplyAssigned, r, 8)]
    assert fold(events).get(Kind.SUPPLY, str(r))["status"] == "dispatched"  # type: ignore[index]


# --- generators -------------------------------------------------------------------------


def test_a_generator_shows_its_registration_and_latest_state() -> None:
    """The latest status by event time wins; a status before registration waits for it."""
    events = [status("gen-1", 30, "fuel_low"), status("gen-1", 20, "running")]
    assert fold(events).get(Kind.GENERATOR, "gen-1") is None
    cop = fold([registered("gen-1", 1)], fold(events))
    entity = cop.get(Kind.GENERATOR, "gen-1")
    assert entity is not None
    assert (entity["state"], entity["owner"], entity["location"]) == (
        "fuel_low", "神田司町二丁目町会", {"lat": 35.693, "lon": 139.768})
    assert fold([registered("gen-2", 1)]).get(Kind.GENERATOR, "gen-2")["state"] is None  # type: ignore[index]


# --- order independence -----------------------------------------------------------------


def _story() -> list[Envelope]:
    h1, h2, r1, r2 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    return [
        at_home(h1, "kanda-koen", 1), checked(h1, "kanda-koen", 5, "not_found"),
        checked(h1, "kanda-koen", 9, "safe"), at_home(h2, "jimbocho", 2),
        at_home(h2, "kanda-koen", 7, size=4), checked(h2, "kanda-koen", 8, "moved_to_shelter"),
        requested(r1, SPORTS_CENTER, 1), step(SupplyAssigned, r1, 2, assignee="班"),
        step(SupplyDispatched, r1, 3), step(SupplyReceived, r1, 4),
        step(SupplyReceived, r1, 5), requested(r2, SAKURA, 2, urgency="critical"),
        step(SupplyCancelled, r2, 6), registered("gen-1", 0), status("gen-1", 3, "running"),
        status("gen-1", 6, "fault"), registered("gen-1", 4),
    ]


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(min_value=0, max_value=3))
def test_people_and_supplies_do_not_depend_on_the_order_of_events(
        rng: random.Random, repeats: int) -> None:
    """Any interleaving, with duplicates, folds to the same entities."""
    events = _story()
    shuffled = events + events[:repeats]
    rng.shuffle(shuffled)
    assert fold(shuffled).entities == fold(events).entities


def test_duplicates_of_people_events_change_nothing() -> None:
    """A second delivery of every event yields no deltas."""
    events = _story()
    cop = fold(events)
    for event in events:
        again, deltas = reduce(cop, event)  # type: ignore[arg-type]
        assert deltas == () and again.entities == cop.entities


# --- views ------------------------------------------------------------------------------


def _everything() -> tuple[COP, list[Any]]:
    """A picture with every new kind in two areas, and the deltas that built it."""
    events = [*_story(), shelter_state(SPORTS_CENTER, 1), shelter_state(SAKURA, 1),
              at_home(uuid.uuid4(), "jimbocho", 3), at_home(uuid.uuid4(), "kanda-koen", 4),
              requested(uuid.uuid4(), "e1310100001201", 3, area="fujimi"),
              registered("gen-j", 1, area="jimbocho"), status("gen-j", 2, "stopped")]
    cop = COP.empty(REGION)
    deltas: list[Any] = []
    for event in events:
        cop, changed = reduce(cop, event)  # type: ignore[arg-type]
        deltas.extend(changed)
    return cop, deltas


def _seen(viewer: Viewer) -> tuple[dict[str, Any], list[Any]]:
    cop, deltas = _everything()
    return view_state(cop, viewer), [d for d in (view_delta(x, viewer) for x in deltas) if d]


def test_hq_sees_every_people_kind_with_personal_fields() -> None:
    """HQ gets counts, the work list with address, contact and notes, requests and generators."""
    state, _ = _seen(HQ)
    assert state["at_home"] and state["supply_request"] and state["generator"]
    items = state["welfare_check"].values()
    assert {i["area_id"] for i in items} == {"kanda-koen", "jimbocho"}
    assert all((i["contact"], i["note"]) == ("090-1234-5678", "母が寝たきり") for i in items)
    assert state["shelter"][SPORTS_CENTER]["unregistered"] == 10
    assert any(r["requested_by"]["name"] == "鈴木 一郎"
               for r in state["supply_request"].values())


def test_field_teams_see_their_areas_work_list_without_notes_and_no_supplies() -> None:
    """A field team sees what a visit needs (address, contact) in its areas, nothing else."""
    state, deltas = _seen(KANDA_FIELD)
    assert "supply_request" not in state and "at_home" not in state
    items = list(state["welfare_check"].values())
    assert items and {i["area_id"] for i in items} == {"kanda-koen"}
    assert all(i["address"] and i["contact"] for i in items)
    text = json.dumps([state, deltas], ensure_ascii=False)
    for personal in ("母が寝たきり", "玄関で本人と会話", "鈴木 一郎", "田中 次郎"):
        assert personal not in text
    assert all(k not in s for s in state["shelter"].values()
               for k in ("registered", "unregistered", "household_needs"))
    assert {d[0] for d in deltas} <= set(Kind) - {Kind.SUPPLY, Kind.AT_HOME}


def test_shelter_staff_see_their_sites_requests_and_counts_only() -> None:
    """With a shelters claim, staff see that site's requests and check-in counts, no work list."""
    staff = Viewer(Audience.SHELTER_STAFF, None, frozenset({"kanda-koen", "fujimi"}),
                   frozenset({SPORTS_CENTER}))
    state, deltas = _seen(staff)
    assert "welfare_check" not in state and "at_home" not in state
    assert {r["site_id"] for r in state["supply_request"].values()} == {SPORTS_CENTER}
    assert {d[2]["site_id"] for d in deltas if d[0] is Kind.SUPPLY} == {SPORTS_CENTER}
    assert state["shelter"][SPORTS_CENTER]["registered"] == 110
    assert state["shelter"][SPORTS_CENTER]["household_needs"]["infant"] == 3
    assert "registered" not in state["shelter"][SAKURA]
    assert "鈴木 一郎" not in json.dumps([state, deltas], ensure_ascii=False)


def test_shelter_staff_without_a_shelters_claim_see_every_site_of_their_areas() -> None:
    """Without the claim, every site of the token's areas is the staff's."""
    staff = Viewer(Audience.SHELTER_STAFF, None, frozenset({"kanda-koen"}))
    state, _ = _seen(staff)
    assert {r["area_id"] for r in state["supply_request"].values()} == {"kanda-koen"}
    assert len(state["supply_request"]) == 2
    assert all("registered" in s for s in state["shelter"].values())


def test_the_public_sees_no_people_or_supplies_kind_and_no_check_in_counts() -> None:
    """The public view holds no at-home, work-list, supply or generator entity."""
    state, deltas = _seen(PUBLIC)
    assert set(state) == {"meta", "area", "order", "shelter", "message"}
    assert {d[0] for d in deltas} <= {Kind.AREA, Kind.SHELTER}
    for shelter in state["shelter"].values():
        assert set(shelter) == {"shelter_id", "name", "status", "area_id", "hazards"}


def test_examples_fold_into_every_people_kind() -> None:
    """The contract's examples produce each new kind."""
    cop = fold([example("people.at_home_reported"), example("people.welfare_checked"),
                example("supply.requested"), example("generator.registered")])
    for kind in (Kind.AT_HOME, Kind.WELFARE, Kind.SUPPLY, Kind.GENERATOR):
        assert cop.entities[kind], kind
