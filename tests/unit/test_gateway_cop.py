"""The gateway's pure core: COP reducer, per-role views, positions, history and resume."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.envelope import Envelope, new_event
from schemas.events import EVENT_CLASSES
from schemas.examples import EXAMPLES, example
from schemas.people import PERSONAL_FIELDS, HouseholdNeed
from schemas.region import load_region
from schemas.reports import ReportAccepted
from services.gateway.cop import COP, EXERCISE_KEPT, REPORTS_PER_AREA, Kind, RegionIndex
from services.gateway.errors import InvalidPosition
from services.gateway.hub import Hub, Resume
from services.gateway.positions import (
    Entry,
    History,
    Position,
    decode_position,
    encode_position,
    epoch_of,
    marker_of,
)
from services.gateway.reducer import reduce
from services.gateway.views import Audience, Viewer, view, view_delta, view_state

REGION = RegionIndex.from_region(load_region())
HQ = Viewer(Audience.HQ)
PUBLIC = Viewer(Audience.PUBLIC)


def fold(events: Iterable[Envelope], cop: COP | None = None) -> COP:
    """Fold events into a picture."""
    cop = cop or COP.empty(REGION)
    for event in events:
        cop, _ = reduce(cop, event)  # type: ignore[arg-type]
    return cop


def vary(event: Envelope, **payload: Any) -> Envelope:
    """A copy of ``event`` with a new id and payload changes."""
    body = {**event.payload.model_dump(mode="json"), **payload}
    return new_event(type(event), body, occurred_at=event.occurred_at, source=event.source)


def accepted(area: str, minutes: float, name: str = "佐藤 花子") -> ReportAccepted:
    """An accepted report in ``area`` at ``minutes`` past a fixed time."""
    base = example("report.accepted")
    body = base.payload.model_dump(mode="json")
    body.update(report_id=str(uuid.uuid4()), area_id=area)
    body["report"] = {**body["report"], "area_id": area,
                      "reporter": {"team": "team", "name": name}}
    return new_event(ReportAccepted, body, source="intake",
                     occurred_at=datetime(2025, 8, 21, tzinfo=UTC) + timedelta(minutes=minutes))


# --- the reducer ------------------------------------------------------------------------


def test_every_event_type_has_an_example_and_folds() -> None:
    """Every event type folds without error; the COP types each produce entities."""
    assert set(EXAMPLES) == set(EVENT_CLASSES)
    cop = fold(EXAMPLES.values())
    for kind in (Kind.REPORT, Kind.SHELTER, Kind.GAUGE, Kind.WARNING, Kind.QUAKE,
                 Kind.RECOMMENDATION, Kind.ORDER, Kind.MESSAGE):
        assert cop.entities[kind], kind


def test_order_sets_the_level_of_its_areas_and_lift_clears_it() -> None:
    """An issued order raises its areas to its level; lifting it clears them."""
    cop = fold([example("evacuation.order_issued")])
    assert cop.get(Kind.AREA, "kanda-koen")["level"] == 4  # type: ignore[index]
    assert cop.get(Kind.AREA, "izumibashi")["level"] is None  # type: ignore[index]
    cop = fold([example("evacuation.order_lifted")], cop)
    assert cop.get(Kind.AREA, "kanda-koen")["level"] is None  # type: ignore[index]


def exercised(event: Envelope, minutes: float = 0.0) -> Envelope:
    """A copy of ``event`` flagged exercise (a new id), ``minutes`` later."""
    return new_event(type(event), event.payload.model_dump(mode="json"), source=event.source,
                     occurred_at=event.occurred_at + timedelta(minutes=minutes),
                     exercise=True)


EXERCISED = ("evacuation.order_issued", "hazard.warning", "report.accepted",
             "evacuation.recommended", "broadcast.published", "shelter.status_changed")


def test_exercise_events_in_a_live_picture_reach_hq_only_and_drive_nothing() -> None:
    """Outside a drill, exercise events are HQ-only exercise entries: no order, level or banner."""
    events = [exercised(example(t)) for t in EXERCISED]
    cop = fold(events)
    assert cop.get(Kind.META, "cop") == {"exercise": False}
    for kind in (Kind.ORDER, Kind.WARNING, Kind.REPORT, Kind.RECOMMENDATION, Kind.MESSAGE,
                 Kind.SHELTER):
        assert not cop.entities[kind], kind
    assert fold([]).entities[Kind.AREA] == cop.entities[Kind.AREA]
    hq = view_state(cop, HQ)["exercise"]
    assert set(hq) == {str(e.event_id) for e in events}
    assert all(entry["exercise"] and entry["type"] in EXERCISED for entry in hq.values())
    assert "exercise" not in view_state(cop, PUBLIC)
    assert "exercise" not in view_state(cop, Viewer(Audience.FIELD))
    assert view_state(cop, PUBLIC)["meta"] == {"cop": {"exercise": False}}
    # Real traffic after them folds as if they had never been.
    real = [example(t) for t in EXERCISED]
    assert {k: v for k, v in fold(real, cop).entities.items() if k is not Kind.EXERCISE} == {
        k: v for k, v in fold(real).entities.items() if k is not Kind.EXERCISE}


def test_a_drill_picture_is_an_exercise_and_folds_exercise_events() -> None:
    """In a drill namespace the banner is on from the start and exercise events are the picture."""
    empty = COP.empty(REGION, drill=True)
    assert empty.get(Kind.META, "cop") == {"exercise": True}
    cop = fold([exercised(example("evacuation.order_issued"))], empty)
    assert cop.get(Kind.AREA, "kanda-koen")["level"] == 4  # type: ignore[index]
    assert not cop.entities[Kind.EXERCISE]


def test_exercise_entries_are_bounded_keeping_the_latest() -> None:
    """Only the latest EXERCISE_KEPT exercise events are kept, whatever the order."""
    base = example("hazard.gauge_reading")
    events = [exercised(base, minutes=m) for m in range(EXERCISE_KEPT + 10)]
    latest = {str(e.event_id) for e in events[10:]}
    assert set(fold(events).entities[Kind.EXERCISE]) == latest
    assert set(fold(reversed(events)).entities[Kind.EXERCISE]) == latest


def test_a_stale_order_version_never_revives_a_lifted_order() -> None:
    """Orders keep their highest version whatever the arrival order."""
    late = fold([example("evacuation.order_lifted"), example("evacuation.order_issued")])
    assert late.entities[Kind.ORDER][str(example("evacuation.order_issued").payload.order_id)][
        "status"] == "lifted"


def test_another_senders_cancellation_leaves_the_warning_in_the_picture() -> None:
    """A warning is keyed by its sender: a cancel of the same id by another is another warning."""
    issued = vary(example("hazard.warning"), sender="jma:気象庁本庁", action="issued")
    forged = vary(issued, sender="token:someone-else", action="cancelled")
    cop = fold([issued, forged])
    by_sender = {w["sender"]: w["in_force"] for w in cop.entities[Kind.WARNING].values()}
    assert by_sender == {"jma:気象庁本庁": True, "token:someone-else": False}
    own = fold([issued, vary(issued, action="cancelled")])
    assert [w["in_force"] for w in own.entities[Kind.WARNING].values()] == [False]


def test_recommendation_goes_pending_approved_ordered() -> None:
    """A recommendation is pending, approved by a command, then ordered by its order."""
    rec = example("evacuation.recommended")
    key = str(rec.payload.recommendation_id)  # type: ignore[attr-defined]
    cop = fold([rec])
    assert cop.entities[Kind.RECOMMENDATION][key]["status"] == "pending"
    cop = fold([example("evacuation.command")], cop)
    assert cop.entities[Kind.RECOMMENDATION][key]["status"] == "approved"
    cop = fold([example("evacuation.order_issued")], cop)
    assert cop.entities[Kind.RECOMMENDATION][key]["status"] == "ordered"


def test_duplicates_change_nothing() -> None:
    """Folding every event twice gives the same picture and no second deltas."""
    once = fold(EXAMPLES.values())
    twice = once
    for event in EXAMPLES.values():
        twice, deltas = reduce(twice, event)  # type: ignore[arg-type]
        assert deltas == ()
    assert twice.entities == once.entities


@settings(max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False))
def test_the_picture_does_not_depend_on_the_order_of_events(rng: random.Random) -> None:
    """Any interleaving of the same events folds to the same entities."""
    events = list(EXAMPLES.values()) + [accepted("kanda-koen", m) for m in range(5)]
    shuffled = events[:]
    rng.shuffle(shuffled)
    assert fold(shuffled).entities == fold(events).entities


def test_reports_are_bounded_per_area_keeping_the_latest() -> None:
    """Each area keeps its most recent reports; older ones are removed by a delta."""
    cop = fold(accepted("jimbocho", m) for m in range(REPORTS_PER_AREA))
    oldest = min(cop.entities[Kind.REPORT].values(), key=lambda r: r["occurred_at"])
    cop, deltas = reduce(cop, accepted("jimbocho", 10_000))
    assert len(cop.entities[Kind.REPORT]) == REPORTS_PER_AREA
    assert any(d.key == oldest["report_id"] and d.value is None for d in deltas)
    again, deltas = reduce(cop, accepted("jimbocho", -1))  # older than all kept
    assert deltas == () and again is cop


# --- views ------------------------------------------------------------------------------

PII = "PII" + "x" * 6
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")),
                min_size=1, max_size=30)


def _with_pii(event: Envelope, marker: str) -> Envelope:
    """``event`` with every person name, team, description and note replaced by ``marker``."""
    document = json.loads(event.model_dump_json())

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                # A reporter's team and name, and every free text of the field.
                personal = k in ("team", "description", "note") or (k == "name"
                                                                   and "team" in node)
                if personal and isinstance(v, str):
                    out[k] = marker
                elif k == "casualties" and isinstance(v, dict):
                    out[k] = {c: 7_919 for c in v}
                else:
                    out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    marked = walk(document)
    for name in PERSONAL_FIELDS.get(event.type, ()):
        marked["payload"][name] = marker  # contact, address, notes, household names
    if event.type == "shelter.status_changed":
        # The check-in counts are HQ's and the shelter staff's, never the public's.
        marked["payload"].update(registered=7_919, registered_households=7_919,
                                 unregistered=7_919,
                                 household_needs=dict.fromkeys(HouseholdNeed, 7_919))
    return type(event).model_validate(marked)


@settings(max_examples=40, deadline=None)
@given(suffix=_text, types=st.lists(st.sampled_from(sorted(EXAMPLES)), min_size=1, unique=True))
def test_public_view_never_shows_personal_data(suffix: str, types: list[str]) -> None:
    """Reporter names, teams, free text, casualty figures, personal fields, check-in counts
    and every people or supplies kind never reach the public view."""
    marker = PII + suffix.replace('"', "").replace("\\", "")
    cop = COP.empty(REGION)
    seen: list[Any] = []
    for event_type in types:
        cop, deltas = reduce(cop, _with_pii(EXAMPLES[event_type], marker))  # type: ignore[arg-type]
        seen.extend(view_delta(d, PUBLIC) for d in deltas)
    public = json.dumps([view_state(cop, PUBLIC), seen], ensure_ascii=False)
    assert PII not in public and "7919" not in public
    for field in ("reporter", "casualties", "description", "last_reported_by", "rationale",
                  "registered", "registered_households", "unregistered", "household_needs",
                  *(f for fields in PERSONAL_FIELDS.values() for f in fields if f != "name")):
        assert f'"{field}"' not in public
    for kind in (Kind.AT_HOME, Kind.WELFARE, Kind.SUPPLY, Kind.GENERATOR):
        assert kind.value not in view_state(cop, PUBLIC)
        assert all(d is None or d[0] is not kind for d in seen)


def test_hq_sees_names_but_field_teams_do_not_and_only_their_areas() -> None:
    """HQ keeps the reporter's name; a field team sees its areas' reports without it."""
    cop = fold([accepted("kanda-koen", 1), accepted("jimbocho", 2)])
    hq = view_state(cop, HQ)["report"]
    assert {r["reporter"]["name"] for r in hq.values()} == {"佐藤 花子"}
    field = view_state(cop, Viewer(Audience.FIELD, None, frozenset({"jimbocho"})))
    assert [r["area_id"] for r in field["report"].values()] == ["jimbocho"]
    assert all(r["reporter"] == {"team": "team"} for r in field["report"].values())
    assert "recommendation" not in field and "order" in field


def test_area_filter_hides_other_areas_and_removes_entities_that_leave() -> None:
    """A filtered viewer sees only its areas; an order that leaves them is removed."""
    issued = example("evacuation.order_issued")
    cop, _ = reduce(fold([]), issued)  # type: ignore[arg-type]
    viewer = Viewer(Audience.PUBLIC, frozenset({"manseibashi"}))
    assert view(cop, viewer)["order"]
    moved = vary(example("evacuation.order_updated"), area_ids=["izumibashi"])
    cop, deltas = reduce(cop, moved)  # type: ignore[arg-type]
    order_delta = next(d for d in deltas if d.kind is Kind.ORDER)
    assert view(order_delta, viewer) == (Kind.ORDER, order_delta.key, None)
    assert view(order_delta, Viewer(Audience.PUBLIC, frozenset({"fujimi"}))) is None


# --- positions and resume ---------------------------------------------------------------


def test_positions_round_trip_and_garbage_is_refused() -> None:
    """A position encodes compactly and decodes to itself; garbage is InvalidPosition."""
    position = Position(b"12345678", {("reports", 0): 5, ("evacuation.orders", 3): 1 << 40})
    text = encode_position(position)
    assert decode_position(text) == position and len(text) < 40
    for bad in ("", "!!!", text[:-3], "A" * 5000):
        with pytest.raises(InvalidPosition):
            decode_position(bad)


def test_epoch_changes_with_the_log_and_ignores_unread_partitions() -> None:
    """A different first record changes the epoch; partitions not read do not count."""
    markers = {("reports", 0): marker_of(0, 1000, b"k", b"v"),
               ("reports", 1): marker_of(0, 1000, b"k", b"w")}
    read = [("reports", 0)]
    assert epoch_of("ns", markers, read) == epoch_of("ns", {**markers, ("reports", 1): b"x"},
                                                     read)
    assert epoch_of("ns", markers, read) != epoch_of("other", markers, read)
    rehydrated = {**markers, ("reports", 0): marker_of(0, 2000, b"k", b"v")}
    assert epoch_of("ns", markers, read) != epoch_of("ns", rehydrated, read)
    assert epoch_of("ns", {}, read) is None


def test_history_serves_what_was_missed_until_it_is_evicted() -> None:
    """History yields the entries after a position, and says when they were evicted."""
    history: History[str] = History(limit=3)
    for offset in range(5):
        history.append(Entry(("reports", 0), offset, f"p{offset}", f"d{offset}"))
    assert history.covers(Position(b"", {("reports", 0): 2}))
    assert [e.delta for e in history.since(Position(b"", {("reports", 0): 3}))] == ["d3", "d4"]
    assert not history.covers(Position(b"", {("reports", 0): 1}))


def _hub_with(events: list[Envelope]) -> Hub:
    hub = Hub(COP.empty(REGION), "ns", [("reports", 0), ("reports", 1)], history_size=100)
    hub.set_marker(("reports", 0), b"m0000000")
    hub.set_marker(("reports", 1), b"m1111111")
    for offset, event in enumerate(events):
        hub.apply(("reports", offset % 2), offset // 2, event)  # type: ignore[arg-type]
    return hub


def test_resume_from_history_or_snapshot() -> None:
    """A known position resumes exactly; another epoch, an evicted or a future one do not."""
    asyncio.set_event_loop(asyncio.new_event_loop())
    hub = _hub_with([accepted("kanda-koen", m) for m in range(6)])
    position = decode_position(hub.history.entries[2].position)
    assert hub.check(position) is Resume.EXACT
    assert hub.history.count_since(position) == 3
    assert hub.check(Position(b"otherepo", position.offsets)) is Resume.SNAPSHOT
    ahead = Position(position.epoch, {**position.offsets, ("reports", 0): 99})
    assert hub.check(ahead) is Resume.BEHIND
    small = _hub_with([accepted("kanda-koen", m) for m in range(6)])
    small.history = History(limit=1)
    for entry in hub.history.entries:
        small.history.append(entry)
    assert small.check(position) is Resume.SNAPSHOT
    hub.set_marker(("reports", 0), b"newlog00")  # the log was replaced
    assert hub.check(position) is Resume.SNAPSHOT
