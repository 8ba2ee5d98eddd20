"""Closing a shelter: which households intake checks out, and that the shelter tracker,
which counts a close as everyone checking out, is not moved by those check-outs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

from schemas.envelope import new_event
from schemas.people import HouseholdCheckedIn, HouseholdCheckedOut
from schemas.region import load_region
from schemas.shelters import ShelterClosed, ShelterOpened
from schemas.topics import LIVE
from services.intake.households import closing_check_outs
from services.intake.store import HouseholdRow
from services.shelter_tracker.domain import Outcome, ShelterUpdate, Tracked, decide, shelter_sites

NOW = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)
SITES = shelter_sites(load_region("testville"))
SCHOOL = SITES["tv-school"]
CLOSER = {"team": "closing team"}


def close(at: datetime = NOW, *, exercise: bool = False,
          event_id: str = "0b9f0e1c-6a4d-4d38-9b7e-1d2c3b4a5f60") -> ShelterClosed:
    return new_event(ShelterClosed, {"shelter_id": SCHOOL.shelter_id, "stage": "closed",
                                     "reported_by": CLOSER},
                     occurred_at=at, source="intake", recorded_at=at, exercise=exercise,
                     event_id=UUID(event_id))


def row(code: str, *, at: datetime = NOW - timedelta(hours=1), shelter: str = "tv-school",
        checked_in: bool = True) -> HouseholdRow:
    return HouseholdRow(household_code=code, shelter_id=shelter, size=3, needs=("infant",),
                        language=None, name="山田", contact=None, checked_in=checked_in,
                        checked_in_at=at)


def test_every_household_in_at_the_close_is_checked_out_at_its_time() -> None:
    """Check-outs by the closing staff at the close's time, caused by it; rows out."""
    the_close = close()
    change = closing_check_outs([row("BBBB0002"), row("AAAA0001")], the_close,
                                namespace=LIVE, recorded_at=NOW)
    assert [r.household_code for r in change.rows] == ["AAAA0001", "BBBB0002"]
    assert all(not r.checked_in and r.checked_out_at == NOW for r in change.rows)
    assert all(r.name == "山田" and r.size == 3 for r in change.rows)
    for event, code in zip(change.events, ("AAAA0001", "BBBB0002"), strict=True):
        assert isinstance(event, HouseholdCheckedOut)
        assert event.payload.household_code == code
        assert event.payload.shelter_id == "tv-school"
        assert event.payload.reported_by.team == "closing team"
        assert event.payload.transferred_to is None
        assert event.occurred_at == NOW
        assert event.causation_id == the_close.event_id
        assert event.correlation_id == the_close.correlation_id


def test_check_out_ids_derive_from_the_close_and_the_code() -> None:
    """The same close gives the same ids (a resend writes nothing twice); another close,
    another namespace or another household, other ids."""
    def ids(c: ShelterClosed, namespace: str = LIVE) -> list[str]:
        change = closing_check_outs([row("AAAA0001"), row("BBBB0002")], c,
                                    namespace=namespace, recorded_at=NOW)
        return [str(e.event_id) for e in change.events]

    first = ids(close())
    assert first == ids(close())
    assert len(set(first)) == 2
    other = ids(close(event_id="1c8a7d6e-5b4f-4e3d-8c2b-0a1f2e3d4c5b"))
    assert not set(first) & set(other)
    assert not set(first) & set(ids(close(), "drill-1"))


def test_households_not_in_at_the_close_stay_as_they_are() -> None:
    """Out already, at another shelter, or checked in after the close's time: untouched
    (the tracker, too, counts a household checked in later than the close as in)."""
    later = row("CCCC0003", at=NOW + timedelta(minutes=1))
    change = closing_check_outs(
        [row("AAAA0001", checked_in=False), row("BBBB0002", shelter="tv-gym"), later,
         row("DDDD0004", at=NOW)], close(), namespace=LIVE, recorded_at=NOW)
    assert [r.household_code for r in change.rows] == ["DDDD0004"]
    assert [e.payload.household_code for e in change.events] == ["DDDD0004"]


def test_a_drill_close_writes_drill_check_outs() -> None:
    """The exercise flag is inherited from the close."""
    change = closing_check_outs([row("AAAA0001")], close(exercise=True), namespace="drill-1",
                                recorded_at=NOW)
    assert [e.exercise for e in change.events] == [True]


def _fold(events: list[ShelterUpdate]) -> tuple[Tracked, list[Outcome]]:
    tracked, outcomes = Tracked(), []
    for event in events:
        decision = decide(tracked, event, SCHOOL, recorded_at=NOW)
        outcomes.append(decision.outcome)
        tracked = decision.tracked
    return tracked, outcomes


def test_the_check_outs_of_a_close_change_nothing_for_the_tracker() -> None:
    """A close followed by its check-outs gives the same state as the close alone, and
    each check-out is folded without a new state to publish."""
    opened = new_event(ShelterOpened, {"shelter_id": "tv-school", "reported_by": CLOSER},
                       occurred_at=NOW - timedelta(hours=2), source="intake",
                       recorded_at=NOW)
    arrivals = [new_event(HouseholdCheckedIn,
                          {"shelter_id": "tv-school", "household_code": code, "size": size,
                           "reported_by": {"team": "desk"}},
                          occurred_at=NOW - timedelta(minutes=30 + size), source="intake",
                          recorded_at=NOW)
                for code, size in (("AAAA0001", 3), ("BBBB0002", 2))]
    the_close = close()
    rows = [replace(row(a.payload.household_code, at=a.occurred_at), size=a.payload.size)
            for a in arrivals]
    check_outs = list(closing_check_outs(rows, the_close, namespace=LIVE,
                                         recorded_at=NOW).events)
    assert len(check_outs) == 2

    alone, _ = _fold([opened, *arrivals, the_close])
    assert alone.state is not None and alone.state.registered == 0
    assert alone.state.status == "closed"
    both, outcomes = _fold([opened, *arrivals, the_close, *check_outs])
    assert both.state == alone.state
    assert outcomes[-2:] == [Outcome.UNCHANGED, Outcome.UNCHANGED]
    # In whichever order they arrive, the state is the close's.
    reversed_order, _ = _fold([opened, *arrivals, *check_outs, the_close])
    assert reversed_order.state is not None
    assert reversed_order.state.model_dump(exclude={"version", "previous_status"}) == \
        alone.state.model_dump(exclude={"version", "previous_status"})
