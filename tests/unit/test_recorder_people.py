"""The recorder's people and supplies projections: pure folds, order-independent."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from schemas.envelope import Envelope
from schemas.examples import example
from schemas.topics import qualified
from services.recorder.consumer import recorded_topics
from services.recorder.domain import (
    AT_HOME,
    GENERATORS,
    HOUSEHOLDS,
    PROJECTIONS_FOR,
    SUPPLY_REQUESTS,
    Projection,
)

T0 = datetime(2025, 8, 21, 5, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(event_type: str, seconds: float, **payload: Any) -> Envelope:
    """The example of ``event_type`` at ``seconds`` with a fresh id and ``payload`` changes."""
    base = example(event_type)
    return base.model_copy(update={
        "event_id": uuid.uuid4(), "occurred_at": at(seconds),
        # Validated, so an enum given as its value is the enum the decoder would give.
        "payload": type(base.payload).model_validate({**base.payload.model_dump(), **payload})})


def fold(projection: Projection[Any], events: Sequence[Envelope]) -> dict[Any, Any]:
    """Every row the events make, folded one event at a time in the given order."""
    rows: dict[Any, Any] = {}
    for e in events:
        for key in projection.keys(e):  # type: ignore[arg-type]
            rows[key] = projection.apply(rows.get(key), e, key)  # type: ignore[arg-type]
    return rows


def test_every_people_and_supplies_topic_is_recorded() -> None:
    """The recorder reads the new topics (shelters.updates carries the household events)."""
    topics = recorded_topics("t1")
    for name in ("shelters.updates", "people.athome", "supplies.requests", "generators"):
        assert qualified(name, "t1") in topics


def test_every_new_event_type_folds_into_a_projection() -> None:
    """Each people and supplies event type names rows of exactly one projection."""
    expected = {
        "shelter.household_checked_in": HOUSEHOLDS, "shelter.household_checked_out": HOUSEHOLDS,
        "people.at_home_reported": AT_HOME, "people.welfare_checked": AT_HOME,
        "supply.requested": SUPPLY_REQUESTS, "supply.assigned": SUPPLY_REQUESTS,
        "supply.dispatched": SUPPLY_REQUESTS, "supply.received": SUPPLY_REQUESTS,
        "supply.cancelled": SUPPLY_REQUESTS, "generator.registered": GENERATORS,
        "generator.status_reported": GENERATORS,
    }
    for event_type, projection in expected.items():
        assert PROJECTIONS_FOR[event_type] == (projection,)


def _household_story() -> list[Envelope]:
    checked_in = event("shelter.household_checked_in", 0)
    checked_out = event("shelter.household_checked_out", 60, shelter_id="e1310100006201",
                        household_code="7K3M9QXD", transferred_to=None)
    back_in = event("shelter.household_checked_in", 120, size=4, name="Smith-Jones")
    duplicate = checked_in.model_copy()
    return [checked_in, checked_out, back_in, duplicate]


@given(st.permutations(range(4)))
def test_a_household_that_left_and_came_back_is_in_whatever_the_order(
        order: list[int]) -> None:
    """Check-in, check-out, check-in again and a redelivery fold to the same row in any order."""
    story = _household_story()
    rows = fold(HOUSEHOLDS, [story[i] for i in order])
    assert list(rows) == [("e1310100006201", "7K3M9QXD")]
    row = rows[("e1310100006201", "7K3M9QXD")]
    assert (row.status, row.size, row.name) == ("in", 4, "Smith-Jones")
    assert (row.checked_in_at, row.checked_out_at) == (at(120), at(60))
    assert row.needs == ("infant", "language")
    assert row.last_event_id in {story[2].event_id, story[1].event_id}


def test_a_check_out_after_the_latest_check_in_leaves_the_household_out() -> None:
    """The check-out at the same instant as the check-in applies; the row keeps the size."""
    checked_in = event("shelter.household_checked_in", 0)
    out = event("shelter.household_checked_out", 0, shelter_id="e1310100006201",
                household_code="7K3M9QXD", transferred_to="e1310100007201")
    for order in ([checked_in, out], [out, checked_in]):
        row = fold(HOUSEHOLDS, order)[("e1310100006201", "7K3M9QXD")]
        assert (row.status, row.size, row.transferred_to) == ("out", 3, "e1310100007201")


def test_a_transfer_moves_the_household_between_two_rows() -> None:
    """The two halves of a transfer fold into the source's and the destination's rows."""
    source_in = event("shelter.household_checked_in", 0, shelter_id="e1310100007201")
    source_out = event("shelter.household_checked_out", 30)
    destination_in = event("shelter.household_checked_in", 30, household_code="2P8WQ4RT",
                           transferred_from="e1310100007201")
    rows = fold(HOUSEHOLDS, [source_in, destination_in, source_out])
    source = rows[("e1310100007201", "2P8WQ4RT")]
    destination = rows[("e1310100006201", "2P8WQ4RT")]
    assert (source.status, source.transferred_to) == ("out", "e1310100006201")
    assert (destination.status, destination.transferred_from) == ("in", "e1310100007201")


@given(st.permutations(range(3)))
def test_an_at_home_household_keeps_its_latest_report_and_welfare_check(
        order: list[int]) -> None:
    """A later report replaces the earlier one; the welfare check stays beside it."""
    first = event("people.at_home_reported", 0)
    later = event("people.at_home_reported", 50, size=3, needs=("water",))
    check = event("people.welfare_checked", 20)
    story = [first, later, check]
    rows = fold(AT_HOME, [story[i] for i in order])
    row = rows[(first.payload.household_id,)]
    assert (row.size, row.needs, row.area_id) == (3, ("water",), "kanda-koen")
    assert (row.welfare_outcome, row.welfare_checked_at) == ("needs_help", at(20))
    assert row.report_event_id == later.event_id
    assert row.contact == "03-0000-0000"


def test_a_welfare_check_before_its_report_makes_a_row_without_a_size() -> None:
    """A welfare check stored first gives a row in its area; the report fills it later."""
    check = event("people.welfare_checked", 20)
    row = fold(AT_HOME, [check])[(check.payload.household_id,)]
    assert (row.size, row.needs, row.area_id, row.note) == (None, (), "kanda-koen", "")


def _supply_story() -> list[Envelope]:
    steps = [("supply.requested", 0), ("supply.assigned", 60), ("supply.dispatched", 120),
             ("supply.received", 600)]
    return [event(t, s) for t, s in steps]


@given(st.permutations(range(4)))
def test_a_supply_request_is_received_with_every_step_time_in_any_order(
        order: list[int]) -> None:
    """The furthest step is the status; each step keeps its time; the request's details stay."""
    story = _supply_story()
    rows = fold(SUPPLY_REQUESTS, [story[i] for i in order])
    row = rows[(story[0].payload.request_id,)]
    assert (row.status, row.status_event_id) == ("received", story[3].event_id)
    assert (row.requested_at, row.assigned_at, row.dispatched_at, row.received_at) == (
        at(0), at(60), at(120), at(600))
    assert row.cancelled_at is None
    assert (row.site_id, row.urgency, row.assignee) == ("e1310100006201", "urgent",
                                                        "区役所 備蓄倉庫班")
    assert row.lines is not None and '"quantity": 600' in row.lines


def test_a_cancelled_request_is_cancelled_and_a_redelivery_changes_nothing() -> None:
    """Cancel after assign: cancelled; folding the same events again returns the same row."""
    requested, assigned = _supply_story()[:2]
    cancelled = event("supply.cancelled", 90, request_id=requested.payload.request_id)
    rows = fold(SUPPLY_REQUESTS, [requested, cancelled, assigned])
    row = rows[(requested.payload.request_id,)]
    assert (row.status, row.cancelled_at) == ("cancelled", at(90))
    key = (requested.payload.request_id,)
    for e in (requested, assigned, cancelled):
        assert SUPPLY_REQUESTS.apply(row, e, key) is row


@given(st.permutations(range(4)))
def test_a_generator_keeps_its_latest_registration_and_state(order: list[int]) -> None:
    """Registrations and status reports each keep their latest by event time."""
    story = [event("generator.registered", 0),
             event("generator.registered", 100, rated_kva=1.8),
             event("generator.status_reported", 50),
             event("generator.status_reported", 150, state="running", fuel_hours_left=2.0)]
    rows = fold(GENERATORS, [story[i] for i in order])
    row = rows[("kanda-tsukasa-gen-1",)]
    assert (row.rated_kva, row.owner, row.lat, row.fuel) == (
        1.8, "神田司町二丁目町会", 35.693, "gas_cartridge")
    assert (row.state, row.fuel_hours_left, row.state_at) == ("running", 2.0, at(150))


def test_a_status_before_the_registration_gives_a_row_without_an_owner() -> None:
    """A generator's state stored before its registration still shows; the owner comes later."""
    status = event("generator.status_reported", 10)
    row = fold(GENERATORS, [status])[("kanda-tsukasa-gen-1",)]
    assert (row.owner, row.state, row.reporter_team) == (None, "fuel_low", "神田司町二丁目町会")
