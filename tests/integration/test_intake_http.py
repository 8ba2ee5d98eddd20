"""Intake over HTTP against the real PostgreSQL and broker: every answer, and events once."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from schemas.topics import CATALOGUE, qualified
from services.common.auth import Role, issue_token
from services.intake.ratelimit import RateLimiter
from tests.support import (
    REGION,
    SECRET,
    SHELTER,
    TEAM_AREAS,
    Running,
    auth,
    event_ids_on,
    make_settings,
    read_topic,
    report_body,
    start_intake,
    token,
    wait_for,
)

pytestmark = pytest.mark.integration

CAP_DIR = Path(__file__).parent.parent / "fixtures" / "cap"
CAP_SENDER = "cap:jma-test@example.jp"
"""The sender of sonae_chiyoda_heavy_rain.xml (its <sender> is jma-test@example.jp)."""


@pytest.fixture
async def running(kafka_bootstrap: str, database_url: str, namespace: str,
                  db_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    """Intake for one test."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    async for r in start_intake(settings, db_pool):
        yield r


# --- acceptance, idempotency and events ----------------------------------------------


async def test_report_is_accepted_once_replayed_and_conflicting(running: Running) -> None:
    """202 first, 200 with the same body on resend, 409 for another body; two events once."""
    status, first, response = await running.post("/v1/reports", report_body(),
                                                 headers=auth(Role.FIELD))
    assert status == 202, first
    assert first["status"] == "accepted" and first["client_report_id"] == "r-1"
    assert first["area_id"] == "kanda-koen" and first["outside_region"] is False
    assert response.headers["Location"] == first["links"]["self"]

    status, again, _ = await running.post("/v1/reports", report_body(), headers=auth(Role.FIELD))
    assert (status, again) == (200, first)

    status, conflict, _ = await running.post("/v1/reports", report_body(severity=2),
                                             headers=auth(Role.FIELD))
    assert status == 409 and conflict["error"] == "conflict"
    assert conflict["report_id"] == first["report_id"]

    # Another team may use the same client id: its own report.
    status, other, _ = await running.post("/v1/reports", report_body(),
                                          headers=auth(Role.FIELD, "jimbocho-team"))
    assert status == 202 and other["report_id"] != first["report_id"]

    await wait_for(lambda: _drained(running), what="outbox drained")
    ids = await event_ids_on(running.settings, "reports")
    assert sorted(ids) == sorted(first["event_ids"] + other["event_ids"])  # each exactly once
    records = await read_topic(running.settings, qualified("reports", running.settings.namespace))
    types = sorted(json.loads(r.value)["type"] for r in records if r.value)
    assert types == ["report.accepted"] * 2 + ["report.submitted"] * 2
    # Keys come from the catalogue: the resolved area for report.accepted.
    assert {r.key for r in records if json.loads(r.value)["type"] == "report.accepted"} == {
        b"kanda-koen"}


async def _drained(running: Running) -> bool:
    return await running.backlog() == 0


async def test_get_report_by_id_and_client_id(running: Running) -> None:
    """GET finds a report by report_id or client id, for its team and hq, not for others."""
    _, ack, _ = await running.post("/v1/reports", report_body("get-me"),
                                   headers=auth(Role.FIELD))
    for ident in (ack["report_id"], "get-me"):
        status, view = await running.get(f"/v1/reports/{ident}", auth(Role.FIELD))
        assert status == 200 and view["status"] == "accepted", view
        assert view["area_id"] == "kanda-koen" and view["reasons"] == []
        assert view["submitted_event_id"] == ack["event_id"]
    status, _ = await running.get(f"/v1/reports/{ack['report_id']}", auth(Role.HQ, "hq-duty"))
    assert status == 200
    status, body = await running.get("/v1/reports/get-me", auth(Role.FIELD, "other-team"))
    assert status == 404 and body["error"] == "not_found"
    status, _ = await running.get("/v1/reports/get-me", auth(Role.SENSOR, "gauge-feed"))
    assert status == 403


async def test_invalid_report_lists_every_error_and_is_recorded(running: Running) -> None:
    """422 names every field by JSON pointer; GET shows rejected and why; a fix is accepted."""
    bad = report_body("fix-me", severity=9, category="meteor", location={"lat": 95, "lon": 0},
                      unexpected=True)
    status, body, _ = await running.post("/v1/reports", bad, headers=auth(Role.FIELD))
    assert status == 422, body
    assert {e["pointer"] for e in body["errors"]} == {
        "/severity", "/category", "/location/lat", "/unexpected"}
    assert body["status"] == "rejected"
    status, again, _ = await running.post("/v1/reports", bad, headers=auth(Role.FIELD))
    assert (status, again) == (422, body)  # same body: same answer, no second event
    other_bad = report_body("fix-me", severity=0)
    status, _, _ = await running.post("/v1/reports", other_bad, headers=auth(Role.FIELD))
    status2, _, _ = await running.post("/v1/reports", bad, headers=auth(Role.FIELD))
    assert (status, status2) == (422, 422)  # alternating wrong attempts are each recorded

    status, view = await running.get("/v1/reports/fix-me", auth(Role.FIELD))
    assert status == 200 and view["status"] == "rejected"
    assert {r["field"] for r in view["reasons"]} == {
        "severity", "category", "location.lat", "unexpected"}

    status, fixed, _ = await running.post("/v1/reports", report_body("fix-me"),
                                          headers=auth(Role.FIELD))
    assert status == 202 and fixed["report_id"] == body["report_id"]
    status, view = await running.get("/v1/reports/fix-me", auth(Role.FIELD))
    assert view["status"] == "accepted" and view["reasons"] == []

    await wait_for(lambda: _drained(running), what="outbox drained")
    records = await read_topic(running.settings, qualified("reports", running.settings.namespace))
    types = sorted(json.loads(r.value)["type"] for r in records if r.value)
    assert types == ["report.accepted"] + ["report.rejected"] * 3 + ["report.submitted"]


async def test_outside_the_ward_is_accepted_and_flagged(running: Running) -> None:
    """Coordinates outside every district are accepted with outside_region set."""
    status, body, _ = await running.post(
        "/v1/reports", report_body("far", location={"lat": 35.0, "lon": 135.0}),
        headers=auth(Role.FIELD))
    assert status == 202 and body["outside_region"] is True and "area_id" not in body


# --- error paths ---------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"{", b"\xff{}", b'{"a":1,"a":2}', b"", b'{"x": NaN}'])
async def test_malformed_body_is_400(running: Running, raw: bytes) -> None:
    """Bodies that are not acceptable JSON are 400 with a reason."""
    status, body, _ = await running.post("/v1/reports", None, raw=raw, headers=auth(Role.FIELD))
    assert status == 400 and body["error"] == "malformed" and body["message"]


async def test_missing_expired_and_tampered_tokens_are_401(running: Running) -> None:
    """No token, an expired one, a tampered one and a foreign one are all 401."""
    status, body, response = await running.post("/v1/reports", report_body())
    assert status == 401 and "Bearer" in response.headers["WWW-Authenticate"]
    expired = issue_token(SECRET, Role.FIELD, "t", timedelta(seconds=5), areas=TEAM_AREAS,
                          now=datetime.now(UTC) - timedelta(hours=1))
    good = token(Role.FIELD)
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    foreign = issue_token("some-other-secret-0123456789abcdefgh", Role.FIELD, "t",
                          timedelta(hours=1), areas=TEAM_AREAS)
    for bad in (expired, tampered, foreign, "garbage"):
        status, body, response = await running.post(
            "/v1/reports", report_body(), headers={"Authorization": f"Bearer {bad}"})
        assert status == 401 and body["error"] == "unauthorized", body
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_roles_are_enforced_with_403(running: Running) -> None:
    """A field token cannot post a warning or shelter status; public tokens get nothing."""
    warning = {"observation": "warning", "warning_id": "w-1", "kind": "flood_warning",
               "name": "洪水警報", "alert_level_equivalent": 3, "area_ids": ["kanda-koen"],
               "issued_at": "2025-08-21T05:00:00Z", "source": "manual"}
    status, body, _ = await running.post("/v1/hazards/observations", warning,
                                         headers=auth(Role.FIELD))
    assert status == 403 and body["error"] == "forbidden"
    status, _, _ = await running.post(f"/v1/shelters/{SHELTER}/status", {"action": "open"},
                                      headers=auth(Role.FIELD))
    assert status == 403
    status, _, _ = await running.post("/v1/reports", report_body(), headers=auth(Role.PUBLIC))
    assert status == 403
    status, _, _ = await running.post("/v1/reports", report_body(exercise=True),
                                      headers=auth(Role.FIELD))
    assert status == 403  # only sensor and hq may flag drill traffic
    status, _, _ = await running.post("/v1/hazards/observations", warning,
                                      headers=auth(Role.HQ, "hq-duty"))
    assert status == 202


async def test_oversized_body_is_413(running: Running) -> None:
    """A body over the limit is 413, whether declared or streamed."""
    huge = json.dumps(report_body(description="x" * 100_000)).encode()
    status, body, _ = await running.post("/v1/reports", None, raw=huge, headers=auth(Role.FIELD))
    assert status == 413 and body["error"] == "too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    async with running.session.post(
            running.url + "/v1/reports", data=chunks(),
            headers={"Content-Type": "application/json", **auth(Role.FIELD)}) as response:
        assert response.status == 413


async def test_wrong_content_type_is_415(running: Running) -> None:
    """JSON endpoints want application/json; /v1/cap wants CAP XML."""
    status, body, _ = await running.post("/v1/reports", report_body(), headers=auth(Role.FIELD),
                                         content_type="text/plain")
    assert status == 415 and body["error"] == "unsupported_media_type"
    status, _, _ = await running.post("/v1/cap", None, raw=b"<alert/>",
                                      headers=auth(Role.SENSOR, "feed"),
                                      content_type="application/json")
    assert status == 415
    status, _, _ = await running.post("/v1/reports", report_body(), headers=auth(Role.FIELD),
                                      content_type="application/json; charset=latin-1")
    assert status == 415


async def test_rate_limit_is_429_with_retry_after(kafka_bootstrap: str, database_url: str,
                                                  namespace: str, db_pool: asyncpg.Pool) -> None:
    """Past the burst, a token gets 429 with Retry-After; another token is unaffected."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    async for running in start_intake(settings, db_pool, limiter=RateLimiter(2, 0.1)):
        headers = auth(Role.FIELD, "eager")
        codes = [(await running.post("/v1/reports", report_body(f"r-{i}"), headers=headers))[0]
                 for i in range(3)]
        assert codes == [202, 202, 429]
        status, body, response = await running.post("/v1/reports", report_body("r-9"),
                                                     headers=headers)
        assert status == 429 and body["error"] == "rate_limited"
        assert int(response.headers["Retry-After"]) >= 1
        status, _, _ = await running.post("/v1/reports", report_body("r-9"),
                                          headers=auth(Role.FIELD, "patient"))
        assert status == 202


NASTY: list[bytes] = [
    b"[]", b"null", b"42", b'"text"', b"[" * 50 + b"]" * 50,
    json.dumps({"client_report_id": "x", "\u0000key": 1}).encode(),
    json.dumps({"client_report_id": "a" * 500}).encode(),
    json.dumps(report_body("n-1", severity=True)).encode(),
    json.dumps(report_body("n-2", severity=4.0)).encode(),
    json.dumps(report_body("n-3", location={"lat": 1e400, "lon": 0})).encode(),
    json.dumps(report_body("n-4", description="\x00\x07")).encode(),
    json.dumps(report_body("n-5", occurred_at=1700000000)).encode(),
    json.dumps(report_body("n-6", occurred_at="0001-01-01T00:00:00+14:00")).encode(),
    json.dumps(report_body("n-7", reporter={"team": "x" * 101})).encode(),
    json.dumps(report_body("n-8", casualties={"injured": 10**30})).encode(),
    b'{"client_report_id": "n-9", "' + b"k" * 5000 + b'": 1}',
    json.dumps({"client_report_id": "n-10", "location": None, "area_id": None,
                "category": "fire", "severity": 1}).encode(),
    json.dumps(report_body("n-11", severity=9, reporter={"team": "a\u0000b"})).encode(),
    json.dumps(report_body("n-12", severity=9, **{"k\u0000": 1, "x" * 300: 2})).encode(),
    json.dumps(report_body("n-13", exercise="yes", occurred_at="soon")).encode(),
]


async def test_bad_input_never_500(running: Running) -> None:
    """Hostile or odd bodies get a 4xx with a JSON reason, never a 500."""
    for raw in NASTY:
        status, body, _ = await running.post("/v1/reports", None, raw=raw,
                                             headers=auth(Role.FIELD))
        assert status in (400, 413, 422), (raw[:80], status, body)
        assert body["error"] and body["message"]


# --- shelters, hazards, CAP ----------------------------------------------------------


async def test_shelter_status_with_idempotency_key(running: Running) -> None:
    """Shelter staff open a shelter (202), the same key replays (200), events land once."""
    headers = {**auth(Role.SHELTER_STAFF, "staff-1"), "Idempotency-Key": "open-1"}
    status, first, _ = await running.post(f"/v1/shelters/{SHELTER}/status",
                                          {"action": "open", "capacity": 300}, headers=headers)
    assert status == 202, first
    status, again, _ = await running.post(f"/v1/shelters/{SHELTER}/status",
                                          {"action": "open", "capacity": 300}, headers=headers)
    assert (status, again) == (200, first)
    status, _, _ = await running.post(f"/v1/shelters/{SHELTER}/status",
                                      {"action": "occupancy", "occupancy": 50},
                                      headers=auth(Role.SHELTER_STAFF, "staff-1"))
    assert status == 202
    status, body, _ = await running.post("/v1/shelters/nowhere/status", {"action": "open"},
                                         headers=auth(Role.SHELTER_STAFF, "staff-1"))
    assert status == 404 and body["error"] == "not_found"
    await wait_for(lambda: _drained(running), what="outbox drained")
    records = await read_topic(running.settings,
                               qualified("shelters.updates", running.settings.namespace))
    assert sorted(json.loads(r.value)["type"] for r in records if r.value) == [
        "shelter.occupancy_reported", "shelter.opened"]
    assert {r.key for r in records} == {SHELTER.encode()}


async def test_a_facility_opens_fills_and_closes_like_a_shelter(running: Running) -> None:
    """A stranded-commuter facility (一時滞在施設) takes open, occupancy and close; an
    evacuation-only site is refused 404."""
    facility = "ts-ogawamachi"
    for body in ({"action": "open"}, {"action": "occupancy", "occupancy": 420},
                 {"action": "close"}):
        status, answer, _ = await running.post(f"/v1/shelters/{facility}/status", body,
                                               headers=auth(Role.HQ, "hq-1"))
        assert status == 202, answer
    evacuation_only = next(s.id for s in REGION.sites if not s.takes_people)
    status, body, _ = await running.post(f"/v1/shelters/{evacuation_only}/status",
                                         {"action": "open"}, headers=auth(Role.HQ, "hq-1"))
    assert status == 404 and body["error"] == "not_found"
    await wait_for(lambda: _drained(running), what="outbox drained")
    records = await read_topic(running.settings,
                               qualified("shelters.updates", running.settings.namespace))
    assert sorted(json.loads(r.value)["type"] for r in records if r.value) == [
        "shelter.closed", "shelter.occupancy_reported", "shelter.opened"]
    assert {r.key for r in records} == {facility.encode()}


async def test_hazard_observation_and_unknown_gauge(running: Running) -> None:
    """A sensor's gauge reading is accepted; an unknown gauge is 422 at /gauge_id."""
    gauge = REGION.gauges[0].id
    reading = {"observation": "gauge_reading", "gauge_id": gauge, "level_m": 2.5,
               "observed_at": "2025-08-21T05:00:00Z"}
    status, body, _ = await running.post("/v1/hazards/observations", reading,
                                         headers=auth(Role.SENSOR, "gauge-feed"))
    assert status == 202, body
    status, body, _ = await running.post("/v1/hazards/observations",
                                         {**reading, "gauge_id": "nowhere"},
                                         headers=auth(Role.SENSOR, "gauge-feed"))
    assert status == 422 and body["errors"][0]["pointer"] == "/gauge_id"


async def test_cap_alert_becomes_warnings(running: Running) -> None:
    """A CAP alert for Chiyoda becomes hazard.warning events; a resend is 200."""
    xml = (CAP_DIR / "sonae_chiyoda_heavy_rain.xml").read_bytes()
    # The feed's token speaks for the alert's <sender> (else 403, see below).
    headers = {"Authorization": "Bearer " + token(Role.SENSOR, "jma-feed",
                                                  senders=[CAP_SENDER])}
    status, body, _ = await running.post("/v1/cap", None, raw=xml, headers=headers,
                                         content_type="application/cap+xml")
    assert status == 202, body
    assert [w["kind"] for w in body["warnings"]] == ["heavy_rain_warning", "flood_warning"]
    status, again, _ = await running.post("/v1/cap", None, raw=xml, headers=headers,
                                          content_type="application/cap+xml")
    assert (status, again) == (200, body)
    await wait_for(lambda: _drained(running), what="outbox drained")
    ids = await event_ids_on(running.settings, "hazards.observations")
    assert sorted(ids) == sorted(body["event_ids"])


async def test_a_sensor_can_update_or_cancel_only_its_own_senders_warnings(
        running: Running) -> None:
    """CAP and JSON warnings are bound to the token's senders; others 403; HQ overrides."""
    xml = (CAP_DIR / "sonae_chiyoda_heavy_rain.xml").read_bytes()
    feed = {"Authorization": "Bearer " + token(Role.SENSOR, "jma-feed", senders=[CAP_SENDER])}
    rogue = auth(Role.SENSOR, "rogue-feed")
    status, issued, _ = await running.post("/v1/cap", None, raw=xml, headers=feed,
                                           content_type="application/cap+xml")
    assert status == 202, issued
    warning_id = issued["warnings"][0]["warning_id"]
    # The same alert (or its Cancel) from a token that is not its sender: refused.
    status, body, _ = await running.post("/v1/cap", None, raw=xml, headers=rogue,
                                         content_type="application/cap+xml")
    assert status == 403 and body["error"] == "sender_not_permitted", body
    assert "sender binding" in body["message"] and CAP_SENDER in body["message"]
    cancel = {"observation": "warning", "warning_id": warning_id, "action": "cancelled",
              "kind": "heavy_rain_warning", "name": "大雨警報", "alert_level_equivalent": 3,
              "area_ids": ["kanda-koen"], "issued_at": "2025-08-21T06:00:00Z",
              "source": "manual"}
    status, body, _ = await running.post("/v1/hazards/observations",
                                         {**cancel, "sender": CAP_SENDER},
                                         headers=rogue)
    assert status == 403 and body["error"] == "sender_not_permitted", body
    # Without a sender the rogue's cancellation is its own warning, not the feed's.
    status, own, _ = await running.post("/v1/hazards/observations", cancel, headers=rogue)
    assert status == 202, own
    # HQ may cancel the feed's warning: recorded under the feed's sender, naming HQ.
    status, override, _ = await running.post(
        "/v1/hazards/observations", {**cancel, "sender": CAP_SENDER},
        headers=auth(Role.HQ, "hq-duty"))
    assert status == 202, override
    status, body, _ = await running.post(
        "/v1/hazards/observations", {**cancel, "overridden_by": "rogue-feed"}, headers=rogue)
    assert status == 422 and body["errors"][0]["pointer"] == "/overridden_by"

    await wait_for(lambda: _drained(running), what="outbox drained")
    records = await read_topic(running.settings,
                               qualified("hazards.observations", running.settings.namespace))
    payloads = {json.loads(r.value)["event_id"]: json.loads(r.value)["payload"]
                for r in records if r.value}
    assert {(payloads[i]["sender"], payloads[i]["overridden_by"])
            for i in issued["event_ids"]} == {(CAP_SENDER, None)}
    assert (payloads[own["event_id"]]["sender"],
            payloads[own["event_id"]]["overridden_by"]) == ("token:rogue-feed", None)
    assert (payloads[override["event_id"]]["sender"],
            payloads[override["event_id"]]["overridden_by"]) == (CAP_SENDER, "hq-duty")


async def test_invalid_cap_is_refused_with_the_schema_reason(running: Running) -> None:
    """invalid.cap fails the OASIS schema: 422 naming the missing element."""
    status, body, _ = await running.post("/v1/cap", None,
                                         raw=(CAP_DIR / "invalid.cap").read_bytes(),
                                         headers=auth(Role.SENSOR, "feed"),
                                         content_type="application/xml")
    assert status == 422 and "scope" in body["message"]
    assert body["errors"][0]["code"] == "cap_schema"
    status, body, _ = await running.post("/v1/cap", None, raw=b"<alert", content_type="text/xml",
                                         headers=auth(Role.SENSOR, "feed"))
    assert status == 400


# --- operational endpoints ------------------------------------------------------------


async def test_health_metrics_and_openapi(running: Running) -> None:
    """/healthz says only healthy, /metrics is Prometheus text with the outbox backlog, the
    OpenAPI document is there."""
    await running.post("/v1/reports", report_body(), headers=auth(Role.FIELD))
    status, health = await running.get("/healthz")
    assert status == 200 and health == {"status": "healthy"}
    status, text = await running.get("/metrics")
    assert status == 200 and 'intake_http_requests_total{method="POST",route="/v1/reports",' \
                             'status="202"} 1.0' in text
    assert re.search(r"^intake_outbox_backlog \d+\.0$", text, re.MULTILINE), text
    status, doc = await running.get("/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    assert "/v1/reports" in doc["paths"] and "ReportRequest" in doc["components"]["schemas"]
    # The document is the region's: its shelter and area ids are enumerated.
    shelter = doc["paths"]["/v1/shelters/{shelter_id}/status"]["post"]["parameters"][0]
    assert SHELTER in shelter["schema"]["enum"]
    area = doc["components"]["schemas"]["ReportRequest"]["properties"]["area_id"]
    assert "kanda-koen" in next(b["enum"] for b in area["anyOf"] if b.get("type") == "string")
    status, body = await running.get("/v1/nothing-here", auth(Role.HQ, "hq"))
    assert status == 404 and body["error"] == "not_found"


def test_catalogue_has_the_topics_intake_uses() -> None:
    """Intake writes only to catalogue topics (reports, shelters, hazards, deadletter)."""
    assert {"intake.raw", "reports", "shelters.updates", "hazards.observations",
            "deadletter"} <= set(CATALOGUE)
