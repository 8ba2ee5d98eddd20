"""Upcasters: the registry, and report.submitted v1 → v2."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from schemas.errors import InvalidEvent, UnsupportedSchemaVersion, UpcasterConflict
from schemas.events import CURRENT_VERSIONS, decode_event, encode_event
from schemas.examples import example
from schemas.upcasting import UPCASTERS, UpcasterRegistry, report_submitted_v1_to_v2


def v1_report() -> dict[str, Any]:
    """The current report.submitted example rewritten as a v1 document (flat lat/lon)."""
    document: dict[str, Any] = json.loads(encode_event(example("report.submitted")))
    location = document["payload"].pop("location")
    document["payload"]["lat"] = location["lat"]
    document["payload"]["lon"] = location["lon"]
    document["schema_version"] = 1
    return document


def test_registered_upcasters_lead_to_current_versions() -> None:
    """Every registered (type, version) is a known type below its current version."""
    registered = list(UPCASTERS)
    assert ("report.submitted", 1) in registered
    for event_type, version in registered:
        assert event_type in CURRENT_VERSIONS
        assert 1 <= version < CURRENT_VERSIONS[event_type]
    # Every version below the current one has an upcaster, so old data always decodes.
    for event_type, current in CURRENT_VERSIONS.items():
        for version in range(1, current):
            assert (event_type, version) in UPCASTERS


def test_v1_report_decodes_as_the_current_event() -> None:
    """A v1 report with flat lat/lon decodes to the same event as its v2 form."""
    assert decode_event(v1_report()) == example("report.submitted")
    assert decode_event(json.dumps(v1_report()).encode()) == example("report.submitted")


def test_v1_report_without_position_keeps_its_area() -> None:
    """A v1 report with only an area id upcasts to a v2 report without location."""
    document = v1_report()
    del document["payload"]["lat"], document["payload"]["lon"]
    event = decode_event(document)
    assert event.schema_version == 2
    assert event.payload.location is None  # type: ignore[union-attr]
    assert event.payload.area_id == "kanda-koen"  # type: ignore[union-attr]


def test_upcaster_is_pure() -> None:
    """The upcaster returns a new document and leaves its input untouched."""
    document = v1_report()
    snapshot = copy.deepcopy(document)
    lifted = report_submitted_v1_to_v2(document)
    assert document == snapshot
    assert lifted["payload"]["location"] == {"lat": 35.69286, "lon": 139.76795}
    assert "lat" not in lifted["payload"] and "lon" not in lifted["payload"]
    assert report_submitted_v1_to_v2(copy.deepcopy(document)) == lifted


def test_registry_sets_the_version_and_keeps_the_input() -> None:
    """upcast() returns a v2 document and does not modify the caller's mapping."""
    document = v1_report()
    snapshot = copy.deepcopy(document)
    lifted = UPCASTERS.upcast(document, 2)
    assert lifted["schema_version"] == 2
    assert document == snapshot


def test_half_a_position_is_reported_at_the_missing_axis() -> None:
    """A v1 report with lat but no lon fails validation at payload.location.lon."""
    document = v1_report()
    del document["payload"]["lon"]
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(document)
    assert excinfo.value.fields == ("payload.location.lon",)


def test_flat_fields_beside_a_location_are_unknown_fields() -> None:
    """A v1 document that also has a location keeps lat/lon, which validation rejects."""
    document = v1_report()
    document["payload"]["location"] = {"lat": 35.0, "lon": 139.0}
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(document)
    assert set(excinfo.value.fields) == {"payload.lat", "payload.lon"}


def test_v2_shaped_payload_labelled_v1_still_decodes() -> None:
    """A v1-labelled document that already has a location is left as is and validates."""
    document = json.loads(encode_event(example("report.submitted")))
    document["schema_version"] = 1
    assert decode_event(document) == example("report.submitted")


def test_missing_step_is_unsupported() -> None:
    """A chain with a gap raises UnsupportedSchemaVersion naming schema_version."""
    registry = UpcasterRegistry()
    registry.register("thing.happened", 1)(lambda d: d)
    document = {"type": "thing.happened", "schema_version": 1}
    assert registry.upcast(document, 2)["schema_version"] == 2
    with pytest.raises(UnsupportedSchemaVersion) as excinfo:
        registry.upcast(document, 3)
    assert excinfo.value.fields == ("schema_version",)
    assert "v2" in str(excinfo.value)


def test_newer_than_target_is_unsupported() -> None:
    """A document newer than the target version is refused."""
    with pytest.raises(UnsupportedSchemaVersion):
        UPCASTERS.upcast({"type": "report.submitted", "schema_version": 3}, 2)


def test_duplicate_registration_conflicts() -> None:
    """Registering two upcasters for one (type, version) raises UpcasterConflict."""
    registry = UpcasterRegistry()
    registry.register("thing.happened", 1)(lambda d: d)
    with pytest.raises(UpcasterConflict):
        registry.register("thing.happened", 1)(lambda d: d)
    with pytest.raises(UpcasterConflict):
        registry.register("thing.happened", 0)


def test_an_upcaster_may_not_rename_the_type() -> None:
    """Changing ``type`` inside an upcaster is refused: types are never renamed."""
    registry = UpcasterRegistry()
    registry.register("thing.happened", 1)(lambda d: {**d, "type": "thing.occurred"})
    with pytest.raises(UpcasterConflict):
        registry.upcast({"type": "thing.happened", "schema_version": 1}, 2)
