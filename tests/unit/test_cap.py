"""CAP 1.2 ingestion: schema validation, hardened parsing, and mapping to hazard.warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas.hazards import Hazard, WarningAction, WarningSource
from schemas.region import load_region
from services.intake.cap import (
    CapArea,
    RegionAreas,
    level_from,
    map_alert,
    read_alert,
)
from services.intake.errors import InvalidInput, MalformedInput

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cap"
OASIS = sorted(FIXTURES.glob("Oasis_*.xml"))
REGION = load_region()
AREAS = RegionAreas(REGION)


def everywhere(area: CapArea) -> frozenset[str]:
    """A matcher that places every area in one district (the OASIS examples are American)."""
    return frozenset({"kanda-koen"})


def test_there_are_four_oasis_examples() -> None:
    """The four OASIS CAP 1.2 examples are checked in as fixtures."""
    assert len(OASIS) == 4


@pytest.mark.parametrize("path", OASIS, ids=lambda p: p.stem)
def test_oasis_examples_validate_and_map(path: Path) -> None:
    """Each OASIS example passes the schema and maps to at least one warning."""
    alert = read_alert(path.read_bytes())
    mapped = map_alert(alert, everywhere)
    assert mapped.warnings and not mapped.exercise
    for warning in mapped.warnings:
        assert warning.source is WarningSource.CAP
        assert warning.issued_at == alert.sent
        assert 1 <= warning.alert_level_equivalent <= 5
        assert warning.area_ids == ("kanda-koen",)


def test_oasis_mapping_details() -> None:
    """Kinds come from eventCode or the event text; updates keep the original warning id."""
    by_name = {p.stem: map_alert(read_alert(p.read_bytes()), everywhere) for p in OASIS}
    storm = by_name["Oasis_ThunderstormWarning"].warnings[0]
    assert storm.kind == "severe_thunderstorm_warning" and storm.alert_level_equivalent == 4
    assert storm.expires_at is not None and storm.expires_at > storm.issued_at
    quake = by_name["Oasis_EarthquakeReport"].warnings[0]
    assert quake.action is WarningAction.UPDATED
    assert quake.warning_id == "trinet@caltech.edu/TRI13970876.1"  # the referenced original
    assert quake.hazard is Hazard.EARTHQUAKE and quake.alert_level_equivalent == 1
    amber = by_name["Oasis_AmberAlert"]
    assert len(amber.warnings) == 1  # en-US and es-US are one alert in two languages
    assert amber.warnings[0].kind == "child_abduction_emergency"


def test_american_areas_are_not_in_chiyoda() -> None:
    """Against the Chiyoda pack an OASIS example concerns no area and is refused, saying so."""
    alert = read_alert((FIXTURES / "Oasis_ThunderstormWarning.xml").read_bytes())
    with pytest.raises(InvalidInput, match="no area of this region") as caught:
        map_alert(alert, AREAS)
    assert caught.value.errors[0].code == "outside_region"


def test_invalid_cap_is_refused_naming_the_schema_problem() -> None:
    """invalid.cap lacks <scope>: the refusal says which element the schema expected."""
    with pytest.raises(InvalidInput) as caught:
        read_alert((FIXTURES / "invalid.cap").read_bytes())
    assert "scope" in caught.value.message
    assert caught.value.errors[0].pointer == "line 9"
    assert caught.value.errors[0].code == "cap_schema"


def test_chiyoda_alert_maps_areas_and_jma_names() -> None:
    """A JMA-style alert maps by municipality code and district names, in Japanese only."""
    alert = read_alert((FIXTURES / "sonae_chiyoda_heavy_rain.xml").read_bytes())
    mapped = map_alert(alert, AREAS, preferred_languages=("ja", "en"))
    first, second = mapped.warnings
    assert first.kind == "heavy_rain_warning" and first.hazard is Hazard.INLAND_FLOOD
    assert set(first.area_ids) == {d.id for d in REGION.districts}
    assert second.kind == "flood_warning" and second.area_ids == ("kanda-koen", "manseibashi")
    assert second.warning_id == first.warning_id + "/1"
    assert mapped.client_id == "jma-test@example.jp,sonae-test-jma-20250821-0500"


def test_area_matching_rules() -> None:
    """Codes, names, towns, polygons and circles each find their districts."""
    def ids(desc: str = "", **shapes: Any) -> set[str]:
        return set(AREAS(CapArea(desc=desc, **shapes)))

    everything = {d.id for d in REGION.districts}
    assert ids(desc="千代田区") == everything
    assert ids(desc="x", geocodes=(("JIS", "131016"),)) == everything
    assert ids(desc="神田司町") == {"kanda-koen"}
    assert ids(desc="千代田区神田司町") == {"kanda-koen"}
    assert ids(desc="Manseibashi") == {"manseibashi"}
    assert ids(desc="Osaka") == set()
    assert "kanda-koen" in ids(circles=("35.6928,139.7658 0.1",))
    assert "kanda-koen" in ids(
        polygons=("35.690,139.764 35.695,139.764 35.695,139.768 35.690,139.764",))
    with pytest.raises(InvalidInput):
        ids(polygons=("not a polygon",))


def test_status_and_msgtype_rules() -> None:
    """Test messages are refused, Exercise is drill traffic, Ack carries nothing."""
    source = (FIXTURES / "sonae_chiyoda_heavy_rain.xml").read_bytes()
    exercise = read_alert(source.replace(b"<status>Actual", b"<status>Exercise"))
    assert map_alert(exercise, AREAS).exercise
    with pytest.raises(InvalidInput, match="not ingested"):
        map_alert(read_alert(source.replace(b"<status>Actual", b"<status>Test")), AREAS)
    with pytest.raises(InvalidInput, match="carries no warning"):
        map_alert(read_alert(source.replace(b"<msgType>Alert", b"<msgType>Ack")), AREAS)


def test_level_from_severity_and_urgency() -> None:
    """Severity sets the level, Immediate raises it, Past makes it informational."""
    assert level_from("Extreme", "Immediate") == 5
    assert level_from("Severe", "Expected") == 3
    assert level_from("Minor", "Future") == 1
    assert level_from("Extreme", "Past") == 1


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE alert [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&xxe;</identifier></alert>"""

LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;")
                                                 * 10) for i in range(1, 10))
          + b']><lolz>&lol9;</lolz>')


@pytest.mark.parametrize("document", [XXE, LAUGHS], ids=["xxe", "billion-laughs"])
def test_entities_and_doctypes_are_refused(document: bytes) -> None:
    """External entities and entity expansion never get parsed into an alert."""
    with pytest.raises(MalformedInput) as caught:
        read_alert(document)
    assert "root:" not in caught.value.message  # nothing of /etc/passwd leaks into the reason


@pytest.mark.parametrize("document", [b"", b"<alert", b"not xml at all", b"\xff\xfe<a/>"])
def test_not_xml_is_malformed(document: bytes) -> None:
    """A body that is not well-formed XML is malformed (400), not a schema error."""
    with pytest.raises(MalformedInput):
        read_alert(document)
