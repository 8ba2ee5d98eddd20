"""The shared dead-letter helpers: error text, field problems and the letter for a record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.common import Problem
from schemas.errors import FieldProblem, InvalidEvent
from services.common.deadletter import error_text, field_problems, letter_for

NOW = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)


@dataclass
class _Record:
    topic: str = "live.reports"
    partition: int = 2
    offset: int = 41
    key: bytes | None = b"k1"
    value: bytes | None = b"\xff\x00"


def test_error_text_names_the_type_then_the_message() -> None:
    """An exception reads ``Type: message``; one without a message reads ``Type``; text stays."""
    assert error_text(ValueError("bad level")) == "ValueError: bad level"
    assert error_text(KeyError()) == "KeyError"
    assert error_text("a tombstone is not an event") == "a tombstone is not an event"


def test_field_problems_come_only_from_invalid_events_and_are_bounded() -> None:
    """InvalidEvent problems become ``invalid`` Problems (100 at most, long text cut)."""
    many = InvalidEvent([FieldProblem("payload.x" * 50, "m" * 5000)] * 150)
    problems = field_problems(many)
    assert len(problems) == 100
    assert len(problems[0].field or "") == 200 and len(problems[0].message) == 1000
    assert field_problems(InvalidEvent([FieldProblem("", "not JSON")])) == (
        Problem(code="invalid", field=None, message="not JSON"),)
    assert field_problems(RuntimeError("boom")) == ()


def test_letter_for_keeps_the_record_and_prefers_given_problems() -> None:
    """The letter keeps topic, partition, offset and bytes; explicit problems win."""
    rejected = (Problem(code="rejected", field="payload.occupancy", message="too many"),)
    letter = letter_for(_Record(), InvalidEvent([FieldProblem("type", "missing")]),
                        service="shelter-tracker", failed_at=NOW, problems=rejected)
    assert (letter.topic, letter.partition, letter.offset) == ("live.reports", 2, 41)
    assert letter.key_bytes() == b"k1" and letter.original_bytes() == b"\xff\x00"
    assert letter.problems == rejected
    assert letter.error == "InvalidEvent: type: missing"
    assert letter.failed_at == NOW
    derived = letter_for(_Record(value=None), InvalidEvent([FieldProblem("type", "missing")]),
                         service="shelter-tracker", failed_at=NOW)
    assert derived.problems[0].field == "type" and derived.original_bytes() is None
