"""Intake's rules for residents at home and welfare checks (services/intake/athome.py). Pure."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.region import load_region
from services.common.auth import Principal, Role, issue_token
from services.intake.athome import (
    PUBLIC_SCOPE,
    at_home_event,
    decide_at_home,
    household_id_for,
    validate_at_home,
    validate_welfare_check,
    welfare_event,
)
from services.intake.domain import Decision, ExistingRequest
from services.intake.errors import InvalidInput, NotPermitted

NOW = datetime(2025, 8, 21, 5, 0, tzinfo=UTC)
REGION = load_region()
CLIENT = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"


def who(role: Role, name: str = "kanda-team-1",
        areas: frozenset[str] | None = None) -> Principal:
    return Principal(subject=name, role=role, token_id="t", expires_at=NOW + timedelta(hours=1),
                     areas=areas)


def body(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"client_id": CLIENT, "area_id": "kanda-koen", "size": 3,
                                "needs": ["water", "welfare_check"], "contact": "03-0000-0000"}
    document.update(overrides)
    return document


def pointers(error: InvalidInput) -> list[str]:
    return [e.pointer for e in error.errors]


def test_public_report_is_via_public_with_no_reporter() -> None:
    """Without a token the report is the public form's: via public, reported_by null."""
    item = validate_at_home(body(), None, REGION, NOW)
    assert item.scope == PUBLIC_SCOPE
    assert item.payload.via == "public" and item.payload.reported_by is None
    assert item.payload.household_id == household_id_for(PUBLIC_SCOPE, CLIENT)
    assert item.payload.contact == "03-0000-0000"


def test_field_report_is_via_field_reported_by_the_token() -> None:
    """With a field token: via field, reported_by the token's subject, its own household id."""
    item = validate_at_home(body(), who(Role.FIELD), REGION, NOW)
    assert item.payload.via == "field"
    assert item.payload.reported_by is not None
    assert item.payload.reported_by.team == "kanda-team-1"
    assert item.household_id != household_id_for(PUBLIC_SCOPE, CLIENT)


def test_no_token_can_share_the_public_scope() -> None:
    """The form's scope is no possible token subject, so no team can reach its households."""
    with pytest.raises(ValueError):
        issue_token("x" * 32, Role.FIELD, PUBLIC_SCOPE, timedelta(hours=1), areas=["kanda-koen"])


def test_household_id_is_stable_and_per_namespace() -> None:
    """A resend gets the same household id; a drill namespace another."""
    first = validate_at_home(body(), None, REGION, NOW).household_id
    again = validate_at_home(body(size=4), None, REGION, NOW).household_id
    drill = validate_at_home(body(), None, REGION, NOW, namespace="drill-1").household_id
    assert first == again != drill


def test_unknown_area_is_refused_naming_the_field() -> None:
    """An area that is not the region's is 422 naming /area_id."""
    with pytest.raises(InvalidInput) as caught:
        validate_at_home(body(area_id="atlantis"), None, REGION, NOW)
    assert pointers(caught.value) == ["/area_id"]
    assert caught.value.errors[0].code == "unknown_area"


def test_bad_fields_are_each_named() -> None:
    """Every bad field is named by its JSON pointer (and server-filled ones refused)."""
    with pytest.raises(InvalidInput) as caught:
        validate_at_home(body(size=0, needs=["water", "water"], via="field",
                              household_id=str(uuid.uuid4())), None, REGION, NOW)
    assert sorted(pointers(caught.value)) == ["/household_id", "/needs", "/size", "/via"]
    with pytest.raises(InvalidInput) as caught:
        validate_at_home({"area_id": "kanda-koen", "size": 2}, None, REGION, NOW)
    assert pointers(caught.value) == ["/client_id"]
    with pytest.raises(InvalidInput) as caught:
        validate_at_home(["not", "an", "object"], None, REGION, NOW)
    assert pointers(caught.value) == [""]


def test_public_form_needs_a_uuid_client_id_and_no_reporter() -> None:
    """The public form's client id must be a UUID; it may not name a reporter."""
    with pytest.raises(InvalidInput) as caught:
        validate_at_home(body(client_id="guessable-1", reported_by={"team": "x"}), None,
                         REGION, NOW)
    assert sorted(pointers(caught.value)) == ["/client_id", "/reported_by"]
    # A field team may use any client id.
    assert validate_at_home(body(client_id="fc-17"), who(Role.FIELD), REGION, NOW)


def test_public_form_may_not_flag_exercise() -> None:
    """Drill traffic never comes from the public form (403); a field token may not either."""
    with pytest.raises(NotPermitted, match="residents' form"):
        validate_at_home(body(exercise=True), None, REGION, NOW)
    with pytest.raises(NotPermitted):
        validate_at_home(body(exercise=True), who(Role.FIELD), REGION, NOW)
    assert validate_at_home(body(exercise=True), who(Role.HQ), REGION, NOW).request.exercise


def test_roles_that_may_not_report_at_home() -> None:
    """Shelter staff and sensors may not report households at home."""
    for role in (Role.SHELTER_STAFF, Role.SENSOR, Role.PUBLIC):
        with pytest.raises(NotPermitted):
            validate_at_home(body(), who(role), REGION, NOW)


def test_future_time_is_refused() -> None:
    """A device clock far ahead is refused naming /occurred_at."""
    later = (NOW + timedelta(hours=1)).isoformat()
    with pytest.raises(InvalidInput) as caught:
        validate_at_home(body(occurred_at=later), None, REGION, NOW)
    assert pointers(caught.value) == ["/occurred_at"]


def test_identical_resend_replays_another_body_replaces() -> None:
    """Same body: replay; another body under the same id: a write (the report is replaced)."""
    assert decide_at_home(None, "h1") is Decision.WRITE
    assert decide_at_home(ExistingRequest("h1", 202), "h1") is Decision.REPLAY
    assert decide_at_home(ExistingRequest("h1", 202), "h2") is Decision.WRITE


def test_each_revision_is_its_own_event() -> None:
    """Event ids derive from the household and revision: stable per revision, new per one."""
    item = validate_at_home(body(), None, REGION, NOW)
    first = at_home_event(item, 1, NOW)
    assert first.event_id == at_home_event(item, 1, NOW).event_id
    assert first.event_id != at_home_event(item, 2, NOW).event_id
    assert first.payload.area_id == "kanda-koen" and first.exercise is False
    assert first.occurred_at == NOW


def check(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"client_id": "wc-1", "household_id": str(uuid.uuid4()),
                                "area_id": "kanda-koen", "outcome": "safe", "note": "元気"}
    document.update(overrides)
    return document


def test_welfare_check_by_a_team_of_the_area() -> None:
    """A field team of the area records a check; checked_by is its subject."""
    item = validate_welfare_check(check(), who(Role.FIELD, areas=frozenset({"kanda-koen"})),
                                  REGION, NOW)
    assert item.payload.checked_by == "kanda-team-1"
    event = welfare_event(item, NOW)
    assert event.event_id == welfare_event(item, NOW).event_id
    assert event.payload.outcome.value == "safe"


def test_welfare_check_outside_the_team_areas_is_forbidden() -> None:
    """A field team may not record checks outside its areas; HQ may anywhere."""
    with pytest.raises(NotPermitted, match="own areas"):
        validate_welfare_check(check(area_id="jimbocho"),
                               who(Role.FIELD, areas=frozenset({"kanda-koen"})), REGION, NOW)
    assert validate_welfare_check(check(area_id="jimbocho"), who(Role.HQ), REGION, NOW)
    with pytest.raises(NotPermitted):
        validate_welfare_check(check(), who(Role.SHELTER_STAFF), REGION, NOW)


def test_welfare_check_fields_are_named() -> None:
    """Bad outcome, unknown area, someone else as checked_by: each field named."""
    team = who(Role.FIELD, areas=frozenset({"kanda-koen"}))
    with pytest.raises(InvalidInput) as caught:
        validate_welfare_check(check(outcome="fine", checked_by="other"), team, REGION, NOW)
    assert sorted(pointers(caught.value)) == ["/checked_by", "/outcome"]
    with pytest.raises(InvalidInput) as caught:
        validate_welfare_check(check(area_id="atlantis"), who(Role.HQ), REGION, NOW)
    assert pointers(caught.value) == ["/area_id"]
