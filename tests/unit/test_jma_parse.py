"""JMA XML: safe parsing, limits, XSD validation and typed reading, against JMA's samples."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from schemas.jma import (
    DataType,
    InfoType,
    JmaNotWellFormed,
    JmaSchemaInvalid,
    JmaStatus,
    JmaTooLarge,
    JmaUnsupported,
    jma_schema,
    parse_jma,
    read_jma,
)
from schemas.jma.model import RiverFloodBody, SeismicBody, TsunamiBody, WarningBody

FIXTURES = Path(__file__).parent.parent / "fixtures" / "jma"
SAMPLES = sorted(FIXTURES.glob("*.xml"))


def sample(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_fixtures_are_all_of_jmas_samples_with_attribution() -> None:
    """All 75 JMA samples and the five edited copies are shipped, with the 出典 line."""
    edited = [p for p in SAMPLES if "_edited-" in p.name]
    assert len(SAMPLES) - len(edited) == 75
    assert len(edited) == 5
    readme = (FIXTURES / "README.md").read_text("utf-8")
    assert "出典：気象庁（防災情報XMLフォーマット）" in readme
    assert all(p.name in readme for p in edited)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_parses_validates_and_reads(path: Path) -> None:
    """Every shipped sample is valid against JMA's schemas and reads into a typed message."""
    message = read_jma(path.read_bytes())
    code = path.stem.split("_")[4]
    expected = {
        "VPWW54": DataType.VPWW54, "VXKOii": DataType.VXKO, "VXWW50": DataType.VXWW50,
        "VPOA50": DataType.VPOA50, "VXSE51": DataType.VXSE51, "VXSE53": DataType.VXSE53,
        "VTSE41": DataType.VTSE41,
    }.get(code, DataType.VPWW55_61)
    assert message.data_type is expected
    assert message.head.report_date_time.tzinfo is not None
    cancelled_without_body = message.head.info_type is InfoType.CANCELLED and message.data_type in (
        DataType.VXSE53, DataType.VTSE41)
    assert (message.body is None) is cancelled_without_body


def test_control_and_head_are_read() -> None:
    """Control and Head fields come through as published."""
    m = read_jma(sample("15_13_01_161226_VPWW54.xml"))
    assert m.control.status is JmaStatus.NORMAL
    assert m.control.editorial_office == "気象庁本庁"
    assert m.head.title == "東京都気象警報・注意報"
    assert m.head.info_type is InfoType.ISSUED
    assert m.head.info_kind == "気象警報・注意報"
    assert m.head.report_date_time.isoformat() == "2016-12-13T20:45:00+09:00"


def test_warning_body_reads_municipal_kinds() -> None:
    """VPWW54 reads the municipality-level items: 千代田区 1310100 has 暴風警報 発表."""
    body = read_jma(sample("15_13_01_161226_VPWW54.xml")).body
    assert isinstance(body, WarningBody)
    assert body.prefecture is not None and body.prefecture.code == "130000"
    chiyoda = next(a for a in body.areas if a.area.code == "1310100")
    assert [(k.name, k.code, k.status) for k in chiyoda.kinds] == [("暴風警報", "05", "発表")]


def test_river_flood_body_reads_kind_area_and_rivers() -> None:
    """VXKO reads the kind and the coded forecast area and rivers from the headline."""
    body = read_jma(sample("16_06_01_220728_VXKOii.xml")).body
    assert isinstance(body, RiverFloodBody)
    assert body.kind.name == "氾濫危険情報"
    assert body.forecast_area is not None and body.forecast_area.code == "123456789012"
    assert [r.code for r in body.rivers] == ["1234567890", "9876543210"]


def test_seismic_body_reads_earthquake_and_intensities() -> None:
    """VXSE53 reads origin, hypocentre, magnitude, and intensity per area and city."""
    body = read_jma(sample("32-35_08_07_240613_VXSE53.xml")).body
    assert isinstance(body, SeismicBody) and body.earthquake is not None
    assert body.earthquake.magnitude == 6.3
    assert body.earthquake.hypocentre is not None
    assert body.earthquake.hypocentre.name == "岩手県沖"
    assert any(i.level == "city" and i.code == "0321000" for i in body.intensities)


def test_unknown_magnitude_is_none() -> None:
    """A magnitude JMA gives as NaN (M8を超える巨大地震) reads as None."""
    body = read_jma(sample("32-39_11_05_240613_VXSE53.xml")).body
    assert isinstance(body, SeismicBody) and body.earthquake is not None
    assert body.earthquake.magnitude is None


def test_tsunami_body_reads_regions() -> None:
    """VTSE41 reads each forecast region with its kind code."""
    body = read_jma(sample("38-39_02_01_250206_VTSE41.xml")).body
    assert isinstance(body, TsunamiBody)
    first = body.regions[0]
    assert (first.area.code, first.kind_name, first.kind_code) == ("771", "津波注意報", "62")


def test_exercise_status_is_read() -> None:
    """A 訓練 sample reads as an exercise; the edited 試験 copy as a test."""
    assert read_jma(sample("32-39_12_07_250206_VTSE41.xml")).exercise
    assert read_jma(sample("15_13_01_161226_VPWW54_edited-test.xml")).test


# --- refusals ---------------------------------------------------------------------


def test_size_limit_refuses_before_parsing() -> None:
    """A message over max_bytes is refused as too large."""
    data = sample("15_11_02_150916_VPWW54.xml")
    with pytest.raises(JmaTooLarge) as info:
        parse_jma(data, max_bytes=100_000)
    assert info.value.limit == 100_000 and info.value.actual == len(data)


def test_element_count_limit() -> None:
    """A message with more elements than max_elements is refused as too large."""
    with pytest.raises(JmaTooLarge, match="more than 50 elements"):
        parse_jma(sample("15_13_01_161226_VPWW54.xml"), max_elements=50)


def test_default_limits_admit_every_sample() -> None:
    """The default limits leave room for JMA's largest sample."""
    largest = max(SAMPLES, key=lambda p: p.stat().st_size)
    parse_jma(largest.read_bytes())


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Report xmlns="http://xml.kishou.go.jp/jmaxml1/"><Control><Title>&lol9;</Title></Control></Report>
"""


def test_billion_laughs_is_refused_without_expansion() -> None:
    """An entity-expansion bomb is refused as not well-formed, quickly, never expanded."""
    started = time.monotonic()
    with pytest.raises(JmaNotWellFormed) as info:
        parse_jma(BILLION_LAUGHS)
    assert time.monotonic() - started < 1.0
    # libxml2 stops it at its amplification guard, or the DOCTYPE check does.
    assert "lollol" not in str(info.value)


def test_external_entity_is_refused_and_not_read(tmp_path: Path) -> None:
    """An external entity (XXE) is refused for its DOCTYPE; the file's text never appears."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET", "utf-8")
    data = (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "{secret.as_uri()}">]>'
        '<Report xmlns="http://xml.kishou.go.jp/jmaxml1/"><Control><Title>&x;</Title>'
        "</Control></Report>"
    ).encode()
    with pytest.raises(JmaNotWellFormed) as info:
        parse_jma(data)
    assert "TOP-SECRET" not in str(info.value)


def test_not_well_formed_names_the_line() -> None:
    """Broken XML is refused as not well-formed, with the line."""
    with pytest.raises(JmaNotWellFormed) as info:
        parse_jma(b"<Report>\n<Control>\n</Report>")
    assert info.value.line is not None and "not well-formed" in str(info.value)


def test_empty_body_is_refused() -> None:
    """An empty message is refused as not well-formed."""
    with pytest.raises(JmaNotWellFormed, match="empty"):
        parse_jma(b"  \n")


def test_schema_invalid_head_names_pointer_and_line() -> None:
    """A Head element JMA's schema does not allow is refused with its path and line."""
    data = sample("17_03_04_190529_VXWW50.xml").replace(
        b"<InfoType>", b"<InfoTypeX>", 1).replace(b"</InfoType>", b"</InfoTypeX>", 1)
    with pytest.raises(JmaSchemaInvalid) as info:
        parse_jma(data)
    problem = info.value.problems[0]
    assert problem.pointer == "/Report/Head/InfoTypeX"
    assert problem.line is not None and problem.code == "jma_schema"


def test_schema_invalid_control_status() -> None:
    """A Control/Status outside 通常/訓練/試験 is refused by the schema."""
    data = sample("15_13_01_161226_VPWW54.xml").replace(
        "<Status>通常</Status>".encode(), "<Status>本番</Status>".encode(), 1)
    with pytest.raises(JmaSchemaInvalid) as info:
        parse_jma(data)
    assert info.value.pointer == "/Report/Control/Status"


def test_body_is_validated_too() -> None:
    """The body is checked against jmx_seis.xsd: a magnitude that is not a number is refused."""
    data = sample("32-35_08_07_240613_VXSE53.xml").replace(
        b'description="\xef\xbc\xad\xef\xbc\x96\xef\xbc\x8e\xef\xbc\x93">6.3<',
        b'description="x">six<', 1)
    assert b">six<" in data
    with pytest.raises(JmaSchemaInvalid) as info:
        parse_jma(data)
    assert "Magnitude" in info.value.pointer


def test_unsupported_data_type_is_refused_after_validation() -> None:
    """A valid message of a data type Sonae does not read is refused as unsupported."""
    data = sample("18_01_01_100806_VPOA50.xml").replace(
        "<Title>記録的短時間大雨情報</Title>".encode(), "<Title>竜巻注意情報</Title>".encode(), 1)
    parse_jma(data)  # still valid
    with pytest.raises(JmaUnsupported) as info:
        read_jma(data)
    assert info.value.pointer == "/Report/Head/InfoKind"


def test_schema_is_built_once_and_shared_across_threads() -> None:
    """The compiled schema is one object, and concurrent validations all succeed."""
    results: list[bool] = []
    data = sample("32-35_08_07_240613_VXSE53.xml")

    def work() -> None:
        parse_jma(data)
        results.append(jma_schema() is jma_schema())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 8
