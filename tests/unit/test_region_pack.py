"""Region packs load, validate and answer queries; broken packs name file and field."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, shape

from infra.tools import build_region_chiyoda
from schemas.hazards import Hazard
from schemas.region import (
    LANGUAGES,
    DuplicateId,
    DuplicateTown,
    InvalidField,
    InvalidGeometry,
    InvalidPackFile,
    MissingTranslation,
    OverlappingDistricts,
    PackNotFound,
    Region,
    RegionPackError,
    SiteKind,
    SiteOutsideDistrict,
    ThresholdsOutOfOrder,
    UnknownDistrict,
    UnknownGauge,
    UnknownSite,
    UnsupportedLanguage,
    available_packs,
    load_region,
    packs_root,
)

CHIYODA_DISTRICTS = ("kojimachi", "fujimi", "jimbocho", "kanda-koen", "manseibashi", "izumibashi")
ADDRESS_PREFIX = "東京都千代田区"


@pytest.fixture(scope="module")
def chiyoda() -> Region:
    return load_region("chiyoda")


@pytest.fixture(scope="module")
def testville() -> Region:
    return load_region("testville")


# --- Chiyoda: contents -----------------------------------------------------------


def test_default_region_is_chiyoda() -> None:
    """load_region() without arguments loads the Chiyoda pack."""
    assert load_region().id == "chiyoda"


def test_shipped_packs_are_found_as_package_data() -> None:
    """The packs directory is found through importlib.resources and lists both packs."""
    assert {"chiyoda", "testville"} <= set(available_packs())


def test_chiyoda_has_28_sites_15_shelters_6_districts_3_gauges(chiyoda: Region) -> None:
    """Chiyoda loads with every designated site and shelter, the six districts and three gauges."""
    evacuation_sites = [s for s in chiyoda.sites if s.is_evacuation_site]
    shelters = [s for s in chiyoda.sites if s.is_shelter]
    assert len(evacuation_sites) == 28
    assert len(shelters) == 15
    # One record per physical place: 14 shelters share a site's address, one does not;
    # then the five illustrative stranded-commuter facilities of facilities.json.
    assert len(chiyoda.sites) == 29 + 5
    assert len(chiyoda.facilities()) == 5
    assert sum(1 for s in chiyoda.sites if s.kinds == {SiteKind.SHELTER}) == 1
    assert tuple(d.id for d in chiyoda.districts) == CHIYODA_DISTRICTS
    assert {g.river_names.ja for g in chiyoda.gauges} == {"神田川", "日本橋川", "荒川"}


def test_chiyoda_site_ids_derive_from_gsi_common_ids(chiyoda: Region) -> None:
    """A site's id is its first GSI 共通ID lower-cased, and every designation keeps its ID."""
    source_ids = [sid for s in chiyoda.sites for sid in s.source_ids]
    assert len(source_ids) == len(set(source_ids)) == 28 + 15
    for site in chiyoda.sites:
        if site.is_temporary_stay:
            assert site.source_ids == ()  # illustrative: no source data
            continue
        assert site.id == site.source_ids[0].lower()
        assert len(site.source_ids) == len(site.kinds)


def test_every_town_is_in_exactly_one_district(chiyoda: Region) -> None:
    """The 59 towns are split among the districts with none missing or repeated."""
    towns = [t for d in chiyoda.districts for t in d.towns]
    assert len(towns) == 59
    assert len(set(towns)) == 59
    assert all(d.towns for d in chiyoda.districts)


def test_district_mapping_is_marked_illustrative(chiyoda: Region) -> None:
    """Every Chiyoda district says its mapping is illustrative, and so do capacities."""
    assert all(d.illustrative for d in chiyoda.districts)
    assert all(s.capacity_illustrative and s.capacity > 0 for s in chiyoda.sites)
    assert all(g.thresholds_illustrative for g in chiyoda.gauges)


def test_every_name_exists_in_four_languages(chiyoda: Region, testville: Region) -> None:
    """Region, districts, sites and gauges have non-empty names in ja, en, zh and ko."""
    for region in (chiyoda, testville):
        ids = {region.id, *(d.id for d in region.districts), *(s.id for s in region.sites)}
        ids |= {g.id for g in region.gauges}
        for lang in LANGUAGES:
            names = region.names(lang)
            assert set(names) == ids
            assert all(name.strip() for name in names.values())
        for gauge in region.gauges:
            assert all(gauge.river_names.get(lang) for lang in LANGUAGES)


def test_names_are_per_language(chiyoda: Region) -> None:
    """names(lang) returns that language's names."""
    assert chiyoda.names("ja")["kanda-koen"] == "神田公園地区"
    assert chiyoda.names("en")["e1310100005201"] == "Kanda Hitotsubashi Junior High School"
    assert chiyoda.name("ko") == "지요다구"
    with pytest.raises(UnsupportedLanguage):
        chiyoda.names("fr")  # type: ignore[arg-type]


def test_attribution_names_every_source(chiyoda: Region) -> None:
    """The pack carries the GSI, LOA and OSM attribution lines."""
    text = "\n".join(chiyoda.attribution)
    assert "出典：国土地理院" in text
    assert "© Linked Open Addresses Japan, CC BY-SA 4.0" in text
    assert "© OpenStreetMap contributors, ODbL" in text


def test_readme_carries_attribution() -> None:
    """The Chiyoda pack's README carries the three attribution lines."""
    readme = packs_root().joinpath("chiyoda", "README.md").read_text(encoding="utf-8")
    for line in (
        "出典：国土地理院",
        "© Linked Open Addresses Japan, CC BY-SA 4.0",
        "© OpenStreetMap contributors, ODbL 1.0",
    ):
        assert line in readme


def test_site_districts_agree_with_the_town_in_the_address(chiyoda: Region) -> None:
    """A site's district (by its coordinates) is the district of the town in its address."""
    district_of_town = {t: d.id for d in chiyoda.districts for t in d.towns}
    for site in chiyoda.sites:
        address = site.address.removeprefix(ADDRESS_PREFIX)
        town = max((t for t in district_of_town if address.startswith(t)), key=len)
        assert district_of_town[town] == site.district_id, site.id


# --- Chiyoda: queries ------------------------------------------------------------


@pytest.mark.parametrize("hazard", list(Hazard))
def test_sites_for_hazard_are_exactly_the_designated_sites(chiyoda: Region, hazard: Hazard) -> None:
    """sites_for_hazard returns every site designated for the hazard and no other."""
    expected = {s.id for s in chiyoda.sites if hazard in s.hazards and s.is_evacuation_site}
    got = [s.id for s in chiyoda.sites_for_hazard(hazard)]
    assert len(got) == len(set(got))
    assert set(got) == expected
    assert all(hazard in chiyoda.site(i).hazards for i in got)


def test_sites_for_hazard_spot_checks_against_gsi(chiyoda: Region) -> None:
    """Designations match the GSI rows for a few known places."""
    flood = {s.id for s in chiyoda.sites_for_hazard(Hazard.FLOOD)}
    assert len(flood) == 23
    assert "e1310100005201" in flood  # 神田一橋中学校: 洪水 1
    assert "e1310100013201" not in flood  # 岩本町ほほえみプラザ: 洪水 empty
    assert chiyoda.site("e1310100016201").hazards == {Hazard.FLOOD}  # 専修大学
    assert chiyoda.site("e1310100005201").hazards == {
        Hazard.FLOOD,
        Hazard.LANDSLIDE,
        Hazard.EARTHQUAKE,
        Hazard.INLAND_FLOOD,
    }
    # No Chiyoda site is designated for tsunami or large fires.
    assert chiyoda.sites_for_hazard(Hazard.TSUNAMI) == ()
    assert chiyoda.sites_for_hazard(Hazard.LARGE_FIRE) == ()


def test_shelter_only_place_has_no_hazards(chiyoda: Region) -> None:
    """都立日比谷高校 is a shelter but no evacuation site, so it has no hazard designations."""
    hibiya = chiyoda.site("e1310100029111")
    assert hibiya.kinds == {SiteKind.SHELTER}
    assert hibiya.hazards == frozenset()
    assert hibiya.district_id == "kojimachi"


def test_facilities_take_people_and_are_no_designation(chiyoda: Region) -> None:
    """A stranded-commuter facility is found by id, takes people like a shelter, suits
    earthquakes, says whether it is accessible, and is never an evacuation designation."""
    facility = chiyoda.site("ts-marunouchi")
    assert facility.kinds == {SiteKind.TEMPORARY_STAY}
    assert facility.is_temporary_stay and facility.takes_people
    assert not facility.is_shelter and not facility.is_evacuation_site
    assert facility.hazards == {Hazard.EARTHQUAKE}
    assert facility.accessible is True and facility.capacity_illustrative
    assert {f.accessible for f in chiyoda.facilities()} == {True, False}
    assert "ts-marunouchi" not in {s.id for s in chiyoda.sites_for_hazard(Hazard.EARTHQUAKE)}
    takers = {s.id for s in chiyoda.sites if s.takes_people}
    assert takers == {s.id for s in chiyoda.sites if s.is_shelter} | {
        f.id for f in chiyoda.facilities()}
    assert all(s.accessible is None for s in chiyoda.sites if not s.is_temporary_stay)


def test_facilities_file_is_optional(tmp_path: Path) -> None:
    """A pack without facilities.json loads with no facilities."""
    directory = _copy_pack("testville", tmp_path)
    (directory / "facilities.json").unlink()
    assert load_region(directory).facilities() == ()


def test_sites_for_hazard_filtered_by_district(chiyoda: Region) -> None:
    """With a district, only that district's designated sites are returned."""
    total = 0
    for district_id in CHIYODA_DISTRICTS:
        sites = chiyoda.sites_for_hazard(Hazard.EARTHQUAKE, district_id)
        assert all(s.district_id == district_id for s in sites)
        total += len(sites)
    assert total == len(chiyoda.sites_for_hazard(Hazard.EARTHQUAKE))
    with pytest.raises(UnknownDistrict):
        chiyoda.sites_for_hazard(Hazard.FLOOD, "nowhere")


def test_shelters_in_each_district(chiyoda: Region) -> None:
    """shelters_in lists the shelters of a district; together they are all 15."""
    per_district = {d: chiyoda.shelters_in(d) for d in CHIYODA_DISTRICTS}
    assert all(s.is_shelter for sites in per_district.values() for s in sites)
    assert sum(len(v) for v in per_district.values()) == 15
    assert all(per_district.values()), "every district has at least one shelter"
    assert "e1310100029111" in {s.id for s in per_district["kojimachi"]}


def test_district_at_site_coordinates_returns_assigned_district(chiyoda: Region) -> None:
    """Each site's own coordinates fall in the district it was assigned at build time."""
    for site in chiyoda.sites:
        found = chiyoda.district_at(site.lat, site.lon)
        assert found is not None and found.id == site.district_id, site.id


@pytest.mark.parametrize(
    ("lat", "lon", "district_id"),
    [
        # Branch offices (出張所), positions © OpenStreetMap contributors, ODbL 1.0.
        (35.6977902, 139.7553048, "jimbocho"),
        (35.6991024, 139.7463841, "fujimi"),
        (35.6927468, 139.7681384, "kanda-koen"),
        (35.6976015, 139.7706485, "manseibashi"),
        (35.6972781, 139.774931, "izumibashi"),
        (35.6812, 139.7671, "kojimachi"),  # Tokyo Station, 丸の内
    ],
)
def test_district_at_known_places(
    chiyoda: Region, lat: float, lon: float, district_id: str
) -> None:
    """Known places resolve to their district."""
    found = chiyoda.district_at(lat, lon)
    assert found is not None and found.id == district_id


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(35.7101, 139.8107), (35.6896, 139.7006), (0.0, 0.0), (45.005, 7.005)],
)
def test_district_at_outside_the_ward_is_none(chiyoda: Region, lat: float, lon: float) -> None:
    """Points outside every district (Skytree, Shinjuku, null island, Testville) give None."""
    assert chiyoda.district_at(lat, lon) is None


def test_district_at_rejects_non_numbers(chiyoda: Region) -> None:
    """NaN is not a position."""
    with pytest.raises(ValueError, match="not a position"):
        chiyoda.district_at(math.nan, 139.76)


@settings(max_examples=300, deadline=None)
@given(
    lat=st.floats(min_value=35.665, max_value=35.708),
    lon=st.floats(min_value=139.727, max_value=139.785),
)
def test_district_at_agrees_with_plain_geometry(lat: float, lon: float) -> None:
    """district_at finds a district exactly when some district polygon covers the point."""
    region = _chiyoda_once()
    covering = [
        d.id for d in region.districts if shape(d.polygon.model_dump()).covers(Point(lon, lat))
    ]
    found = region.district_at(lat, lon)
    if covering:
        assert found is not None and found.id == covering[0]
    else:
        assert found is None


def test_lookups_of_unknown_ids_raise(chiyoda: Region) -> None:
    """Unknown district, site and gauge ids raise errors that are also LookupErrors."""
    for lookup, error in (
        (chiyoda.district, UnknownDistrict),
        (chiyoda.site, UnknownSite),
        (chiyoda.gauge, UnknownGauge),
    ):
        with pytest.raises(error):
            lookup("nope")
        with pytest.raises(LookupError):
            lookup("nope")


def test_gauges_have_ordered_thresholds_and_known_districts(chiyoda: Region) -> None:
    """Every gauge's thresholds rise strictly and its affected districts exist."""
    for gauge in chiyoda.gauges:
        values = [v for _, v in gauge.thresholds.levels()]
        assert values == sorted(values) and len(set(values)) == len(values)
        assert all(chiyoda.district(d) for d in gauge.affected_district_ids)
        assert gauge.reporting_period_seconds == 600
    arakawa = chiyoda.gauge("arakawa-iwabuchi")
    assert arakawa.thresholds.flood_watch == 4.1
    assert arakawa.thresholds.flood_danger == 7.7


def test_gauges_affecting_a_district(chiyoda: Region) -> None:
    """gauges_affecting lists the gauges whose river floods a district."""
    assert {g.id for g in chiyoda.gauges_affecting("izumibashi")} == {
        "kandagawa-ochanomizu",
        "arakawa-iwabuchi",
    }


# --- Testville: nothing is Chiyoda-specific --------------------------------------


def test_testville_loads_and_answers_queries(testville: Region) -> None:
    """A second, unrelated region loads and every query works on it."""
    assert testville.id == "testville"
    assert testville.default_language == "en"
    assert [d.id for d in testville.districts] == ["riverside", "hilltop"]
    assert len(testville.sites) == 4
    assert [s.id for s in testville.facilities()] == ["tv-station"]
    assert [s.id for s in testville.sites_for_hazard(Hazard.FLOOD)] == ["tv-hall"]
    assert [s.id for s in testville.sites_for_hazard(Hazard.EARTHQUAKE, "riverside")] == [
        "tv-school"
    ]
    assert [s.id for s in testville.shelters_in("hilltop")] == ["tv-gym"]
    found = testville.district_at(45.005, 7.015)
    assert found is not None and found.id == "hilltop"
    assert testville.district_at(35.6939, 139.7536) is None  # inside Chiyoda
    gauge = testville.gauge("testriver-mill")
    assert gauge.thresholds.standby is None and gauge.lat is None
    assert testville.names("zh")["riverside"] == "河畔区"


def test_boundary_point_goes_to_first_listed_district(testville: Region) -> None:
    """A point on a shared boundary belongs to the district listed first."""
    found = testville.district_at(45.005, 7.01)
    assert found is not None and found.id == "riverside"


def test_load_region_accepts_a_directory(tmp_path: Path) -> None:
    """A pack outside the package loads from a Path."""
    directory = _copy_pack("testville", tmp_path)
    assert load_region(directory).id == "testville"
    assert load_region(str(directory)).id == "testville"


def test_unknown_pack_name_lists_the_shipped_packs() -> None:
    """An unknown pack name is an error that names the packs there are."""
    with pytest.raises(PackNotFound, match="chiyoda"):
        load_region("atlantis")
    with pytest.raises(PackNotFound):
        load_region(Path("/nonexistent/pack"))


# --- broken packs ------------------------------------------------------------------

Mutation = Callable[[dict[str, str]], None]


def _replace(file: str, old: str, new: str) -> Mutation:
    def mutate(files: dict[str, str]) -> None:
        assert old in files[file], f"{old!r} not in {file}"
        files[file] = files[file].replace(old, new, 1)

    return mutate


def _edit_json(file: str, edit: Callable[[Any], None]) -> Mutation:
    def mutate(files: dict[str, str]) -> None:
        document = json.loads(files[file])
        edit(document)
        files[file] = json.dumps(document, ensure_ascii=False)

    return mutate


def _set_site(index: int, **changes: Any) -> Mutation:
    return _edit_json("sites.json", lambda doc: doc["sites"][index].update(changes))


def _set_facility(index: int, **changes: Any) -> Mutation:
    return _edit_json("facilities.json", lambda doc: doc["facilities"][index].update(changes))


def _drop_facility_field(index: int, name: str) -> Mutation:
    return _edit_json("facilities.json", lambda doc: doc["facilities"][index].pop(name))


def _drop_name(index: int, lang: str) -> Mutation:
    return _edit_json("sites.json", lambda doc: doc["sites"][index]["names"].pop(lang))


def _set_polygon(index: int, ring: list[list[float]]) -> Mutation:
    def edit(doc: Any) -> None:
        doc["features"][index]["geometry"]["coordinates"] = [ring]

    return _edit_json("districts.geojson", edit)


_SQUARE_OVER_BOTH = [[7.005, 45.0], [7.015, 45.0], [7.015, 45.01], [7.005, 45.01], [7.005, 45.0]]
_BOWTIE = [[7.01, 45.0], [7.02, 45.01], [7.02, 45.0], [7.01, 45.01], [7.01, 45.0]]

BROKEN: list[tuple[str, Mutation, type[RegionPackError], str, str]] = [
    (
        "facility without accessible",
        _drop_facility_field(0, "accessible"),
        InvalidField,
        "facilities.json",
        "facilities[0].accessible",
    ),
    (
        "facility without hazards",
        _set_facility(0, hazards=[]),
        InvalidField,
        "facilities.json",
        "facilities[0].hazards",
    ),
    (
        "facility combined with a shelter",
        _set_facility(0, kinds=["temporary_stay", "shelter"]),
        InvalidField,
        "facilities.json",
        "facilities[0].kinds",
    ),
    (
        "a shelter in the facilities file",
        _set_facility(0, kinds=["shelter"], hazards=[], accessible=None),
        InvalidField,
        "facilities.json",
        "facilities[0].kinds",
    ),
    (
        "accessible on a shelter",
        _set_site(2, accessible=True),
        InvalidField,
        "sites.json",
        "sites[2].accessible",
    ),
    (
        "facility id equal to a site id",
        _set_facility(0, id="tv-school"),
        DuplicateId,
        "facilities.json",
        "facilities[0].id",
    ),
    (
        "facility outside its district",
        _set_facility(0, district_id="hilltop"),
        SiteOutsideDistrict,
        "facilities.json",
        "facilities[0].district_id",
    ),
    (
        "duplicate site id",
        _set_site(1, id="tv-school"),
        DuplicateId,
        "sites.json",
        "sites[1].id",
    ),
    (
        "gauge id equal to a district id",
        _replace("pack.toml", 'id = "testriver-mill"', 'id = "riverside"'),
        DuplicateId,
        "pack.toml",
        "gauges[0].id",
    ),
    (
        "unknown district in a gauge",
        _replace(
            "pack.toml",
            'affected_district_ids = ["riverside"]',
            'affected_district_ids = ["harbour"]',
        ),
        UnknownDistrict,
        "pack.toml",
        "gauges[0].affected_district_ids[0]",
    ),
    (
        "unknown district in a site",
        _set_site(2, district_id="harbour"),
        UnknownDistrict,
        "sites.json",
        "sites[2].district_id",
    ),
    (
        "thresholds out of order",
        _replace("pack.toml", "evacuation_judgement = 2.5", "evacuation_judgement = 1.5"),
        ThresholdsOutOfOrder,
        "pack.toml",
        "gauges[0].thresholds.evacuation_judgement",
    ),
    (
        "equal thresholds",
        _replace("pack.toml", "flood_danger = 3.0", "flood_danger = 2.5"),
        ThresholdsOutOfOrder,
        "pack.toml",
        "gauges[0].thresholds.flood_danger",
    ),
    (
        "missing district name language",
        _replace("pack.toml", ', ko = "힐탑 지구"', ""),
        MissingTranslation,
        "pack.toml",
        "districts[1].names.ko",
    ),
    (
        "missing site name language",
        _drop_name(0, "zh"),
        MissingTranslation,
        "sites.json",
        "sites[0].names.zh",
    ),
    (
        "missing gauge river name language",
        _replace("pack.toml", 'en = "Test River", ', ""),
        MissingTranslation,
        "pack.toml",
        "gauges[0].river_names.en",
    ),
    (
        "site outside its district",
        _set_site(0, lat=45.005, lon=7.015),
        SiteOutsideDistrict,
        "sites.json",
        "sites[0].district_id",
    ),
    (
        "self-intersecting polygon",
        _set_polygon(1, _BOWTIE),
        InvalidGeometry,
        "districts.geojson",
        "features[1].geometry",
    ),
    (
        "overlapping districts",
        _set_polygon(1, _SQUARE_OVER_BOTH),
        OverlappingDistricts,
        "districts.geojson",
        "features[1].geometry",
    ),
    (
        "unclosed ring",
        _set_polygon(0, [[7.0, 45.0], [7.01, 45.0], [7.01, 45.01], [7.0, 45.01]]),
        InvalidField,
        "districts.geojson",
        "features[0].geometry.Polygon.coordinates",
    ),
    (
        "feature for an undeclared district",
        _edit_json(
            "districts.geojson", lambda doc: doc["features"][1]["properties"].update(id="harbour")
        ),
        UnknownDistrict,
        "districts.geojson",
        "features[1].properties.id",
    ),
    (
        "town in two districts",
        _replace("pack.toml", 'towns = ["Upper Town"]', 'towns = ["Upper Town", "Wharf"]'),
        DuplicateTown,
        "pack.toml",
        "districts[1].towns[1]",
    ),
    (
        "evacuation site without hazards",
        _set_site(1, hazards=[]),
        InvalidField,
        "sites.json",
        "sites[1].hazards",
    ),
    (
        "hazards on a shelter-only place",
        _set_site(2, hazards=["flood"]),
        InvalidField,
        "sites.json",
        "sites[2].hazards",
    ),
    (
        "unknown hazard",
        _set_site(0, hazards=["volcano"]),
        InvalidField,
        "sites.json",
        "sites[0].hazards[0]",
    ),
    (
        "negative capacity",
        _set_site(0, capacity=-1),
        InvalidField,
        "sites.json",
        "sites[0].capacity",
    ),
    (
        "unknown field",
        _set_site(0, capacty=10),
        InvalidField,
        "sites.json",
        "sites[0].capacty",
    ),
    (
        "bad time zone",
        _replace("pack.toml", 'timezone = "Europe/Rome"', 'timezone = "Mars/Olympus"'),
        InvalidField,
        "pack.toml",
        "timezone",
    ),
    (
        "not TOML",
        _replace("pack.toml", "format_version = 1", "format_version = = 1"),
        InvalidPackFile,
        "pack.toml",
        "",
    ),
    (
        "not JSON",
        _replace("sites.json", '"sites": [', '"sites": [[,'),
        InvalidPackFile,
        "sites.json",
        "",
    ),
]


@pytest.mark.parametrize(
    ("mutation", "error", "file", "field"),
    [pytest.param(*case[1:], id=case[0]) for case in BROKEN],
)
def test_broken_pack_names_file_and_field(
    tmp_path: Path, mutation: Mutation, error: type[RegionPackError], file: str, field: str
) -> None:
    """A broken pack fails to load with an error naming the file and the field at fault."""
    directory = _copy_pack("testville", tmp_path, mutation)
    with pytest.raises(error) as caught:
        load_region(directory)
    assert caught.value.file == str(directory / file)
    assert (caught.value.field or "") == field
    assert str(directory / file) in str(caught.value)
    assert field in str(caught.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    """A pack without sites.json fails naming the missing file."""
    directory = _copy_pack("testville", tmp_path)
    (directory / "sites.json").unlink()
    with pytest.raises(InvalidPackFile, match=r"sites\.json: file is missing"):
        load_region(directory)


def test_in_memory_pack_errors_name_the_model_field(testville: Region) -> None:
    """A Region built from a pack in memory reports fields of the pack model."""
    gauge = testville.pack.gauges[0].model_copy(update={"affected_district_ids": ("harbour",)})
    pack = testville.pack.model_copy(update={"gauges": (gauge,)})
    with pytest.raises(UnknownDistrict) as caught:
        Region(pack)
    assert caught.value.field == "gauges[0].affected_district_ids[0]"


# --- the build script (synthetic inputs; never the shared data) -------------------

_EVACUATION_HEADER = (
    "NO,共通ID,都道府県名及び市町村名,施設・場所名,住所,洪水,崖崩れ、土石流及び地滑り,高潮,地震,"
    "津波,大規模な火事,内水氾濫,火山現象,指定避難所との住所同一,備考,緯度,経度"
)
_SHELTER_HEADER = (
    "NO,共通ID,都道府県名及び市町村名,施設・場所名,住所,指定緊急避難場所との住所同一,"
    "その他市町村長が必要と認める事項,受入対象者,備考,緯度,経度"
)


def _write_build_inputs(tmp_path: Path, *, volcano: str = "") -> tuple[Path, Path, Path]:
    """Two square towns, two evacuation sites (one also a shelter) and one lone shelter."""
    source, pack = tmp_path / "source", tmp_path / "pack"
    source.mkdir()
    pack.mkdir()

    def town(name: str, x0: float) -> dict[str, Any]:
        ring = [[x0, 10.0], [x0 + 0.01, 10.0], [x0 + 0.01, 10.01], [x0, 10.01], [x0, 10.0]]
        return {
            "type": "Feature",
            "properties": {"name": ADDRESS_PREFIX + name},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }

    (source / "towns.geojson").write_text(
        json.dumps(
            {"type": "FeatureCollection", "features": [town("西町", 20.0), town("東町", 20.01)]}
        ),
        encoding="utf-8",
    )
    (source / build_region_chiyoda.EVACUATION_SITES_FILE).write_text(
        "\n".join(
            [
                _EVACUATION_HEADER,
                f"1,E9990000001201,x,西学校,{ADDRESS_PREFIX}西町1,1,,,1,,,,{volcano},1,,10.005,20.005",
                f"2,E9990000002201,x,東広場,{ADDRESS_PREFIX}東町1,,,1,,,,1,,,,10.005,20.015",
            ]
        )
        + "\n",
        encoding="utf-8-sig",
    )
    (source / build_region_chiyoda.SHELTERS_FILE).write_text(
        "\n".join(
            [
                _SHELTER_HEADER,
                f"1,E9990000001111,x,西学校,{ADDRESS_PREFIX}西町1,1,,,,10.005,20.005",
                f"2,E9990000003111,x,東会館,{ADDRESS_PREFIX}東町2,,,,,10.008,20.018",
            ]
        )
        + "\n",
        encoding="utf-8-sig",
    )
    names = ', en = "{0}", zh = "{0}", ko = "{0}"'
    (pack / "pack.toml").write_text(
        "\n".join(
            [
                'format_version = 1\nid = "synthetic"\ndefault_language = "ja"',
                'timezone = "Asia/Tokyo"\nattribution = ["test"]',
                '[names]\nja = "合成"\nen = "S"\nzh = "S"\nko = "S"',
                "[[districts]]",
                'id = "west"\nillustrative = true\ntowns = ["西町"]',
                'names = { ja = "西"' + names.format("W") + " }",
                "[[districts]]",
                'id = "east"\nillustrative = true\ntowns = ["東町"]',
                'names = { ja = "東"' + names.format("E") + " }",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    sites = tmp_path / "sites.toml"
    sites.write_text(
        "\n".join(
            [
                "[capacity_by_category]\nschool = 500\ncommunity = 300",
                '[sites.e9990000001201]\nja = "西学校"\ncategory = "school"'
                + _lines("West School"),
                '[sites.e9990000002201]\nja = "東広場"\ncategory = "community"' + _lines("East"),
                '[sites.e9990000003111]\nja = "東会館"\ncategory = "community"' + _lines("Hall"),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return source, pack, sites


def _lines(name: str) -> str:
    return "".join(f'\n{lang} = "{name}"' for lang in ("en", "zh", "ko"))


def _build_args(source: Path, pack: Path, sites: Path) -> list[str]:
    return ["--source", str(source), "--pack", str(pack), "--sites", str(sites)]


def test_build_writes_a_pack_that_loads_and_is_deterministic(tmp_path: Path) -> None:
    """The build script unions towns, links shelters to sites, and a rebuild is identical."""
    source, pack, sites = _write_build_inputs(tmp_path)
    assert build_region_chiyoda.main(_build_args(source, pack, sites)) == 0
    first = {p.name: p.read_bytes() for p in pack.iterdir()}
    assert build_region_chiyoda.main([*_build_args(source, pack, sites), "--check"]) == 0
    assert build_region_chiyoda.build(source, pack, sites) == {
        k: v for k, v in first.items() if k != "pack.toml"
    }

    region = load_region(pack)
    school = region.site("e9990000001201")
    assert school.kinds == {SiteKind.EVACUATION_SITE, SiteKind.SHELTER}
    assert school.source_ids == ("E9990000001201", "E9990000001111")
    assert school.hazards == {Hazard.FLOOD, Hazard.EARTHQUAKE}
    assert school.district_id == "west" and school.capacity == 500
    assert region.site("e9990000002201").hazards == {Hazard.STORM_SURGE, Hazard.INLAND_FLOOD}
    hall = region.site("e9990000003111")
    assert hall.kinds == {SiteKind.SHELTER} and hall.district_id == "east"


def test_build_check_reports_stale_files(tmp_path: Path) -> None:
    """--check exits 1 when a generated file differs from a rebuild."""
    source, pack, sites = _write_build_inputs(tmp_path)
    assert build_region_chiyoda.main(_build_args(source, pack, sites)) == 0
    (pack / "sites.json").write_text("{}", encoding="utf-8")
    assert build_region_chiyoda.main([*_build_args(source, pack, sites), "--check"]) == 1


def test_build_fails_naming_unmapped_towns(tmp_path: Path) -> None:
    """A town in no district stops the build, and the message names it."""
    source, pack, sites = _write_build_inputs(tmp_path)
    manifest = pack / "pack.toml"
    manifest.write_text(
        manifest.read_text(encoding="utf-8").replace('towns = ["東町"]', "towns = []")
    )
    with pytest.raises(build_region_chiyoda.BuildError, match="東町"):
        build_region_chiyoda.build(source, pack, sites)


def test_build_refuses_volcano_designations(tmp_path: Path) -> None:
    """A 火山現象 designation stops the build instead of being dropped silently."""
    source, pack, sites = _write_build_inputs(tmp_path, volcano="1")
    with pytest.raises(build_region_chiyoda.BuildError, match="火山現象"):
        build_region_chiyoda.build(source, pack, sites)


# --- helpers -------------------------------------------------------------------------

_CHIYODA: list[Region] = []


def _chiyoda_once() -> Region:
    # Hypothesis tests cannot take function-scoped fixtures; load once per module.
    if not _CHIYODA:
        _CHIYODA.append(load_region("chiyoda"))
    return _CHIYODA[0]


def _copy_pack(name: str, tmp_path: Path, mutation: Mutation | None = None) -> Path:
    """Copy a shipped pack (read through importlib.resources) into tmp_path, maybe edited."""
    source = packs_root().joinpath(name)
    files = {
        filename: source.joinpath(filename).read_text(encoding="utf-8")
        for filename in ("pack.toml", "districts.geojson", "sites.json", "facilities.json")
        if source.joinpath(filename).is_file()
    }
    if mutation is not None:
        mutation(files)
    directory = tmp_path / name
    directory.mkdir()
    for filename, text in files.items():
        (directory / filename).write_text(text, encoding="utf-8")
    return directory


def test_extra_pack_section_loads_into_a_service_model(tmp_path: Path) -> None:
    """A service's own TOML file in a pack loads into its model; errors name file and field."""
    import shutil

    from pydantic import BaseModel

    from schemas.region import InvalidPackFile, RegionPackError, load_pack_section
    from schemas.region.loader import packs_root

    class Rules(BaseModel):
        window_minutes: int

    pack = tmp_path / "pack"
    shutil.copytree(str(packs_root().joinpath("testville")), pack)
    (pack / "rules.toml").write_text("window_minutes = 30\n")
    assert load_pack_section(pack, "rules.toml", Rules).window_minutes == 30
    (pack / "rules.toml").write_text('window_minutes = "soon"\n')
    with pytest.raises(RegionPackError) as excinfo:
        load_pack_section(pack, "rules.toml", Rules)
    assert "rules.toml" in str(excinfo.value) and "window_minutes" in str(excinfo.value)
    with pytest.raises(InvalidPackFile, match="missing"):
        load_pack_section(pack, "no-such-section.toml", Rules)
