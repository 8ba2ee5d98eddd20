"""POST /v1/jma with JMA's own samples: intake → outbox → broker → hazard events, once.

出典：気象庁（防災情報XMLフォーマット）: the messages are tests/fixtures/jma/ (see its README).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from schemas.events import decode_event
from schemas.hazards import HazardWarning, SeismicIntensity
from schemas.topics import qualified
from services.common.auth import Role
from tests.support import (
    Running,
    auth,
    make_settings,
    read_topic,
    start_intake,
    token,
    wait_for,
)

pytestmark = pytest.mark.integration

JMA = Path(__file__).parent.parent / "fixtures" / "jma"
ALL_DISTRICTS = ["fujimi", "izumibashi", "jimbocho", "kanda-koen", "kojimachi", "manseibashi"]


@pytest.fixture
async def running(kafka_bootstrap: str, database_url: str, namespace: str,
                  db_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    """Intake for one test (region chiyoda)."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    async for r in start_intake(settings, db_pool):
        yield r


async def _post(running: Running, name: str, subject: str = "jma-sensor",
                role: Role = Role.SENSOR, senders: Sequence[str] = ("jma:*",)
                ) -> tuple[int, Any]:
    """Post a sample; a sensor token speaks for ``senders`` (every JMA office by default)."""
    bearer = token(role, subject, senders=senders if role is Role.SENSOR else ())
    status, body, _ = await running.post("/v1/jma", None, raw=(JMA / name).read_bytes(),
                                         headers={"Authorization": f"Bearer {bearer}"},
                                         content_type="application/xml")
    return status, body


async def _hazard_events(running: Running) -> list[Any]:
    await wait_for(lambda: _drained(running), what="outbox drained")
    records = await read_topic(running.settings, qualified("hazards.observations",
                                                           running.settings.namespace))
    return [decode_event(json.loads(r.value)) for r in records if r.value]


async def _drained(running: Running) -> bool:
    return await running.backlog() == 0


async def test_a_sensor_speaks_only_for_the_jma_offices_its_token_names(
        running: Running) -> None:
    """A sensor token without the message's office is 403 and writes nothing; HQ overrides."""
    name = "15_12_02_161130_VPWW54.xml"
    for senders in ((), ("jma:大阪管区気象台",)):
        status, body = await _post(running, name, senders=senders)
        assert (status, body["error"]) == (403, "sender_not_permitted"), body
    assert await running.backlog() == 0
    status, body = await _post(running, name, senders=("jma:気象庁予報部",))
    assert status == 202, body
    events = await _hazard_events(running)
    assert {e.payload.sender for e in events} == {"jma:気象庁予報部"}
    assert all(e.payload.overridden_by is None for e in events)


async def test_a_warning_for_chiyoda_becomes_hazard_warnings_once(running: Running) -> None:
    """VPWW54 東京都 (大雨・洪水警報 for 千代田区) → hazard.warning per kind on the broker, once."""
    status, body = await _post(running, "15_12_02_161130_VPWW54.xml")
    assert status == 202, body
    kinds = {w["kind"]: w for w in body["warnings"]}
    assert kinds["heavy_rain_warning"]["area_ids"] == ALL_DISTRICTS
    assert kinds["flood_warning"]["alert_level_equivalent"] == 3
    # The same message pushed again, even by another sensor, is the same input.
    status, again = await _post(running, "15_12_02_161130_VPWW54.xml", subject="other-sensor")
    assert (status, again) == (200, body)

    events = await _hazard_events(running)
    assert sorted(str(e.event_id) for e in events) == sorted(body["event_ids"])
    warnings = {e.payload.kind: e for e in events if isinstance(e, HazardWarning)}
    rain = warnings["heavy_rain_warning"]
    assert rain.exercise is False and rain.payload.source.value == "jma"
    assert list(rain.payload.area_ids) == ALL_DISTRICTS
    assert rain.payload.origin is not None
    assert rain.payload.origin.title == "東京都気象警報・注意報"
    assert rain.payload.origin.office == "気象庁予報部"


async def test_a_drill_message_is_flagged_exercise(running: Running) -> None:
    """A 訓練 message (Control/Status) becomes events with exercise=true."""
    status, body = await _post(running, "15_13_01_161226_VPWW54_edited-drill.xml")
    assert status == 202, body
    events = await _hazard_events(running)
    assert events and all(e.exercise for e in events)


async def test_seismic_intensity_reaches_the_districts(running: Running) -> None:
    """VXSE53 with 東京都２３区 → one hazard.seismic_intensity for every district."""
    status, body = await _post(running, "32-35_06_03_240613_VXSE53.xml")
    assert status == 202, body
    [event] = await _hazard_events(running)
    assert isinstance(event, SeismicIntensity)
    assert sorted(i.area_id for i in event.payload.intensities) == ALL_DISTRICTS


async def test_a_quake_cancellation_withdraws_the_quake(running: Running) -> None:
    """A VXSE53 取消 becomes the quake's withdrawal: same quake, same sender, no intensities."""
    status, body = await _post(running, "32-35_06_05_240613_VXSE53.xml")
    assert status == 202, body
    status, body = await _post(running, "32-35_06_06_100915_VXSE53.xml")
    assert status == 202, body
    events = await _hazard_events(running)
    [report] = [e for e in events if isinstance(e, SeismicIntensity) and not e.payload.withdrawn]
    [withdrawal] = [e for e in events if isinstance(e, SeismicIntensity) and e.payload.withdrawn]
    assert withdrawal.payload.quake_id == report.payload.quake_id
    assert withdrawal.payload.sender == report.payload.sender
    assert withdrawal.payload.intensities == ()


async def test_a_tsunami_cancellation_cancels_the_region_warning(running: Running) -> None:
    """A bodiless VTSE41 取消 becomes a cancelled hazard.warning for 東京湾内湾's districts."""
    status, body = await _post(running, "38-39_03_01_210805_VTSE41.xml")
    assert status == 202, body
    [event] = await _hazard_events(running)
    assert isinstance(event, HazardWarning)
    assert event.payload.action.value == "cancelled"
    assert event.payload.warning_id == "jma:tsunami:20210805103531:312"
    assert list(event.payload.area_ids) == ["izumibashi", "kanda-koen", "manseibashi"]


async def test_a_message_about_elsewhere_is_ignored_with_the_reason(running: Running) -> None:
    """A warning for 島根県 only is answered 200 'ignored' with the reason; nothing is written."""
    status, body = await _post(running, "15_11_01_150916_VPWW54.xml")
    assert status == 200, body
    assert body["status"] == "ignored" and "no area of the region" in body["reason"]
    assert await running.backlog() == 0


async def test_refusals_are_answered_as_for_cap(running: Running) -> None:
    """Not XML 400, a DOCTYPE 400, schema-invalid 422 with a pointer, a field token 403."""
    headers = auth(Role.SENSOR, "jma-sensor")
    status, body, _ = await running.post("/v1/jma", None, raw=b"<Report", headers=headers,
                                         content_type="application/xml")
    assert status == 400 and body["error"] == "malformed"
    doctype = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><Report/>'
    status, body, _ = await running.post("/v1/jma", None, raw=doctype, headers=headers,
                                         content_type="application/xml")
    assert status == 400
    text = (JMA / "15_12_02_161130_VPWW54.xml").read_text("utf-8")
    broken = text.replace("<InfoType>発表</InfoType>", "<InfoType>発令</InfoType>")
    assert broken != text
    status, body, _ = await running.post("/v1/jma", None, raw=broken.encode(), headers=headers,
                                         content_type="application/xml")
    assert status == 422, body
    assert body["errors"][0]["pointer"].startswith("/Report/Head/InfoType")
    status, _ = await _post(running, "15_12_02_161130_VPWW54.xml", role=Role.FIELD)
    assert status == 403
    status, body, _ = await running.post("/v1/jma", None, raw=text.encode(), headers=headers,
                                         content_type="application/json")
    assert status == 415
    assert await running.backlog() == 0


async def test_openapi_documents_the_jma_route(running: Running) -> None:
    """The OpenAPI document lists POST /v1/jma with its XML body and the Ignored answer."""
    status, doc = await running.get("/v1/openapi.json")
    assert status == 200
    post = doc["paths"]["/v1/jma"]["post"]
    assert "application/xml" in post["requestBody"]["content"]
    assert {"202", "200", "422"} <= set(post["responses"])
    assert "Ignored" in doc["components"]["schemas"]
