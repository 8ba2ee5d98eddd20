"""Intake's pure rules: permissions, validation pointers, enrichment, idempotency, rate limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.common import Problem
from schemas.intake import ReportRequest
from schemas.region import load_region
from schemas.reports import ReportSubmittedPayload
from services.common.auth import Principal, Role
from services.intake.domain import (
    PERMISSIONS,
    Action,
    Decision,
    ExistingRequest,
    SenderBinding,
    bind_sender,
    canonical_hash,
    decide,
    enrich,
    permitted,
    readable_client_report_id,
    report_events,
    report_rejected,
    require,
    shelter_event,
    validate_hazard,
    validate_report,
    validate_shelter,
)
from services.intake.errors import (
    InvalidInput,
    MalformedInput,
    NotPermitted,
    SenderNotPermitted,
    UnknownShelter,
)
from services.intake.parsing import parse_json, pointer, to_problems
from services.intake.ratelimit import RateLimiter, retry_after_seconds

NOW = datetime(2025, 8, 21, 5, 0, tzinfo=UTC)
REGION = load_region()
KANDA = {"lat": 35.69282, "lon": 139.7658}  # inside 神田公園地区
PARIS = {"lat": 48.8566, "lon": 2.3522}


def who(role: Role, name: str = "kanda-team-1") -> Principal:
    return Principal(subject=name, role=role, token_id="t", expires_at=NOW + timedelta(hours=1))


def report(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"client_report_id": "r-1", "category": "fire", "severity": 4,
                            "location": KANDA, "description": "煙が見える"}
    body.update(overrides)
    return body


# --- permissions ---


def test_permission_table() -> None:
    """Each role may do exactly what the table says; public may do nothing."""
    assert permitted(Role.FIELD, Action.REPORT)
    assert not permitted(Role.FIELD, Action.HAZARD_OBSERVATION)
    assert not permitted(Role.FIELD, Action.SHELTER_STATUS)
    assert not permitted(Role.FIELD, Action.EXERCISE)
    assert permitted(Role.SHELTER_STAFF, Action.SHELTER_STATUS)
    assert permitted(Role.SHELTER_STAFF, Action.REPORT)
    assert permitted(Role.SENSOR, Action.CAP) and permitted(Role.SENSOR, Action.EXERCISE)
    assert not permitted(Role.SENSOR, Action.REPORT)
    assert PERMISSIONS[Role.HQ] == frozenset(Action)
    assert PERMISSIONS[Role.PUBLIC] == frozenset()


def test_field_token_cannot_post_a_warning() -> None:
    """require() refuses a field token for hazard observations, naming the role."""
    with pytest.raises(NotPermitted, match="field token may not submit hazard"):
        require(who(Role.FIELD), Action.HAZARD_OBSERVATION)
    require(who(Role.HQ), Action.HAZARD_OBSERVATION)


# --- JSON and pointers ---


@pytest.mark.parametrize("body", [
    b"{", b"\xff\xfe{}", b'{"a": NaN}', b'{"a": 1, "a": 2}', b'{"a": "\\ud800"}',
    b"[" * 100_000, b"1" * 5000, b"",
])
def test_malformed_json_is_refused(body: bytes) -> None:
    """Bad UTF-8, bad JSON, NaN, duplicate keys, lone surrogates and absurd input are malformed."""
    with pytest.raises(MalformedInput):
        parse_json(body)


def test_pointer_escapes_rfc6901() -> None:
    """Pointers escape ~ and / and replace control characters."""
    assert pointer(("location", "lat")) == "/location/lat"
    assert pointer(("a/b", "c~d", 0)) == "/a~1b/c~0d/0"
    assert "\x00" not in pointer(("bad\x00key",))
    assert pointer(()) == ""


def test_every_field_error_is_listed_with_a_pointer() -> None:
    """A report with several bad fields yields one pointer per field."""
    with pytest.raises(InvalidInput) as caught:
        validate_report(report(severity=9, category="meteor", location={"lat": 91, "lon": 0},
                               extra=1), who(Role.FIELD), REGION, NOW)
    pointers = {e.pointer for e in caught.value.errors}
    assert pointers == {"/severity", "/category", "/location/lat", "/extra"}
    assert all(e.message for e in caught.value.errors)


def test_region_checks_name_the_field() -> None:
    """An unknown area, and a time in the future, are field errors."""
    with pytest.raises(InvalidInput) as caught:
        validate_report(report(area_id="atlantis",
                               occurred_at=(NOW + timedelta(hours=1)).isoformat()),
                        who(Role.FIELD), REGION, NOW)
    assert {e.pointer for e in caught.value.errors} == {"/area_id", "/occurred_at"}


def test_problems_are_dotted_and_bounded() -> None:
    """Field errors become contract Problems with dotted paths, at most 100."""
    with pytest.raises(InvalidInput) as caught:
        validate_report(report(**{f"x{i}": i for i in range(150)}), who(Role.FIELD), REGION, NOW)
    problems = to_problems(caught.value.errors)
    assert len(problems) == 100
    assert all(isinstance(p, Problem) and p.field for p in problems)


def test_hazard_and_shelter_pointers_skip_the_union_tag() -> None:
    """Errors inside a discriminated union point into the body, not at the tag."""
    with pytest.raises(InvalidInput) as caught:
        validate_hazard({"observation": "gauge_reading", "gauge_id": "kandagawa-ochanomizu",
                         "level_m": "3", "observed_at": NOW.isoformat()}, REGION, NOW)
    assert [e.pointer for e in caught.value.errors] == ["/level_m"]
    with pytest.raises(InvalidInput) as caught:
        validate_hazard({"level_m": 1}, REGION, NOW)
    assert [e.pointer for e in caught.value.errors] == ["/observation"]
    shelter = REGION.shelters_in("kanda-koen")[0].id
    with pytest.raises(InvalidInput) as caught:
        validate_shelter({"action": "occupancy", "occupancy": -1}, shelter, who(Role.HQ), REGION,
                         NOW)
    assert [e.pointer for e in caught.value.errors] == ["/occupancy"]
    with pytest.raises(UnknownShelter):
        validate_shelter({"action": "open"}, "no-such-shelter", who(Role.HQ), REGION, NOW)


def test_shelter_status_accepts_facilities_and_refuses_evacuation_only_sites() -> None:
    """A stranded-commuter facility takes status like a shelter; an evacuation-only site not."""
    request = validate_shelter({"action": "open"}, "ts-ogawamachi", who(Role.HQ), REGION, NOW)
    assert request.shelter_id == "ts-ogawamachi"
    evacuation_only = next(s.id for s in REGION.sites if not s.takes_people)
    with pytest.raises(UnknownShelter, match="evacuation site"):
        validate_shelter({"action": "open"}, evacuation_only, who(Role.HQ), REGION, NOW)


def test_reporter_defaults_to_the_token_subject() -> None:
    """Without a reporter, the report is attributed to the token's subject."""
    request = validate_report(report(), who(Role.FIELD, "kanda-team-7"), REGION, NOW)
    assert request.payload().reporter.team == "kanda-team-7"


def test_readable_client_report_id() -> None:
    """Only a valid client_report_id in an object is readable."""
    assert readable_client_report_id(report()) == "r-1"
    assert readable_client_report_id({"client_report_id": "bad id!"}) is None
    assert readable_client_report_id([1]) is None


# --- enrichment ---


def _payload(**overrides: Any) -> ReportSubmittedPayload:
    return ReportRequest.model_validate(
        report(reporter={"team": "t"}, **overrides)).payload()


def test_area_is_resolved_from_the_position() -> None:
    """A report with only a position gets the district containing it."""
    accepted = enrich(_payload(), REGION, report_id=UUID(int=1), submitted_event_id=UUID(int=2))
    assert (accepted.area_id, accepted.outside_region) == ("kanda-koen", False)


def test_named_area_wins_over_the_polygon() -> None:
    """The team's chosen area is kept even if the position says otherwise."""
    accepted = enrich(_payload(area_id="fujimi"), REGION, report_id=UUID(int=1),
                      submitted_event_id=UUID(int=2))
    assert accepted.area_id == "fujimi" and not accepted.outside_region


def test_outside_the_ward_is_accepted_and_flagged() -> None:
    """A position outside every district is accepted with outside_region set."""
    accepted = enrich(_payload(location=PARIS), REGION, report_id=UUID(int=1),
                      submitted_event_id=UUID(int=2))
    assert (accepted.area_id, accepted.outside_region) == (None, True)


def test_report_events_are_deterministic_and_chained() -> None:
    """submitted and accepted derive their ids from the report, and accepted is caused by it."""
    request = validate_report(report(), who(Role.FIELD), REGION, NOW)
    one = report_events(request, "kanda-team-1", REGION, NOW)
    two = report_events(request, "kanda-team-1", REGION, NOW + timedelta(seconds=5))
    assert one.submitted.event_id == two.submitted.event_id
    assert one.accepted.causation_id == one.submitted.event_id
    assert one.accepted.payload.report_id == one.report_id
    assert one.submitted.source == "intake" and one.submitted.occurred_at == NOW
    other_team = report_events(request, "other-team", REGION, NOW)
    assert other_team.report_id != one.report_id


def test_rejection_event_carries_the_reasons() -> None:
    """report.rejected names each field at fault."""
    with pytest.raises(InvalidInput) as caught:
        validate_report(report(severity=0), who(Role.FIELD), REGION, NOW)
    event = report_rejected("r-1", caught.value.errors, NOW)
    assert [p.field for p in event.payload.reasons] == ["severity"]


def test_shelter_requests_become_their_events() -> None:
    """open/close/occupancy/needs map to the four shelter event types."""
    shelter = REGION.shelters_in("kanda-koen")[0].id
    bodies = {"shelter.opened": {"action": "open"}, "shelter.closed": {"action": "close"},
              "shelter.occupancy_reported": {"action": "occupancy", "occupancy": 120},
              "shelter.needs_reported": {"action": "needs", "needs": {"water": "low"}}}
    for event_type, body in bodies.items():
        request = validate_shelter(body, shelter, who(Role.SHELTER_STAFF), REGION, NOW)
        event = shelter_event(request, "staff", "k-1", NOW)
        assert event.type == event_type
        assert shelter_event(request, "staff", "k-1", NOW).event_id == event.event_id


# --- idempotency ---


def test_idempotency_decisions() -> None:
    """New → write; same body → replay; other body → conflict, unless the first was rejected."""
    assert decide(None, "h1") is Decision.WRITE
    accepted = ExistingRequest("h1", 202)
    assert decide(accepted, "h1") is Decision.REPLAY
    assert decide(accepted, "h2") is Decision.CONFLICT
    rejected = ExistingRequest("h1", 422)
    assert decide(rejected, "h1") is Decision.REPLAY
    assert decide(rejected, "h2") is Decision.WRITE


@given(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=6))
def test_canonical_hash_ignores_key_order(document: dict[str, Any]) -> None:
    """The body hash does not depend on the order keys were sent in."""
    reordered = dict(reversed(list(document.items())))
    assert canonical_hash(document) == canonical_hash(reordered)


# --- rate limiting ---


def test_token_bucket_refuses_then_refills() -> None:
    """A burst is allowed, the next request waits, and the bucket refills over time."""
    limiter = RateLimiter(burst=2, rate=1.0)
    assert limiter.take("a", 0.0) == 0 and limiter.take("a", 0.0) == 0
    wait = limiter.take("a", 0.0)
    assert wait == pytest.approx(1.0)
    assert retry_after_seconds(wait) == 1
    assert limiter.take("b", 0.0) == 0  # buckets are per subject
    assert limiter.take("a", 1.0) == 0


def test_an_input_is_bound_to_the_sender_its_token_speaks_for() -> None:
    """Own sender by default; a listed sender is allowed; others 403; HQ overrides, named."""
    now = datetime.now(UTC)
    feed = Principal(subject="jma-feed", role=Role.SENSOR, token_id="t", expires_at=now,
                     senders=frozenset({"cap:jma.go.jp"}))
    assert bind_sender(feed, None) == SenderBinding("token:jma-feed")
    assert bind_sender(feed, "token:jma-feed") == SenderBinding("token:jma-feed")
    assert bind_sender(feed, "cap:jma.go.jp") == SenderBinding("cap:jma.go.jp")
    rogue = Principal(subject="rogue", role=Role.SENSOR, token_id="t", expires_at=now)
    with pytest.raises(SenderNotPermitted, match=r"sender binding: .* token:rogue only, not "
                                                 r"'cap:jma\.go\.jp'"):
        bind_sender(rogue, "cap:jma.go.jp")
    hq = Principal(subject="hq-duty", role=Role.HQ, token_id="t", expires_at=now)
    assert bind_sender(hq, "cap:jma.go.jp") == SenderBinding("cap:jma.go.jp", "hq-duty")
    assert bind_sender(hq, None) == SenderBinding("token:hq-duty")
