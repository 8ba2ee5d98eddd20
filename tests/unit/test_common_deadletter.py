"""The shared dead-letter helpers: error text, field problems and the letter for a record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.common import Problem
from schemas.errors import FieldProblem, InvalidEvent
from services.common.deadletter import (
    TOKEN_REMOVED,
    error_text,
    field_problems,
    letter_for,
    without_tokens,
)

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


def test_letter_for_removes_bearer_tokens_from_value_key_and_error() -> None:
    """A raw record's token field, a JWT anywhere and a Bearer header never reach a letter."""
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmaWVsZC0xIn0.c2lnbmF0dXJl"
    value = ('{"kind": "report", "token": "not-a-jwt-but-secret", "data": {"text": "'
             f'forwarded with Authorization: Bearer {jwt}"}}}}').encode()
    letter = letter_for(_Record(key=jwt.encode(), value=value), f"TokenInvalid: {jwt}",
                        service="intake", failed_at=NOW)
    kept = letter.original_bytes() or b""
    assert b"not-a-jwt-but-secret" not in kept and jwt.encode() not in kept
    assert kept.startswith(b'{"kind": "report", "token": "[token removed]", "data"')
    assert b"Bearer [token removed]" in kept
    assert letter.key_bytes() == TOKEN_REMOVED.encode()
    assert letter.error == f"TokenInvalid: {TOKEN_REMOVED}"


def test_without_tokens_leaves_other_bytes_alone() -> None:
    """Records without a token (binary ones too) are kept byte for byte."""
    for data in (b"\xff\x00\x01 not json", b'{"kind": "report", "data": {"tokens": 3}}',
                 "避難所 eyJ は トークンではない".encode()):
        assert without_tokens(data) == data
