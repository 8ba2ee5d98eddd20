"""The drill log format and the pure replay core: times, ids, rewriting, HQ matching."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.envelope import Envelope, derive_id, new_event
from schemas.evacuation import EvacuationCommand, EvacuationRecommended
from schemas.events import Event, decode_event, encode_event
from schemas.examples import example
from schemas.hazards import GaugeReading, HazardWarning
from schemas.reports import ReportAccepted, ReportSubmitted
from schemas.topics import route
from services.drill.errors import InvalidDrillLog, UnsupportedLogVersion
from services.drill.hq import (
    CommandMatcher,
    Resolved,
    Unresolvable,
    mark_operator,
    rewrite_command,
)
from services.drill.logformat import (
    DrillLog,
    RecordedFrom,
    build_log,
    parse_log,
    read_log,
    write_log,
)
from services.drill.replay import (
    IdMap,
    TimeMode,
    event_times,
    plan,
    prepare,
    render,
    send_offsets,
)
from sonae.tools.build_heavy_rain import OUTPUT as HEAVY_RAIN

T0 = datetime(2025, 8, 21, 5, 0, tzinfo=UTC)
ANCHOR = datetime(2030, 1, 1, 0, 0, tzinfo=UTC)
SCENARIO = RecordedFrom(kind="scenario", generator="tests")


def gauge(minutes: float, level: float = 3.0) -> GaugeReading:
    when = T0 + timedelta(minutes=minutes)
    return new_event(GaugeReading, {"gauge_id": "kandagawa-ochanomizu", "level_m": level,
                                    "observed_at": when}, occurred_at=when, source="gauge-feed")


def report_pair(minutes: float, area: str | None = "jimbocho") -> tuple[ReportSubmitted,
                                                                        ReportAccepted]:
    when = T0 + timedelta(minutes=minutes)
    body = {"client_report_id": f"c-{minutes}", "category": "flooding", "severity": 4,
            "area_id": area, "location": {"lat": 35.6955, "lon": 139.7575},
            "description": "冠水", "reporter": {"team": "防災会"}}
    submitted = new_event(ReportSubmitted, body, occurred_at=when, source="intake")
    accepted = new_event(ReportAccepted, {
        "report_id": uuid4(), "submitted_event_id": submitted.event_id, "report": body,
        "outside_region": area is None, "area_id": area,
    }, occurred_at=when, source="intake", cause=submitted)
    return submitted, accepted


def warning(minutes: float) -> HazardWarning:
    when = T0 + timedelta(minutes=minutes)
    return new_event(HazardWarning, {
        "warning_id": "w-1", "kind": "landslide_alert", "name": "土砂災害警戒情報",
        "hazard": "landslide", "alert_level_equivalent": 4, "area_ids": ["fujimi"],
        "issued_at": when, "expires_at": when + timedelta(hours=6), "source": "jma",
    }, occurred_at=when, source="jma-feed")


def as_events(*events: Envelope) -> list[Event]:
    return [decode_event(encode_event(e)) for e in events]


# --- times ---------------------------------------------------------------------------


def test_send_offsets_divide_the_recorded_gaps_by_the_speed() -> None:
    """At 60x, events an hour apart are sent a minute apart; at max speed all at once."""
    times = [T0, T0 + timedelta(minutes=30), T0 + timedelta(hours=1)]
    assert send_offsets(times, 60) == [0.0, 30.0, 60.0]
    assert send_offsets(times, 0.5) == [0.0, 3600.0, 7200.0]
    assert send_offsets(times, None) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="positive"):
        send_offsets(times, 0)


def test_shift_mode_moves_the_first_event_to_the_anchor_and_keeps_the_gaps() -> None:
    """Shift keeps event-time gaps whatever the speed, so time-window rules decide the same."""
    times = [T0, T0 + timedelta(minutes=10), T0 + timedelta(hours=2)]
    for speed in (1.0, 60.0, None):
        shifted = event_times(times, anchor=ANCHOR, speed=speed, mode=TimeMode.SHIFT)
        assert shifted == [ANCHOR, ANCHOR + timedelta(minutes=10), ANCHOR + timedelta(hours=2)]


def test_scale_mode_divides_event_time_gaps_and_orders_max_speed_by_microseconds() -> None:
    """Scale makes event time follow the wall clock; at max speed all is 'now', in order."""
    times = [T0, T0, T0 + timedelta(hours=1)]
    assert event_times(times, anchor=ANCHOR, speed=60, mode=TimeMode.SCALE) == [
        ANCHOR, ANCHOR, ANCHOR + timedelta(minutes=1)]
    assert event_times(times, anchor=ANCHOR, speed=None, mode=TimeMode.SCALE) == [
        ANCHOR, ANCHOR + timedelta(microseconds=1), ANCHOR + timedelta(microseconds=2)]


@given(st.lists(st.integers(min_value=0, max_value=10_000_000), min_size=1, max_size=50),
       st.sampled_from([None, 0.25, 1.0, 60.0, 3600.0]), st.sampled_from(list(TimeMode)))
def test_replayed_times_keep_event_time_order(seconds: list[int], speed: float | None,
                                              mode: TimeMode) -> None:
    """Whatever the speed and mode, replayed event times never reorder the log."""
    times = sorted(T0 + timedelta(seconds=s) for s in seconds)
    new = event_times(times, anchor=ANCHOR, speed=speed, mode=mode)
    assert new[0] == ANCHOR
    assert new == sorted(new)
    offsets = send_offsets(times, speed)
    assert offsets == sorted(offsets)


def test_a_naive_anchor_is_refused() -> None:
    """An anchor without a timezone would mean another instant on every machine."""
    with pytest.raises(ValueError, match="timezone"):
        event_times([T0], anchor=datetime(2030, 1, 1), speed=None, mode=TimeMode.SHIFT)


# --- ids -----------------------------------------------------------------------------


def test_id_map_equals_derive_id_with_the_drill_parts() -> None:
    """The fast id map is exactly derive_id("drill", namespace[, salt], original)."""
    original = uuid4()
    assert IdMap("drill.a")(original) == derive_id("drill", "drill.a", original)
    assert IdMap("drill.a", "run-2")(original) == derive_id("drill", "drill.a", "run-2", original)
    assert IdMap("drill.a")(original) != IdMap("drill.b")(original)
    assert IdMap("drill.a")(original).version == 5


def test_rendering_remaps_ids_shifts_times_and_forces_exercise() -> None:
    """Each input becomes a new event: derived id, remapped chain, shifted times, exercise."""
    submitted, accepted = report_pair(5)
    events = as_events(gauge(0), submitted, accepted, warning(10))
    ids = IdMap("drill.x")
    steps = plan(events, prepare(events), namespace="drill.x", ids=ids, anchor=ANCHOR,
                 speed=None)
    rendered = [decode_event(render(s.template, ids, s.delta, "2030-01-01T00:00:09Z"))
                for s in steps if s.template is not None]
    for original, new, step in zip(events, rendered, steps, strict=True):
        assert new.event_id == derive_id("drill", "drill.x", original.event_id) \
            == UUID(step.event_id)
        assert new.correlation_id == ids(original.correlation_id)
        assert new.exercise is True
        assert new.occurred_at == ANCHOR + (original.occurred_at - T0) == step.occurred_at
        assert new.recorded_at == datetime(2030, 1, 1, 0, 0, 9, tzinfo=UTC)
        assert new.payload.model_dump(exclude={"observed_at", "issued_at", "expires_at",
                                               "report_id", "submitted_event_id"}) \
            == original.payload.model_dump(exclude={"observed_at", "issued_at", "expires_at",
                                                    "report_id", "submitted_event_id"})
        # Topic and key are what the catalogue routes the rewritten event to.
        routed = route(new, "drill.x")
        assert (routed.topic, routed.key) == (step.topic, step.key)
    new_accepted = rendered[2]
    assert isinstance(new_accepted, ReportAccepted)
    assert new_accepted.causation_id == rendered[1].event_id  # the chain stays intact
    assert new_accepted.payload.submitted_event_id == rendered[1].event_id
    new_gauge, new_warning = rendered[0], rendered[3]
    assert isinstance(new_gauge, GaugeReading) and isinstance(new_warning, HazardWarning)
    assert new_gauge.payload.observed_at == new_gauge.occurred_at
    assert new_warning.payload.expires_at == new_warning.occurred_at + timedelta(hours=6)


def test_a_key_that_is_a_remapped_id_is_remapped_too() -> None:
    """A report accepted outside every area is keyed by its (remapped) report id."""
    submitted, accepted = report_pair(1, area=None)
    events = as_events(submitted, accepted)
    ids = IdMap("drill.k")
    steps = plan(events, prepare(events), namespace="drill.k", ids=ids, anchor=ANCHOR,
                 speed=None)
    step = steps[1]
    assert step.template is not None
    new = decode_event(render(step.template, ids, step.delta, "2030-01-01T00:00:00Z"))
    assert step.key == route(new, "drill.k").key == str(ids(accepted.payload.report_id)).encode()
    # The submission's key is the device's id (a string field): never remapped.
    assert steps[0].key == b"c-1"


# --- the log format ------------------------------------------------------------------


def test_log_round_trips_through_write_and_read(tmp_path: Path) -> None:
    """A written log reads back identical: header, inputs and references."""
    submitted, accepted = report_pair(3)
    log = build_log([gauge(1), submitted, accepted, gauge(0)], region="chiyoda",
                    recorded_from=SCENARIO, since=T0, until=T0 + timedelta(hours=1))
    path = tmp_path / "drill.jsonl"
    with path.open("wb") as out:
        assert write_log(log, out) == 4
    back = read_log(path)
    assert back == log
    assert [e.occurred_at for e in back.inputs] == sorted(e.occurred_at for e in back.inputs)
    header = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert header["format"] == "sonae-drill" and header["version"] == 1
    assert header["count"] == 4 and header["inputs"] == 4 and header["references"] == 0


def _text(log: DrillLog) -> list[str]:
    out = io.BytesIO()
    write_log(log, out)
    return out.getvalue().decode("utf-8").splitlines()


def test_a_newer_format_version_is_refused_with_a_clear_error() -> None:
    """A log from a newer Sonae says which version it is and what this one reads."""
    lines = _text(build_log([gauge(0)], region="chiyoda", recorded_from=SCENARIO))
    header = json.loads(lines[0])
    header["version"] = 2
    with pytest.raises(UnsupportedLogVersion, match=r"version 2 is newer.*up to 1"):
        parse_log([json.dumps(header), *lines[1:]], name="x.jsonl")
    header["version"] = "one"
    with pytest.raises(UnsupportedLogVersion, match="positive integer"):
        parse_log([json.dumps(header), *lines[1:]], name="x.jsonl")


def test_a_file_that_is_not_a_drill_log_is_refused() -> None:
    """An events export without the header is not mistaken for a drill log."""
    with pytest.raises(InvalidDrillLog, match="not a Sonae drill log"):
        parse_log([encode_event(gauge(0)).decode()], name="export.jsonl")
    with pytest.raises(InvalidDrillLog, match="empty file"):
        parse_log([], name="empty.jsonl")


def test_a_truncated_log_and_a_bad_line_name_the_problem() -> None:
    """The count catches truncation; a bad event names its line and field."""
    lines = _text(build_log([gauge(0), gauge(1)], region="chiyoda", recorded_from=SCENARIO))
    with pytest.raises(InvalidDrillLog, match=r"declares 2 events.*has 1"):
        parse_log(lines[:2], name="d.jsonl")
    bad = json.loads(lines[2])
    bad["payload"]["level_m"] = "high"
    with pytest.raises(InvalidDrillLog, match=r"d.jsonl line 3: payload.level_m"):
        parse_log([lines[0], lines[1], json.dumps(bad)], name="d.jsonl")


def test_an_event_type_that_is_neither_input_nor_reference_is_refused() -> None:
    """Derived state (a shelter tracker output) has no place in a drill log."""
    lines = _text(build_log([gauge(0)], region="chiyoda", recorded_from=SCENARIO))
    state = encode_event(example("shelter.status_changed")).decode()
    with pytest.raises(InvalidDrillLog, match=r"line 3: event type shelter\.status_changed"):
        parse_log([lines[0], lines[1], state], name="d.jsonl")


def test_old_event_schema_versions_in_a_log_are_upcast() -> None:
    """A version-1 report.submitted line reads as the current version."""
    lines = _text(build_log([gauge(0)], region="chiyoda", recorded_from=SCENARIO))
    v1 = {
        "event_id": str(uuid4()), "type": "report.submitted", "schema_version": 1,
        "occurred_at": "2025-08-21T05:03:00Z", "recorded_at": "2025-08-21T05:03:02Z",
        "source": "intake", "correlation_id": None, "causation_id": None, "exercise": False,
        "payload": {"client_report_id": "old-1", "category": "flooding", "severity": 4,
                    "lat": 35.69, "lon": 139.76, "reporter": {"team": "防災会"}},
    }
    v1["correlation_id"] = v1["event_id"]
    header = json.loads(lines[0])
    header.update(count=2, inputs=2)
    log = parse_log([json.dumps(header), lines[1], json.dumps(v1)], name="old.jsonl")
    upcast = next(e for e in log.inputs if isinstance(e, ReportSubmitted))
    assert upcast.schema_version == 2
    assert upcast.payload.location is not None and upcast.payload.location.lat == 35.69


def test_the_shipped_scenario_is_a_valid_log_with_matching_references() -> None:
    """The heavy-rain scenario reads, and every recorded command's recommendation is there."""
    log = read_log(HEAVY_RAIN)
    assert log.header.region == "chiyoda" and log.header.recorded_from.kind == "scenario"
    recommended = {e.payload.recommendation_id for e in log.references
                   if isinstance(e, EvacuationRecommended)}
    commands = [e for e in log.inputs if isinstance(e, EvacuationCommand)]
    assert commands and all(c.payload.recommendation_id in recommended for c in commands)
    types = {e.type for e in log.inputs}
    assert {"hazard.gauge_reading", "hazard.warning", "report.accepted", "shelter.opened",
            "shelter.occupancy_reported", "evacuation.command"} <= types


# --- HQ command matching -------------------------------------------------------------


def _scenario_matcher(namespace: str) -> tuple[DrillLog, CommandMatcher, IdMap]:
    log = read_log(HEAVY_RAIN)
    ids = IdMap(namespace)
    return log, CommandMatcher(log.references, ids), ids


def _replayed(recorded: EvacuationRecommended, ids: IdMap, **changes: object
              ) -> EvacuationRecommended:
    """The recommendation as a replayed run would make it: new ids, mapped evidence."""
    payload = recorded.payload.model_dump()
    payload.update(recommendation_id=uuid4(),
                   evidence_event_ids=[ids(e) for e in recorded.payload.evidence_event_ids])
    payload.update(changes)
    return new_event(EvacuationRecommended, payload, occurred_at=ANCHOR, source="evac",
                     exercise=True)


def test_a_recorded_approval_is_matched_by_signature_and_mapped_evidence() -> None:
    """The command gets the replayed recommendation's id, a marked operator, its cause."""
    log, matcher, ids = _scenario_matcher("drill.m")
    command = next(e for e in log.inputs if isinstance(e, EvacuationCommand))
    assert command.payload.recommendation_id is not None
    assert matcher.resolve(command) is None  # nothing replayed yet: keep waiting
    recorded = next(e for e in log.references if isinstance(e, EvacuationRecommended)
                    and e.payload.recommendation_id == command.payload.recommendation_id)
    decoy = _replayed(recorded, ids, evidence_event_ids=[uuid4()])
    match = _replayed(recorded, ids)
    matcher.observe(decoy)
    matcher.observe(match)
    resolved = matcher.resolve(command)
    assert isinstance(resolved, Resolved)
    assert resolved.recommendation_id == match.payload.recommendation_id
    sent = rewrite_command(command, resolved, event_id=ids(command.event_id), ids=ids,
                           occurred_at=ANCHOR, recorded_at=ANCHOR)
    assert sent.payload.recommendation_id == match.payload.recommendation_id
    assert sent.payload.operator == mark_operator(command.payload.operator)
    assert sent.payload.operator.startswith("drill-replay:")
    assert sent.payload.operator_role == command.payload.operator_role
    assert sent.exercise is True and sent.causation_id == match.event_id


def test_without_matching_evidence_a_candidate_is_taken_only_when_waiting_is_over() -> None:
    """A same-signature recommendation with other evidence is a last resort."""
    log, matcher, ids = _scenario_matcher("drill.f")
    command = next(e for e in log.inputs if isinstance(e, EvacuationCommand))
    recorded = next(e for e in log.references if isinstance(e, EvacuationRecommended)
                    and e.payload.recommendation_id == command.payload.recommendation_id)
    partial = _replayed(recorded, ids, evidence_event_ids=[
        *(ids(e) for e in recorded.payload.evidence_event_ids), uuid4()])
    matcher.observe(partial)
    assert matcher.resolve(command) is None
    final = matcher.resolve(command, final=True)
    assert isinstance(final, Resolved)
    assert final.recommendation_id == partial.payload.recommendation_id


def test_a_command_whose_recommendation_is_not_in_the_log_is_unresolvable() -> None:
    """A command answering a recommendation from before the window cannot be replayed."""
    _, matcher, _ = _scenario_matcher("drill.u")
    stray = new_event(EvacuationCommand, {"action": "approve", "operator": "hq-1",
                                          "operator_role": "hq", "recommendation_id": uuid4()},
                      occurred_at=T0, source="gateway")
    assert isinstance(matcher.resolve(stray), Unresolvable)


def test_a_lift_is_matched_through_the_order_its_recommendation_produced() -> None:
    """A manual lift of a recorded order names the order the replay issued for it."""
    log, matcher, ids = _scenario_matcher("drill.o")
    from schemas.evacuation import OrderIssued  # local: only this test builds orders

    recorded_order = next(e for e in log.references if isinstance(e, OrderIssued))
    recorded_rec = next(e for e in log.references if isinstance(e, EvacuationRecommended)
                        and e.payload.recommendation_id == recorded_order.payload.recommendation_id)
    replayed_rec = _replayed(recorded_rec, ids)
    matcher.observe(replayed_rec)
    order = recorded_order.payload.model_dump()
    order.update(order_id=uuid4(), recommendation_id=replayed_rec.payload.recommendation_id)
    replayed_order = new_event(OrderIssued, order, occurred_at=ANCHOR, source="evac",
                               cause=replayed_rec)
    matcher.observe(replayed_order)
    lift = new_event(EvacuationCommand, {
        "action": "lift", "operator": "hq-1", "operator_role": "hq",
        "order_id": recorded_order.payload.order_id, "reason": "点検の結果、異常なし。",
    }, occurred_at=T0, source="gateway")
    resolved = matcher.resolve(lift)
    assert isinstance(resolved, Resolved)
    assert resolved.order_id == replayed_order.payload.order_id
    sent = rewrite_command(lift, resolved, event_id=ids(lift.event_id), ids=ids,
                           occurred_at=ANCHOR, recorded_at=ANCHOR)
    assert sent.payload.order_id == replayed_order.payload.order_id
    assert isinstance(UUID(str(sent.event_id)), UUID)
