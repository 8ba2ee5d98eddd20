"""The recorder's pure rules: event rows and projection reducers."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.broadcasts import BroadcastDelivered, BroadcastFailed, BroadcastRequested
from schemas.common import utc_now
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope, derive_id
from schemas.evacuation import OrderIssued, OrderLifted, OrderUpdated
from schemas.events import encode_event
from schemas.examples import example
from schemas.reports import ReportAccepted, ReportRejected, ReportSubmitted
from schemas.shelters import ShelterStatus, ShelterStatusChanged
from services.recorder.domain import (
    BROADCASTS,
    PROJECTIONS,
    REPORTS,
    BroadcastRow,
    OrderRow,
    ReportRow,
    apply_broadcast,
    apply_order,
    apply_report,
    apply_shelter,
    broadcast_keys,
    dead_letter_row,
    event_row,
    key_text,
    report_keys,
    report_submission,
)
from services.recorder.errors import NotAnEvent

T0 = datetime(2025, 8, 21, 5, 0, tzinfo=UTC)
E = TypeVar("E", bound=Envelope)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def variant(base: E, *, minutes: float, event_id: uuid.UUID | None = None,
            **payload: Any) -> E:
    """A copy of an example event with a new id, event time and payload fields."""
    return base.model_copy(update={
        "event_id": event_id or uuid.uuid4(),
        "occurred_at": at(minutes),
        "payload": base.payload.model_copy(update=payload),
    })


def submitted(minutes: float = 0, **payload: Any) -> ReportSubmitted:
    event = example("report.submitted")
    assert isinstance(event, ReportSubmitted)
    return variant(event, minutes=minutes, **payload)


def accepted(sub: ReportSubmitted, minutes: float = 1, **payload: Any) -> ReportAccepted:
    event = example("report.accepted")
    assert isinstance(event, ReportAccepted)
    fields = {"report_id": report_id_of(sub), "submitted_event_id": sub.event_id,
              "report": sub.payload, **payload}
    return variant(event, minutes=minutes, **fields)


def rejected(sub: ReportSubmitted, minutes: float = 1) -> ReportRejected:
    event = example("report.rejected")
    assert isinstance(event, ReportRejected)
    return variant(event, minutes=minutes, client_report_id=sub.payload.client_report_id,
                   submitted_event_id=sub.event_id)


def report_id_of(sub: ReportSubmitted) -> uuid.UUID:
    # Intake derives it from the sender's token subject, which no event carries.
    return derive_id("report", "field-team-7", sub.payload.client_report_id)


def order(version: int, minutes: float,
          order_id: uuid.UUID) -> OrderIssued | OrderUpdated | OrderLifted:
    if version == 1:
        issued = example("evacuation.order_issued")
        assert isinstance(issued, OrderIssued)
        return variant(issued, minutes=minutes, order_id=order_id)
    if version == 3:
        lifted = example("evacuation.order_lifted")
        assert isinstance(lifted, OrderLifted)
        return variant(lifted, minutes=minutes, order_id=order_id)
    updated = example("evacuation.order_updated")
    assert isinstance(updated, OrderUpdated)
    return variant(updated, minutes=minutes, order_id=order_id, version=version,
                   supersedes_version=version - 1)


def shelter(version: int, status: str = "open") -> ShelterStatusChanged:
    event = example("shelter.status_changed")
    assert isinstance(event, ShelterStatusChanged)
    return variant(event, minutes=version, version=version, status=ShelterStatus(status))


R = TypeVar("R")


def fold(apply: Callable[[R | None, Any], R], events: Sequence[Any]) -> R:
    row: R | None = None
    for event in events:
        row = apply(row, event)
    assert row is not None
    return row


def without_last(row: Any) -> Any:
    """A row with last_event_id blanked: the one field that records delivery order."""
    return replace(row, last_event_id=uuid.UUID(int=0))


# --- event rows ----------------------------------------------------------------------

def test_event_row_carries_record_metadata_and_namespace() -> None:
    """A row holds the event's columns, where it was read, and the topic's namespace."""
    event = example("report.submitted")
    row = event_row(event, topic="drill.2025-08-21.reports", partition=2, offset=41,
                    key="kanda-koen", envelope=encode_event(event).decode())
    assert row.event_id == event.event_id
    assert row.type == "report.submitted"
    assert (row.topic, row.partition, row.offset, row.key) == (
        "drill.2025-08-21.reports", 2, 41, "kanda-koen")
    assert row.namespace == "drill.2025-08-21"
    assert row.occurred_at == event.occurred_at
    assert event_row(event, topic="reports", partition=0, offset=0, key=None,
                     envelope="{}").namespace == ""


def test_key_text_refuses_keys_a_text_column_cannot_hold() -> None:
    """A key that is not UTF-8 (or holds NUL) is refused rather than stored altered."""
    assert key_text(None) is None
    assert key_text("神田".encode()) == "神田"
    with pytest.raises(NotAnEvent, match="UTF-8"):
        key_text(b"\xff\xfe")
    with pytest.raises(NotAnEvent, match="NUL"):
        key_text(b"a\x00b")


def test_dead_letter_row_is_identified_by_its_bytes() -> None:
    """A dead letter's id is the SHA-256 of the record, so a redelivery is the same row."""
    letter = DeadLetter.from_record(topic="t1.reports", partition=1, offset=7, key=b"k",
                                    value=b"not json", error="MalformedEvent: x",
                                    service="recorder", failed_at=utc_now())
    raw = letter.model_dump_json().encode()
    row = dead_letter_row(raw, topic="t1.deadletter")
    assert row.letter_id == hashlib.sha256(raw).hexdigest()
    assert (row.namespace, row.topic, row.partition, row.offset) == ("t1", "t1.reports", 1, 7)
    with pytest.raises(ValidationError):
        dead_letter_row(b'{"topic": "x"}', topic="t1.deadletter")


# --- reports -------------------------------------------------------------------------

def test_report_submission_creates_a_submitted_report() -> None:
    """A submission folded first opens its report with the details the team sent."""
    sub = submitted()
    row = apply_report(None, sub, report_id_of(sub))
    assert row.report_id == report_id_of(sub)
    assert row.status == "submitted"
    assert (row.category, row.severity, row.area_id) == ("flooding", 4, "kanda-koen")
    assert row.outside_region is None
    assert row.submitted_event_id == sub.event_id
    assert row.last_event_id == sub.event_id


def test_only_the_acceptance_names_the_report() -> None:
    """Submission, acceptance and rejection all point at the submission; only the
    acceptance carries the report id they are folded under."""
    sub = submitted()
    acc, rej = accepted(sub), rejected(sub)
    assert report_keys(acc) == ((report_id_of(sub),),)
    assert report_keys(sub) == report_keys(rej) == ()
    assert report_submission(sub) == report_submission(acc) == report_submission(rej)
    assert report_submission(sub) == sub.event_id
    assert report_submission(example("hazard.gauge_reading")) is None


def test_report_accepted_after_rejected_is_accepted() -> None:
    """A later acceptance (a corrected resend) replaces an earlier rejection."""
    sub = submitted(0)
    rid = report_id_of(sub)
    row = fold(lambda r, e: apply_report(r, e, rid), [sub, rejected(sub, 1), accepted(sub, 2)])
    assert row.status == "accepted"
    assert row.reasons is None


def test_rejection_sets_status_and_reasons() -> None:
    """A rejection later than the submission rejects the report, with its reasons."""
    sub = submitted()
    rej = rejected(sub)
    row = fold(lambda r, e: apply_report(r, e, report_id_of(sub)), [sub, rej])
    assert row.status == "rejected"
    assert row.reasons is not None and "payload.location.lat" in row.reasons


def test_late_submission_never_downgrades_an_accepted_report() -> None:
    """A submission delivered after its acceptance keeps the report accepted."""
    sub = submitted(0)
    acc = accepted(sub, 1)
    rid = report_id_of(sub)
    row = fold(lambda r, e: apply_report(r, e, rid), [acc, sub])
    assert row.status == "accepted"
    assert row.submitted_event_id == sub.event_id


def test_acceptance_details_outrank_the_submission() -> None:
    """The resolved area and outside_region come from the acceptance, in any order."""
    sub = submitted(0, area_id=None)
    acc = accepted(sub, 1, area_id="kanda-koen", outside_region=False)
    rid = report_id_of(sub)
    for events in ([sub, acc], [acc, sub]):
        row = fold(lambda r, e: apply_report(r, e, rid), events)
        assert (row.area_id, row.outside_region) == ("kanda-koen", False)


def test_duplicate_report_event_is_a_no_op() -> None:
    """Folding the same event again returns the very same row."""
    sub = submitted()
    acc = accepted(sub)
    rid = report_id_of(sub)
    row = fold(lambda r, e: apply_report(r, e, rid), [sub, acc])
    assert apply_report(row, acc, rid) is row
    assert apply_report(row, sub, rid) is row


@given(st.permutations(range(4)))
def test_report_fold_does_not_depend_on_delivery_order(order_: list[int]) -> None:
    """Any interleaving of a report's events yields the same report."""
    sub = submitted(0)
    events: list[ReportSubmitted | ReportAccepted | ReportRejected] = [
        sub, rejected(sub, 1), accepted(sub, 2), submitted(3, client_report_id="other-id")]
    # The last one is another submission of the same report id (a resend).
    rid = report_id_of(sub)
    reference = fold(lambda r, e: apply_report(r, e, rid), events)
    shuffled = fold(lambda r, e: apply_report(r, e, rid), [events[i] for i in order_])
    assert without_last(shuffled) == without_last(reference)


# --- orders --------------------------------------------------------------------------

def test_order_versions_never_regress() -> None:
    """An older version delivered late never replaces a newer one."""
    oid = uuid.uuid4()
    v1, v2, v3 = order(1, 0, oid), order(2, 10, oid), order(3, 20, oid)
    row = fold(apply_order, [v1, v3, v2])
    assert (row.version, row.status) == (3, "lifted")
    assert row.lifted_by == "hq-duty-officer"
    assert apply_order(row, v2) is row
    assert apply_order(row, v1) is row


def test_order_update_keeps_the_order_active_with_its_new_level() -> None:
    """An update replaces level and areas and leaves the order active."""
    oid = uuid.uuid4()
    row = fold(apply_order, [order(1, 0, oid), order(2, 10, oid)])
    assert isinstance(row, OrderRow)
    assert (row.version, row.status, row.level) == (2, "active", 5)
    assert row.area_ids == ("kanda-koen", "manseibashi", "izumibashi")
    assert row.lift_reason is None


@given(st.permutations(range(4)))
def test_order_fold_does_not_depend_on_delivery_order(order_: list[int]) -> None:
    """Any delivery order of an order's versions ends at the highest version."""
    oid = uuid.uuid4()
    events = [order(1, 0, oid), order(2, 10, oid), order(3, 20, oid), order(2, 10, oid)]
    reference = fold(apply_order, events)
    shuffled = fold(apply_order, [events[i] for i in order_])
    assert shuffled.version == 3
    assert shuffled == reference


# --- shelters ------------------------------------------------------------------------

def test_shelter_keeps_the_highest_version() -> None:
    """The tracker's latest state (highest version) wins whatever the arrival order."""
    row = fold(apply_shelter, [shelter(3, "full"), shelter(1, "opening"), shelter(2, "open")])
    assert (row.version, row.status) == (3, "full")
    again = shelter(3, "full")
    assert apply_shelter(row, again.model_copy(update={"event_id": row.last_event_id})) is row


# --- broadcasts ----------------------------------------------------------------------

def _requested() -> BroadcastRequested:
    event = example("broadcast.requested")
    assert isinstance(event, BroadcastRequested)
    return variant(event, minutes=0, languages=("ja", "en"), channels=("public-feed",))


def _delivered(req: BroadcastRequested, attempt: int, minutes: float) -> BroadcastDelivered:
    event = example("broadcast.delivered")
    assert isinstance(event, BroadcastDelivered)
    return variant(event, minutes=minutes, message_id=req.payload.message_id,
                   version=req.payload.version, language="ja", channel="public-feed",
                   attempt=attempt)


def _failed(req: BroadcastRequested, attempt: int, minutes: float) -> BroadcastFailed:
    event = example("broadcast.failed")
    assert isinstance(event, BroadcastFailed)
    return variant(event, minutes=minutes, message_id=req.payload.message_id,
                   version=req.payload.version, language="ja", channel="public-feed",
                   attempt=attempt)


def test_broadcast_request_opens_one_row_per_language_and_channel() -> None:
    """A request for ja+en on one channel is two deliveries to track."""
    req = _requested()
    keys = broadcast_keys(req)
    assert keys == ((req.payload.message_id, 1, "ja", "public-feed"),
                    (req.payload.message_id, 1, "en", "public-feed"))
    rows = [apply_broadcast(None, req, key) for key in keys]
    assert [(r.status, r.kind, r.attempt) for r in rows] == [
        ("requested", "order_issued", 0)] * 2


def test_delivery_is_final_even_if_a_failure_arrives_later() -> None:
    """Delivered beats any failed attempt; among failures the highest attempt wins."""
    req = _requested()
    key = broadcast_keys(req)[0]
    events = [req, _failed(req, 1, 1), _delivered(req, 2, 2), _failed(req, 1, 3)]
    row = fold(lambda r, e: apply_broadcast(r, e, key), events)
    assert isinstance(row, BroadcastRow)
    assert (row.status, row.attempt, row.receipt) == ("delivered", 2, "feed-seq-1042")
    failing = fold(lambda r, e: apply_broadcast(r, e, key),
                   [req, _failed(req, 2, 2), _failed(req, 1, 3)])
    assert (failing.status, failing.attempt, failing.will_retry) == ("failed", 2, True)


def test_request_recorded_after_its_outcome_still_supplies_the_kind() -> None:
    """An outcome stored before its request keeps its status; the request adds the kind."""
    req = _requested()
    key = broadcast_keys(req)[0]
    row = fold(lambda r, e: apply_broadcast(r, e, key), [_delivered(req, 1, 1), req])
    assert (row.status, row.kind) == ("delivered", "order_issued")
    assert apply_broadcast(row, req, key) is row


# --- the registry --------------------------------------------------------------------

def test_every_projection_ignores_events_it_does_not_fold() -> None:
    """An event outside a projection has no keys there (and gauge readings have none)."""
    gauge = example("hazard.gauge_reading")
    assert all(p.keys(gauge) == () for p in PROJECTIONS)
    assert REPORTS.keys(example("broadcast.requested")) == ()
    assert len(BROADCASTS.keys(example("broadcast.requested"))) == 8
    row = apply_report(None, submitted(), uuid.uuid4())
    assert REPORTS.key_of(row) == (row.report_id,)
    assert isinstance(row, ReportRow)
