"""What the rest of issue 17 adds to the JMA core: evidence, vocabularies, landslide areas,
cancellations of a bodiless 取消 (pure)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from schemas.envelope import new_event
from schemas.hazards import HazardWarning, SeismicIntensity, WarningAction
from schemas.jma import JmaAreaTable, JmaSchemaInvalid, load_jma_table, map_message, read_jma
from schemas.jma.mapping import cancellation_warnings, quake_withdrawals
from schemas.region import load_region
from services.gateway.cop import COP, Kind, RegionIndex
from services.gateway.reducer import reduce

FIXTURES = Path(__file__).parent.parent / "fixtures" / "jma"


@pytest.fixture(scope="module")
def chiyoda() -> JmaAreaTable:
    return load_jma_table("chiyoda")


def test_each_warning_names_its_message_as_origin(chiyoda: JmaAreaTable) -> None:
    """Every warning carries the message's title, report time and editorial office."""
    signals = map_message(read_jma((FIXTURES / "15_12_02_161130_VPWW54.xml").read_bytes()),
                          chiyoda)
    assert signals.warnings
    for warning in signals.warnings:
        assert warning.origin is not None
        assert warning.origin.title == "東京都気象警報・注意報"
        assert warning.origin.office == "気象庁予報部"
        assert warning.origin.reported_at == signals.report_date_time


@pytest.mark.parametrize(("old", "new", "pointer"), [
    ("<InfoType>発表</InfoType>", "<InfoType>発令</InfoType>", "/Report/Head/InfoType"),
    ("<Status>通常</Status>", "<Status>本番</Status>", "/Report/Control/Status"),
])
def test_a_word_outside_jmas_vocabulary_is_refused_with_its_pointer(
    old: str, new: str, pointer: str
) -> None:
    """An InfoType or Status the schema lets through but JMA never writes is a 422, not a crash."""
    text = (FIXTURES / "15_12_02_161130_VPWW54.xml").read_text("utf-8")
    assert old in text
    with pytest.raises(JmaSchemaInvalid) as caught:
        read_jma(text.replace(old, new, 1).encode("utf-8"))
    assert caught.value.pointer == pointer


def test_landslide_alerts_cover_only_the_packs_landslide_districts() -> None:
    """VXWW50 for a municipality with landslide_municipalities covers only those districts."""
    base = load_jma_table("testville")
    signals = map_message(read_jma((FIXTURES / "17_03_04_190529_VXWW50.xml").read_bytes()),
                          base)
    code = "3310000"
    assert any("riverside" in w.area_ids for w in signals.warnings)
    narrowed = base.model_copy(update={"landslide_municipalities": {code: ("hilltop",)}})
    again = map_message(read_jma((FIXTURES / "17_03_04_190529_VXWW50.xml").read_bytes()),
                        narrowed)
    landslide = {w.warning_id: w.area_ids for w in again.warnings}
    assert landslide[f"jma:landslide:{code}"] == ("hilltop",)


def test_a_bodiless_tsunami_cancellation_becomes_cancelled_warnings(
    chiyoda: JmaAreaTable,
) -> None:
    """The tsunami ids a 取消 lists become cancelled warnings on the region's districts."""
    signals = map_message(read_jma((FIXTURES / "38-39_03_01_210805_VTSE41.xml").read_bytes()),
                          chiyoda)
    [warning] = cancellation_warnings(signals, chiyoda)
    assert warning.action is WarningAction.CANCELLED
    assert warning.warning_id == "jma:tsunami:20210805103531:312"
    assert warning.area_ids == ("izumibashi", "kanda-koen", "manseibashi")


def test_a_quake_cancellation_withdraws_the_quake(chiyoda: JmaAreaTable) -> None:
    """A VXSE53 取消 withdraws a quake: no warning to cancel, a withdrawal of its id."""
    signals = map_message(read_jma((FIXTURES / "32-35_06_06_100915_VXSE53.xml").read_bytes()),
                          chiyoda)
    assert cancellation_warnings(signals, chiyoda) == ()
    [withdrawal] = quake_withdrawals(signals)
    assert withdrawal.withdrawn and withdrawal.intensities == ()
    assert withdrawal.quake_id == "jma:quake:20080614084350"


def test_a_withdrawn_quake_leaves_the_picture_s_areas(chiyoda: JmaAreaTable) -> None:
    """After a 取消 the quake shows as withdrawn and no area keeps its intensity."""
    region = RegionIndex.from_region(load_region("chiyoda"))
    report = map_message(read_jma((FIXTURES / "32-35_06_05_240613_VXSE53.xml").read_bytes()),
                         chiyoda).seismic
    cancel = map_message(read_jma((FIXTURES / "32-35_06_06_100915_VXSE53.xml").read_bytes()),
                         chiyoda)
    assert report is not None
    at = cancel.report_date_time
    cop, _ = reduce(COP.empty(region), new_event(
        SeismicIntensity, report, occurred_at=at - timedelta(hours=1), source="intake"))
    assert any(d["shindo"] for d in cop.entities[Kind.AREA].values())
    [withdrawal] = quake_withdrawals(cancel)
    cop, deltas = reduce(cop, new_event(SeismicIntensity, withdrawal, occurred_at=at,
                                        source="intake"))
    [quake] = [d for d in deltas if d.kind is Kind.QUAKE]
    assert quake.value is not None and quake.value["withdrawn"] is True
    assert not any(d["shindo"] for d in cop.entities[Kind.AREA].values())
    # A late copy of the report does not bring it back.
    cop, deltas = reduce(cop, new_event(
        SeismicIntensity, report, occurred_at=at + timedelta(minutes=1), source="intake"))
    assert not [d for d in deltas if d.kind is Kind.QUAKE]


def test_the_common_operating_picture_shows_the_jma_message(chiyoda: JmaAreaTable) -> None:
    """A JMA warning's COP entity (what the dashboard draws) carries its origin and areas."""
    signals = map_message(read_jma((FIXTURES / "15_12_02_161130_VPWW54.xml").read_bytes()),
                          chiyoda)
    warning = next(w for w in signals.warnings if w.kind == "heavy_rain_warning")
    event = new_event(HazardWarning, warning, occurred_at=warning.issued_at, source="intake")
    _, deltas = reduce(COP.empty(RegionIndex.from_region(load_region("chiyoda"))), event)
    [delta] = [d for d in deltas if d.kind is Kind.WARNING]
    assert delta.value is not None and delta.value["in_force"] is True
    assert delta.value["origin"]["title"] == "東京都気象警報・注意報"
    assert "kojimachi" in delta.value["area_ids"]
