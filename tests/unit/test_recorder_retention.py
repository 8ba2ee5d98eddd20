"""Personal fields of stored events and how a purge blanks them (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from schemas.events import decode_event, encode_event
from schemas.examples import example
from schemas.people import PERSONAL_FIELDS
from services.recorder.errors import PurgeBeforeInFuture
from services.recorder.retention import (
    PERSONAL_PATHS,
    check_before,
    holds_personal,
    personal_pointers,
    purge_envelope,
)

NOW = datetime(2025, 9, 1, tzinfo=UTC)


def envelope(event_type: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(encode_event(example(event_type)))
    return loaded


def test_every_field_the_contract_marks_personal_is_purged() -> None:
    """PERSONAL_PATHS holds every field of PERSONAL_FIELDS, and the reporters' names."""
    for event_type, names in PERSONAL_FIELDS.items():
        assert {f"/payload/{n}" for n in names} <= set(personal_pointers(event_type))
    assert personal_pointers("supply.requested") == ("/payload/requested_by/name",)
    assert personal_pointers("shelter.household_checked_out") == ("/payload/reported_by/name",)
    assert personal_pointers("supply.assigned") == ()
    assert "report.submitted" not in PERSONAL_PATHS


def test_a_purged_check_in_keeps_its_counts_and_still_decodes() -> None:
    """Name and contact go; size, needs, language, the team and the ids stay."""
    original = envelope("shelter.household_checked_in")
    purged = purge_envelope(original)
    assert purged is not None
    event = decode_event(json.dumps(purged))
    assert (event.payload.name, event.payload.contact) == (None, None)  # type: ignore[union-attr]
    payload = purged["payload"]
    assert (payload["size"], payload["needs"], payload["language"]) == (3, ["infant", "language"],
                                                                        "en")
    assert payload["reported_by"]["team"] == original["payload"]["reported_by"]["team"]  # type: ignore[index]
    assert {k: v for k, v in purged.items() if k != "payload"} == {
        k: v for k, v in original.items() if k != "payload"}
    assert original["payload"]["name"] == "Smith"  # type: ignore[index]  # the input is not changed


def test_a_purge_of_a_purged_envelope_finds_nothing() -> None:
    """Blank fields hold nothing: purging again returns None (the purge is idempotent)."""
    for event_type in PERSONAL_PATHS:
        purged = purge_envelope(envelope(event_type))
        if purged is not None:
            assert not holds_personal(event_type, purged)
            assert purge_envelope(purged) is None


def test_an_at_home_report_from_the_public_form_keeps_its_null_reporter() -> None:
    """A null reporter stays null; a note is blanked to "" (its default), not null."""
    purged = purge_envelope(envelope("people.at_home_reported"))
    assert purged is not None
    payload = purged["payload"]
    assert (payload["reported_by"], payload["note"], payload["address"]) == (None, "", None)
    assert (payload["size"], payload["needs"], payload["area_id"]) == (
        2, ["water", "medical_power", "welfare_check"], "kanda-koen")


def test_an_event_without_personal_fields_is_left_alone() -> None:
    """Events of other types, or whose personal fields are blank, are not touched."""
    assert purge_envelope(envelope("generator.registered")) is None
    assert purge_envelope(envelope("shelter.household_checked_out")) is None  # no name given


def test_a_before_in_the_future_or_without_a_timezone_is_refused() -> None:
    """check_before accepts now and the past, refuses later times and naive ones."""
    check_before(NOW, NOW)
    check_before(NOW - timedelta(days=30), NOW)
    with pytest.raises(PurgeBeforeInFuture, match="in the future"):
        check_before(NOW + timedelta(seconds=1), NOW)
    with pytest.raises(PurgeBeforeInFuture, match="no timezone"):
        check_before(datetime(2025, 8, 1), NOW)
