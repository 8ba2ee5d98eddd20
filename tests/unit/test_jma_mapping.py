"""JMA XML → hazard signals through the region packs' JMA code tables (pure mapping)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from schemas.hazards import Hazard, Shindo, WarningAction, WarningSource
from schemas.jma import (
    JmaAreaTable,
    JmaSignals,
    default_kinds,
    load_jma_table,
    map_message,
    message_id,
    read_jma,
)
from schemas.region import UnknownDistrict, load_region, packs_root

FIXTURES = Path(__file__).parent.parent / "fixtures" / "jma"
SAMPLES = sorted(FIXTURES.glob("*.xml"))
CHIYODA_ALL = ("fujimi", "izumibashi", "jimbocho", "kanda-koen", "kojimachi", "manseibashi")


@pytest.fixture(scope="module")
def testville() -> JmaAreaTable:
    return load_jma_table("testville")


@pytest.fixture(scope="module")
def chiyoda() -> JmaAreaTable:
    return load_jma_table("chiyoda")


def mapped(name: str, table: JmaAreaTable) -> JmaSignals:
    return map_message(read_jma((FIXTURES / name).read_bytes()), table)


def by_id(signals: JmaSignals) -> dict[str, tuple[str, str, int, tuple[str, ...]]]:
    return {w.warning_id: (w.action.value, w.kind, w.alert_level_equivalent, w.area_ids)
            for w in signals.warnings}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_maps_or_is_ignored_with_a_reason(
    path: Path, testville: JmaAreaTable, chiyoda: JmaAreaTable
) -> None:
    """Every sample gives signals for each test table, or says why it concerns nothing."""
    message = read_jma(path.read_bytes())
    for table in (testville, chiyoda):
        signals = map_message(message, table)
        has_signal = bool(signals.warnings or signals.seismic or signals.cancelled_ids)
        assert has_signal != bool(signals.ignored)
        assert all(w.source is WarningSource.JMA for w in signals.warnings)


# --- VPWW54 ----------------------------------------------------------------------


def test_vpww54_storm_warning_for_chiyoda(chiyoda: JmaAreaTable) -> None:
    """VPWW54 暴風警報 発表 for 千代田区 1310100 becomes one warning over all six districts."""
    signals = mapped("15_13_01_161226_VPWW54.xml", chiyoda)
    assert by_id(signals) == {
        "jma:1310100:wind": ("issued", "storm_warning", 3, CHIYODA_ALL),
    }
    (warning,) = signals.warnings
    assert warning.name == "暴風警報" and warning.hazard is None
    assert warning.issued_at.isoformat() == "2016-12-13T11:45:00+00:00"
    assert signals.title == "東京都気象警報・注意報" and not signals.exercise


def test_vpww54_heavy_rain_and_flood_for_chiyoda(chiyoda: JmaAreaTable) -> None:
    """VPWW54 大雨警報 and 洪水警報 発表 map with hazards and levels 3; 雷注意報 continues at 2."""
    warnings = by_id(mapped("15_12_02_161130_VPWW54.xml", chiyoda))
    assert warnings["jma:1310100:heavy_rain"] == ("issued", "heavy_rain_warning", 3, CHIYODA_ALL)
    assert warnings["jma:1310100:flood"] == ("issued", "flood_warning", 3, CHIYODA_ALL)
    assert warnings["jma:1310100:thunder"] == ("updated", "thunder_advisory", 2, CHIYODA_ALL)


def test_vpww54_emergency_warning_is_level_5(testville: JmaAreaTable) -> None:
    """VPWW54 大雨特別警報 (浜田市) is heavy_rain_emergency at level 5, hazard inland_flood."""
    signals = mapped("15_12_01_161130_VPWW54.xml", testville)
    warning = next(w for w in signals.warnings if w.warning_id == "jma:3220200:heavy_rain")
    assert (warning.kind, warning.alert_level_equivalent, warning.hazard) == (
        "heavy_rain_emergency", 5, Hazard.INLAND_FLOOD)
    assert warning.area_ids == ("riverside",)


def test_no_warnings_in_force_is_ignored_with_reason(chiyoda: JmaAreaTable) -> None:
    """A VPWW54 where 千代田区 has 発表警報・注意報はなし is ignored, saying so."""
    signals = mapped("15_14_01_170216_VPWW54.xml", chiyoda)
    assert signals.warnings == () and signals.ignored is not None
    assert "1310100" in signals.ignored


def test_message_about_no_area_of_the_region_is_ignored(chiyoda: JmaAreaTable) -> None:
    """A 山口県 warning message concerns no area of Chiyoda: ignored with the reason."""
    signals = mapped("15_11_01_150916_VPWW54.xml", chiyoda)
    assert signals.warnings == ()
    assert signals.ignored is not None and signals.ignored.startswith("no area of the region")


# --- VPWW55–61 ---------------------------------------------------------------------


def test_new_generation_level_warnings(testville: JmaAreaTable) -> None:
    """The R06 level-named warnings map at the level in their name."""
    assert by_id(mapped("15_16_03_241226_VPWW55.xml", testville)) == {
        "jma:0121400:heavy_rain": ("issued", "heavy_rain_danger_warning", 4, ("riverside",))}
    assert by_id(mapped("15_16_01_241031_VPWW56.xml", testville)) == {
        "jma:0121400:landslide": ("issued", "landslide_danger_warning", 4, ("riverside",))}
    assert by_id(mapped("15_16_02_241031_VPWW57.xml", testville)) == {
        "jma:2620200:storm_surge": ("issued", "storm_surge_danger_warning", 4, ("riverside",))}


def test_new_generation_lifted_advisory_is_a_cancellation(testville: JmaAreaTable) -> None:
    """A レベル２大雨注意報 解除 (隠岐の島町) cancels that area's heavy-rain warning."""
    warnings = by_id(mapped("15_17_01_241226_VPWW55.xml", testville))
    assert warnings["jma:3252800:heavy_rain"] == (
        "cancelled", "heavy_rain_advisory", 2, ("hilltop",))
    assert warnings["jma:3220200:heavy_rain"][0] == "updated"


# --- VXKO ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind", "level"), [
    ("16_01_01_220728_VXKOii.xml", "river_flood_watch", 2),
    ("16_02_01_220728_VXKOii.xml", "river_flood_warning", 3),
    ("16_06_01_220728_VXKOii.xml", "river_flood_danger", 4),
    ("16_04_01_220728_VXKOii.xml", "river_flood_occurred", 5),
])
def test_river_flood_forecast_levels(
    name: str, kind: str, level: int, testville: JmaAreaTable
) -> None:
    """指定河川洪水予報 氾濫注意/警戒/危険/発生情報 map to levels 2/3/4/5 on the river's areas."""
    (warning,) = mapped(name, testville).warnings
    assert (warning.warning_id, warning.kind, warning.alert_level_equivalent) == (
        "jma:river:123456789012", kind, level)
    assert warning.hazard is Hazard.FLOOD and warning.area_ids == ("riverside",)


def test_river_flood_forecast_outside_region_is_ignored(chiyoda: JmaAreaTable) -> None:
    """A forecast for rivers the table does not list is ignored with their codes."""
    signals = mapped("16_06_01_220728_VXKOii.xml", chiyoda)
    assert signals.ignored is not None and "1234567890" in signals.ignored


# --- VXWW50 ------------------------------------------------------------------------


def test_landslide_alert_issued_then_lifted(testville: JmaAreaTable) -> None:
    """土砂災害警戒情報 警戒 is a level-4 landslide alert per area; its 解除 cancels it."""
    issued = by_id(mapped("17_03_04_190529_VXWW50.xml", testville))
    assert issued["jma:landslide:3342300"] == ("issued", "landslide_alert", 4, ("hilltop",))
    assert issued["jma:landslide:3310000"] == ("updated", "landslide_alert", 4, ("riverside",))
    lifted = by_id(mapped("17_03_07_190529_VXWW50.xml", testville))
    assert lifted["jma:landslide:3342300"] == ("cancelled", "landslide_alert", 4, ("hilltop",))


def test_landslide_alert_second_office(testville: JmaAreaTable) -> None:
    """The 渡島・檜山 samples: 松前町 警戒 発表, then 解除."""
    assert by_id(mapped("17_02_01_190529_VXWW50.xml", testville)) == {
        "jma:landslide:0133100": ("issued", "landslide_alert", 4, ("hilltop",))}
    assert by_id(mapped("17_02_03_190529_VXWW50.xml", testville)) == {
        "jma:landslide:0133100": ("cancelled", "landslide_alert", 4, ("hilltop",))}


# --- VPOA50 --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "area", "text"), [
    ("18_01_01_100806_VPOA50.xml", "riverside", "大阪市中央区で１３０ミリ"),
    ("18_02_01_111226_VPOA50.xml", "hilltop", "舞鶴市西部付近で１２０ミリ以上"),
])
def test_record_short_heavy_rain(name: str, area: str, text: str, testville: JmaAreaTable) -> None:
    """記録的短時間大雨情報 is an observation signal for the region's areas, headline kept."""
    signals = mapped(name, testville)
    (warning,) = signals.warnings
    assert warning.kind == "record_short_heavy_rain" and warning.area_ids == (area,)
    assert warning.hazard is None  # the rules act on it only where rules.toml lists it
    assert text in signals.headline


# --- VXSE51 / VXSE53 -------------------------------------------------------------------


def test_intensity_flash_for_tokyo_23_wards(chiyoda: JmaAreaTable) -> None:
    """VXSE51 震度速報 with 東京都２３区 (350) at 震度4 gives every Chiyoda district 4."""
    seismic = mapped("32-35_01_01_100806_VXSE51.xml", chiyoda).seismic
    assert seismic is not None and seismic.quake_id == "jma:quake:20090811050711"
    assert {i.area_id: i.shindo for i in seismic.intensities} == dict.fromkeys(
        CHIYODA_ALL, Shindo.S4)


def test_intensity_flash_second_sample(testville: JmaAreaTable) -> None:
    """VXSE51 of 2011-03-11 gives 岩手県沿岸南部 (riverside) 震度6弱."""
    seismic = mapped("32-39_11_01_120615_VXSE51.xml", testville).seismic
    assert seismic is not None
    assert {i.area_id: i.shindo for i in seismic.intensities} == {"riverside": Shindo.S6_LOWER}


def test_hypocentre_and_intensity_with_magnitude(testville: JmaAreaTable) -> None:
    """VXSE53 carries magnitude and epicentre; a city code counts like its area."""
    seismic = mapped("32-35_08_07_240613_VXSE53.xml", testville).seismic
    assert seismic is not None
    assert (seismic.magnitude, seismic.epicentre) == (6.3, "岩手県沖")
    assert {i.area_id: i.shindo for i in seismic.intensities} == {
        "riverside": Shindo.S4, "hilltop": Shindo.S1}


def test_hypocentre_and_intensity_for_chiyoda(chiyoda: JmaAreaTable) -> None:
    """VXSE53 of 2011-03-11: 震度5強 in Chiyoda, magnitude unknown (None)."""
    seismic = mapped("32-39_11_05_240613_VXSE53.xml", chiyoda).seismic
    assert seismic is not None and seismic.magnitude is None
    assert {i.shindo for i in seismic.intensities} == {Shindo.S5_UPPER}
    assert len(seismic.intensities) == 6


def test_distant_earthquake_without_intensity_is_ignored(chiyoda: JmaAreaTable) -> None:
    """遠地地震に関する情報 reports no intensity: ignored with the reason."""
    signals = mapped("32-39_05_01_100831_VXSE53.xml", chiyoda)
    assert signals.seismic is None and signals.ignored == "the message reports no intensity"


# --- VTSE41 ----------------------------------------------------------------------------


def test_tsunami_warnings_per_forecast_region(testville: JmaAreaTable) -> None:
    """VTSE41: 大津波警報 (771) level 5 and 津波警報 (312 東京湾内湾) level 4, per region."""
    # Both regions had a warning before (LastKind), so this message updates them.
    signals = mapped("32-39_12_07_250206_VTSE41.xml", testville)
    assert by_id(signals) == {
        "jma:tsunami:20160901071000:771": ("updated", "major_tsunami_warning", 5, ("riverside",)),
        "jma:tsunami:20160901071000:312": ("updated", "tsunami_warning", 4, ("hilltop",)),
    }
    assert all(w.hazard is Hazard.TSUNAMI for w in signals.warnings)


def test_tsunami_advisory_and_forecast_only_regions(testville: JmaAreaTable) -> None:
    """津波注意報 maps at level 3; a region with only 津波予報 is noted, not mapped."""
    assert by_id(mapped("38-39_02_01_250206_VTSE41.xml", testville)) == {
        "jma:tsunami:20151114055157:771": ("issued", "tsunami_advisory", 3, ("riverside",))}
    signals = mapped("32-39_11_02_250206_VTSE41.xml", testville)
    assert any("312" in note and "carries no warning" in note for note in signals.notes)


def test_tsunami_advisory_lifted(chiyoda: JmaAreaTable) -> None:
    """津波注意報解除 for 東京湾内湾 cancels that region's warning on Chiyoda's mapped districts."""
    assert by_id(mapped("32-39_13_07_250206_VTSE41.xml", chiyoda)) == {
        "jma:tsunami:20181204180000:312": (
            "cancelled", "tsunami_advisory", 3, ("izumibashi", "kanda-koen", "manseibashi"))}


# --- 取消 / 訂正 / 訓練 / 試験 ------------------------------------------------------------


def test_cancellation_of_a_quake_lists_its_id(chiyoda: JmaAreaTable) -> None:
    """A VXSE53 取消 with only a text body withdraws the quake of its EventID."""
    signals = mapped("32-35_06_06_100915_VXSE53.xml", chiyoda)
    assert signals.cancelled_ids == ("jma:quake:20080614084350",)
    assert signals.seismic is None and signals.ignored is None
    original = mapped("32-35_06_05_240613_VXSE53.xml", chiyoda).seismic
    assert original is not None and original.quake_id == signals.cancelled_ids[0]


def test_cancellation_of_a_tsunami_lists_the_regions_of_the_table(
    testville: JmaAreaTable,
) -> None:
    """A VTSE41 取消 withdraws the EventID's warning for every tsunami region of the table."""
    signals = mapped("38-39_03_01_210805_VTSE41.xml", testville)
    assert signals.cancelled_ids == (
        "jma:tsunami:20210805103531:312", "jma:tsunami:20210805103531:771")


def test_cancellation_of_a_river_forecast(testville: JmaAreaTable) -> None:
    """A VXKO 取消 (edited copy) cancels the same warning id the forecast issued."""
    issued = mapped("16_06_01_220728_VXKOii.xml", testville).warnings[0]
    cancelled = mapped("16_06_01_220728_VXKOii_edited-cancel.xml", testville).warnings[0]
    assert cancelled.warning_id == issued.warning_id
    assert cancelled.action is WarningAction.CANCELLED


def test_correction_updates_the_same_ids(chiyoda: JmaAreaTable, testville: JmaAreaTable) -> None:
    """A 訂正 (edited copies) is a correction: same warning ids, action updated."""
    original = mapped("15_13_01_161226_VPWW54.xml", chiyoda)
    corrected = mapped("15_13_01_161226_VPWW54_edited-correction.xml", chiyoda)
    assert corrected.correction and not original.correction
    assert [w.warning_id for w in corrected.warnings] == [w.warning_id for w in original.warnings]
    assert {w.action for w in corrected.warnings} == {WarningAction.UPDATED}
    assert corrected.message_id != original.message_id
    landslide = mapped("17_03_04_190529_VXWW50_edited-correction.xml", testville)
    assert landslide.correction
    assert {w.action for w in landslide.warnings} == {WarningAction.UPDATED}


def test_exercise_is_marked_and_otherwise_identical(chiyoda: JmaAreaTable) -> None:
    """A 訓練 message maps exactly like the real one, marked exercise."""
    real = mapped("15_13_01_161226_VPWW54.xml", chiyoda)
    drill = mapped("15_13_01_161226_VPWW54_edited-drill.xml", chiyoda)
    assert drill.exercise and not drill.test and not real.exercise
    assert drill.warnings == real.warnings


def test_exercise_samples_from_jma(testville: JmaAreaTable) -> None:
    """JMA's own 訓練 samples (VXSE53, VTSE41) are marked exercise."""
    assert mapped("32-35_01_03_240613_VXSE53.xml", testville).exercise
    assert mapped("32-39_12_07_250206_VTSE41.xml", testville).exercise


def test_test_status_is_marked(chiyoda: JmaAreaTable) -> None:
    """A 試験 message (edited copy) is marked test, not exercise."""
    signals = mapped("15_13_01_161226_VPWW54_edited-test.xml", chiyoda)
    assert signals.test and not signals.exercise


def test_message_id_is_stable() -> None:
    """The same message read twice has the same identity."""
    data = (FIXTURES / "17_03_04_190529_VXWW50.xml").read_bytes()
    assert message_id(read_jma(data)) == message_id(read_jma(data))
    assert message_id(read_jma(data)).startswith("jma:")


# --- tables ------------------------------------------------------------------------------


def test_kind_table_levels_follow_jma_correspondence() -> None:
    """kinds.toml holds JMA's 警戒レベル equivalents for the levelled kinds."""
    kinds = default_kinds()
    level = {name: r.level for r in (*kinds.warning, *kinds.river, *kinds.landslide)
             for name in r.names}
    assert level["大雨特別警報"] == 5
    assert level["警戒"] == 4  # 土砂災害警戒情報
    assert (level["氾濫注意情報"], level["氾濫警戒情報"], level["氾濫危険情報"],
            level["氾濫発生情報"]) == (2, 3, 4, 5)
    assert (level["高潮警報"], level["洪水警報"], level["大雨注意報"]) == (4, 3, 2)
    unofficial = [r for r in kinds.warning if not r.official]
    assert unofficial and all(r.hazard is None for r in unofficial)


def test_chiyoda_table_maps_1310100_to_every_district(chiyoda: JmaAreaTable) -> None:
    """Chiyoda's table maps 千代田区 1310100 and 東京都２３区 350 to all six districts."""
    districts = {d.id for d in load_region("chiyoda").districts}
    assert set(chiyoda.municipalities["1310100"]) == districts
    assert set(chiyoda.seismic_areas["350"]) == districts


def test_table_with_unknown_district_is_refused(tmp_path: Path) -> None:
    """A jma.toml naming a district the pack lacks is refused, naming the field."""
    pack = tmp_path / "testville"
    source = packs_root().joinpath("testville")
    shutil.copytree(str(source), pack)
    text = (pack / "jma.toml").read_text("utf-8")
    (pack / "jma.toml").write_text(
        text.replace('"3310000" = ["riverside"]', '"3310000" = ["nowhere"]'), "utf-8")
    with pytest.raises(UnknownDistrict) as info:
        load_jma_table(pack)
    assert info.value.field == "municipalities.3310000[0]"
