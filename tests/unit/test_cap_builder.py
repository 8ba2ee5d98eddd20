"""CAP 1.2 documents for orders: valid against the OASIS schema, graded, referenced, closed."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from lxml import etree

from schemas.broadcasts import BroadcastKind
from schemas.evacuation import OrderIssued, OrderLifted, OrderUpdated
from schemas.examples import example
from schemas.hazards import Hazard
from schemas.region import load_region
from services.broadcaster.cap import (
    CAP_NS,
    LEVEL_GRADING,
    CapAlert,
    CapRef,
    CapValidator,
    MsgType,
    build_alert,
    cap_time,
    identifier_for,
    polygons_for,
    to_bytes,
)
from services.broadcaster.domain import ChannelRoute, Planner, subject_of
from services.broadcaster.errors import CapInvalid
from services.broadcaster.templates import Composer, OrderFacts, load_templates

XSD = Path("schemas/cap/CAP-v1.2.xsd")
NS = {"cap": CAP_NS}
SENT = datetime(2025, 8, 21, 14, 8, 30, 123456, tzinfo=timezone(timedelta(hours=9)))
ORDER = UUID("6f1c1f7e-1a0f-4b59-9a55-3a7d3c1f9e01")
KINDS = {
    MsgType.ALERT: BroadcastKind.ORDER_ISSUED,
    MsgType.UPDATE: BroadcastKind.ORDER_UPDATED,
    MsgType.CANCEL: BroadcastKind.ORDER_LIFTED,
}


@cache
def schema() -> Any:
    """The OASIS schema, loaded by the test itself (not through the builder's validator)."""
    return etree.XMLSchema(etree.parse(str(XSD)))


@cache
def composer(pack: str = "chiyoda") -> Composer:
    return Composer(load_region(pack), load_templates(pack))


def alert(msg_type: MsgType, level: int = 4, *, exercise: bool = False,
          areas: tuple[str, ...] = ("kanda-koen", "manseibashi"),
          hazard: Hazard = Hazard.FLOOD, pack: str = "chiyoda") -> tuple[CapAlert, Any]:
    c = composer(pack)
    version = {MsgType.ALERT: 1, MsgType.UPDATE: 2, MsgType.CANCEL: 3}[msg_type]
    composed = c.order(OrderFacts(KINDS[msg_type], level, hazard, areas), exercise=exercise)
    sender = c.templates.cap.sender
    references = () if version == 1 else (
        CapRef(sender, identifier_for(c.region.id, "", ORDER, version - 1),
               SENT - timedelta(minutes=30)),)
    cap = CapAlert(identifier_for(c.region.id, "", ORDER, version), sender, SENT, exercise,
                   msg_type, ORDER, level, hazard, areas, composed, references=references,
                   drill_note="DRILL / 訓練")
    return cap, build_alert(cap, c.region)


def parsed(element: Any) -> Any:
    return etree.fromstring(to_bytes(element))


def test_every_order_kind_level_and_hazard_validates_against_the_xsd() -> None:
    """Alert, Update and Cancel for every level, hazard and drill flag pass CAP-v1.2.xsd."""
    validator = CapValidator()
    for msg_type, level, hazard, drill in itertools.product(MsgType, (3, 4, 5), Hazard,
                                                            (False, True)):
        _, element = alert(msg_type, level, exercise=drill, hazard=hazard)
        document = parsed(element)
        assert schema().validate(document), (msg_type, level, hazard, schema().error_log)
        validator.check(to_bytes(element))


def test_testville_alerts_validate_too() -> None:
    """A second region's alerts (another time zone, sender and polygons) are valid."""
    _, element = alert(MsgType.ALERT, areas=("riverside", "hilltop"), pack="testville")
    document = parsed(element)
    assert schema().validate(document), schema().error_log
    assert document.findtext("cap:sender", namespaces=NS) == "urn:sonae:testville"
    assert document.findtext("cap:sent", namespaces=NS) == "2025-08-21T07:08:30+02:00"


def test_header_fields() -> None:
    """identifier, sender, sent (local, whole seconds), status, msgType, scope, incidents."""
    cap, element = alert(MsgType.ALERT)
    doc = parsed(element)
    assert doc.findtext("cap:identifier", namespaces=NS) == cap.identifier
    assert doc.findtext("cap:sender", namespaces=NS) == "urn:sonae:chiyoda"
    assert doc.findtext("cap:sent", namespaces=NS) == "2025-08-21T14:08:30+09:00"
    assert doc.findtext("cap:status", namespaces=NS) == "Actual"
    assert doc.findtext("cap:msgType", namespaces=NS) == "Alert"
    assert doc.findtext("cap:scope", namespaces=NS) == "Public"
    assert doc.findtext("cap:incidents", namespaces=NS) == str(ORDER)
    assert doc.find("cap:references", namespaces=NS) is None
    assert doc.find("cap:note", namespaces=NS) is None


@pytest.mark.parametrize("msg_type", [MsgType.UPDATE, MsgType.CANCEL])
def test_update_and_cancel_reference_the_previous_version(msg_type: MsgType) -> None:
    """references is "sender,identifier,sent" of the version replaced."""
    cap, element = alert(msg_type)
    doc = parsed(element)
    assert doc.findtext("cap:msgType", namespaces=NS) == msg_type.value
    previous = cap.references[0]
    expected = (f"urn:sonae:chiyoda,{previous.identifier},"
                f"{cap_time(previous.sent, ZoneInfo('Asia/Tokyo'))}")
    assert doc.findtext("cap:references", namespaces=NS) == expected
    assert previous.identifier.endswith(f"-v{2 if msg_type is MsgType.CANCEL else 1}")


def test_exercise_is_status_exercise_with_a_drill_note() -> None:
    """A drill order becomes status Exercise, with a note and marked texts."""
    _, element = alert(MsgType.ALERT, exercise=True)
    doc = parsed(element)
    assert doc.findtext("cap:status", namespaces=NS) == "Exercise"
    assert "訓練" in doc.findtext("cap:note", namespaces=NS)
    headlines = doc.findall("cap:info/cap:headline", namespaces=NS)
    assert [h.text[:4] for h in headlines] == ["【訓練】", "[DRI", "【演练】", "[훈련]"]


def test_four_info_blocks_with_language_codes_and_area_names() -> None:
    """One info per language (ja-JP, en-US, zh-CN, ko-KR), each naming areas in its language."""
    _, element = alert(MsgType.ALERT)
    doc = parsed(element)
    infos = doc.findall("cap:info", namespaces=NS)
    assert [i.findtext("cap:language", namespaces=NS) for i in infos] == [
        "ja-JP", "en-US", "zh-CN", "ko-KR"]
    names = [[a.text for a in i.findall("cap:area/cap:areaDesc", namespaces=NS)] for i in infos]
    assert names == [["神田公園地区", "万世橋地区"], ["Kanda-koen", "Manseibashi"],
                     ["神田公园地区", "万世桥地区"], ["간다코엔 지구", "만세이바시 지구"]]
    assert infos[0].findtext("cap:event", namespaces=NS) == "警戒レベル4 避難指示（洪水）"
    assert infos[1].findtext("cap:event", namespaces=NS) == "Level 4: Evacuation Order (flood)"


@pytest.mark.parametrize("level", [3, 4, 5])
def test_grading_follows_the_level_table(level: int) -> None:
    """urgency/severity/certainty/responseType come from LEVEL_GRADING; a lift is Past/AllClear."""
    grading = LEVEL_GRADING[level]
    for msg_type in (MsgType.ALERT, MsgType.CANCEL):
        _, element = alert(msg_type, level)
        info = parsed(element).find("cap:info", namespaces=NS)
        got = (info.findtext("cap:urgency", namespaces=NS),
               info.findtext("cap:severity", namespaces=NS),
               info.findtext("cap:certainty", namespaces=NS),
               tuple(r.text for r in info.findall("cap:responseType", namespaces=NS)))
        if msg_type is MsgType.CANCEL:
            assert got == ("Past", "Minor", "Observed", ("AllClear",))
        else:
            assert got == (grading.urgency, grading.severity, grading.certainty,
                           grading.response_types)
        assert info.findtext("cap:eventCode/cap:value", namespaces=NS) == str(level)
    assert LEVEL_GRADING[4].response_types == ("Evacuate",)
    assert LEVEL_GRADING[5].severity == "Extreme"


def test_polygons_are_closed_lat_lon_rings_of_at_most_100_points() -> None:
    """Every district polygon is "lat,lon ..." with first == last, simplified when large."""
    region = load_region("chiyoda")
    for district in region.districts:
        rings = polygons_for(district.polygon)
        assert rings
        for ring in rings:
            points = ring.split(" ")
            assert points[0] == points[-1]
            assert 4 <= len(points) <= 100
            for point in points:
                lat, lon = (float(v) for v in point.split(","))
                assert 35.6 < lat < 35.8 and 139.6 < lon < 139.9  # lat first, in Chiyoda


def test_large_polygons_are_simplified_without_moving_far() -> None:
    """Simplifying the biggest district keeps its area within a few percent."""
    from shapely.geometry import Polygon, shape

    region = load_region("chiyoda")
    biggest = max(region.districts, key=lambda d: len(d.polygon.model_dump()["coordinates"][0]))
    original = shape(biggest.polygon.model_dump())
    ring = polygons_for(biggest.polygon)[0]
    simplified = Polygon([(float(p.split(",")[1]), float(p.split(",")[0]))
                          for p in ring.split(" ")])
    assert abs(simplified.area - original.area) / original.area < 0.03
    assert simplified.symmetric_difference(original).area / original.area < 0.05


def test_an_invalid_document_is_refused_with_a_clear_error() -> None:
    """A document without sender fails validation naming the problem; nothing is published."""
    _, element = alert(MsgType.ALERT)
    sender = element.find("cap:sender", namespaces=NS)
    element.remove(sender)
    with pytest.raises(CapInvalid, match=r"CAP-v1\.2\.xsd: line \d+: .*sent"):
        CapValidator().check(to_bytes(element))
    with pytest.raises(CapInvalid, match="not well-formed"):
        CapValidator().check(b"<alert>")


def test_cap_time_is_numeric_offset_whole_seconds_and_utc_minus_zero() -> None:
    """CAP forbids "Z": UTC is -00:00; fractions of a second are dropped."""
    moment = datetime(2025, 8, 21, 5, 8, 30, 999999, tzinfo=UTC)
    assert cap_time(moment, ZoneInfo("UTC")) == "2025-08-21T05:08:30-00:00"
    assert cap_time(moment, ZoneInfo("Asia/Tokyo")) == "2025-08-21T14:08:30+09:00"


def test_identifiers_are_deterministic_and_apart_per_namespace() -> None:
    """Same order and version → same identifier; a drill namespace never reuses a live one."""
    live = identifier_for("chiyoda", "", ORDER, 2)
    assert live == identifier_for("chiyoda", "", ORDER, 2) == f"sonae-chiyoda-{ORDER}-v2"
    drill = identifier_for("chiyoda", "drill.2025-08-21", ORDER, 2)
    assert drill != live and "drill.2025-08-21" in drill


def test_planner_builds_valid_cap_for_each_example_order() -> None:
    """issued → Alert, updated → Update with references, lifted → Cancel listed for a while."""
    planner = Planner(composer(), "", [ChannelRoute("cap-feed", True, ("mul",), "cap")])
    now = datetime(2025, 8, 21, 6, 0, tzinfo=UTC)
    previous: CapRef | None = None
    for event_type, cls in (("evacuation.order_issued", OrderIssued),
                            ("evacuation.order_updated", OrderUpdated),
                            ("evacuation.order_lifted", OrderLifted)):
        event = example(event_type)
        assert isinstance(event, cls)
        subject = subject_of(event)
        assert subject is not None
        plan = planner.plan(subject, now=now, previous=previous)
        assert plan.cap_xml is not None and plan.warnings == ()
        doc = etree.fromstring(plan.cap_xml)
        assert schema().validate(doc), schema().error_log
        (delivery,) = plan.deliveries
        assert delivery.state == "pending" and delivery.language == "mul"
        assert delivery.meta["identifier"] == plan.message.cap_identifier
        if previous is not None:
            assert previous.identifier in doc.findtext("cap:references", namespaces=NS)
        if cls is OrderLifted:
            assert delivery.meta["msg_type"] == "Cancel" and delivery.meta["expires"]
        assert plan.message.cap_identifier is not None
        previous = CapRef("urn:sonae:chiyoda", plan.message.cap_identifier, event.occurred_at)


def test_planner_warns_when_the_previous_version_is_unknown() -> None:
    """An update whose earlier version was never seen is published without references."""
    planner = Planner(composer(), "", [ChannelRoute("cap-feed", True, ("mul",), "cap")])
    subject = subject_of(example("evacuation.order_updated"))
    assert subject is not None
    plan = planner.plan(subject, now=datetime.now(UTC))
    assert plan.cap_xml is not None and b"<references>" not in plan.cap_xml
    assert any("references left out" in w for w in plan.warnings)
