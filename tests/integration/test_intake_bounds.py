"""Bounded work per request, against the real PostgreSQL and broker: CAP element limits,
XML parsed off the event loop in a bounded pool, slow clients cut off, a connection cap,
and a rate limit for requests without a valid token."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from infra.kafka import clients
from schemas.deadletter import DeadLetter
from schemas.topics import qualified
from services.common.auth import Role
from services.intake.cap import CapLimits
from services.intake.ingest import Ingest
from services.intake.parsepool import ParsePool
from services.intake.ratelimit import RateLimiter
from tests.support import (
    Running,
    auth,
    make_settings,
    read_topic,
    report_body,
    seconds_until_cut_off,
    start_intake,
    token,
    wait_for,
)

pytestmark = pytest.mark.integration

JMA = Path(__file__).parent.parent / "fixtures" / "jma"
SENDER = "bounds@example.jp"
FEED = {"Authorization": "Bearer " + token(Role.SENSOR, "cap-feed", senders=[f"cap:{SENDER}"])}


def alert(identifier: str = "bounds-1", *, infos: int = 1, areas: int = 1, circles: int = 0,
          polygons: int = 0, points: int = 5, geocodes: int = 0, parameters: int = 0) -> bytes:
    """A schema-valid CAP alert for Chiyoda with as many elements of each kind as asked
    (the polygons, circles and geocodes all in the first area of the first info)."""
    def polygon() -> str:
        # ``points - 1`` corners on a small circle in 神田, then the first again.
        corners = [(35.6905 + 0.001 * math.cos(2 * math.pi * k / (points - 1)),
                    139.7705 + 0.001 * math.sin(2 * math.pi * k / (points - 1)))
                   for k in range(points - 1)]
        ring = [*corners, corners[0]]
        return "<polygon>" + " ".join(f"{la:.6f},{lo:.6f}" for la, lo in ring) + "</polygon>"

    def area(first: bool) -> str:
        return ("<area><areaDesc>千代田区</areaDesc>"
                + "".join(polygon() for _ in range(polygons if first else 0))
                + "".join(f"<circle>35.69{i % 10},139.76{i % 10} 0.{i % 9 + 1}</circle>"
                          for i in range(circles if first else 0))
                + "".join(f"<geocode><valueName>x</valueName><value>{i}</value></geocode>"
                          for i in range(geocodes if first else 0))
                + "</area>")

    def info(first: bool) -> str:
        return ("<info><language>ja-JP</language><category>Met</category><event>大雨警報</event>"
                "<urgency>Expected</urgency><severity>Severe</severity>"
                "<certainty>Likely</certainty>"
                + "".join("<parameter><valueName>p</valueName><value>v</value></parameter>"
                          for _ in range(parameters if first else 0))
                + "".join(area(first and n == 0) for n in range(areas)) + "</info>")

    return (f'<?xml version="1.0" encoding="UTF-8"?>'
            f'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
            f"<identifier>{identifier}</identifier><sender>{SENDER}</sender>"
            f"<sent>2025-08-21T14:00:00+09:00</sent><status>Actual</status>"
            f"<msgType>Alert</msgType><scope>Public</scope>"
            + "".join(info(n == 0) for n in range(infos)) + "</alert>").encode()


async def post_cap(running: Running, xml: bytes) -> tuple[int, Any, Any]:
    return await running.post("/v1/cap", None, raw=xml, headers=FEED,
                              content_type="application/cap+xml")


async def rows_written(running: Running) -> int:
    async with running.pool.acquire() as conn:
        return int(await conn.fetchval(
            "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM intake_requests)"))


@pytest.fixture
async def small(kafka_bootstrap: str, database_url: str, namespace: str,
                db_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    """Intake with small CAP limits (each 3, polygon points 12, elements 200)."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    limits = CapLimits(elements=200, infos=3, areas=3, polygons=3, circles=3,
                       polygon_points=12, geocodes=3)
    async for r in start_intake(settings, db_pool, intake_options={"cap_limits": limits}):
        yield r


# --- CAP element limits --------------------------------------------------------------


@pytest.mark.parametrize(("over", "at_limit", "pointer", "count", "setting"), [
    ({"infos": 4}, {"infos": 3}, "/alert/info", 4, "SONAE_INTAKE_CAP_MAX_INFOS"),
    ({"areas": 4}, {"areas": 3}, "/alert/info/area", 4, "SONAE_INTAKE_CAP_MAX_AREAS"),
    ({"circles": 4}, {"circles": 3}, "/alert/info/area/circle", 4,
     "SONAE_INTAKE_CAP_MAX_CIRCLES"),
    ({"polygons": 4, "points": 4}, {"polygons": 3, "points": 4}, "/alert/info/area/polygon",
     4, "SONAE_INTAKE_CAP_MAX_POLYGONS"),
    ({"polygons": 1, "points": 13}, {"polygons": 1, "points": 12},
     "/alert/info/area/polygon", 13, "SONAE_INTAKE_CAP_MAX_POLYGON_POINTS"),
    ({"geocodes": 4}, {"geocodes": 3}, "/alert/info/area/geocode", 4,
     "SONAE_INTAKE_CAP_MAX_GEOCODES"),
    ({"parameters": 64}, {"parameters": 60}, "/alert", 208, "SONAE_INTAKE_CAP_MAX_ELEMENTS"),
], ids=["info", "area", "circle", "polygon", "polygon-points", "geocode", "elements"])
async def test_each_cap_limit_is_413_naming_the_limit_and_the_count(
        small: Running, over: dict[str, int], at_limit: dict[str, int], pointer: str,
        count: int, setting: str) -> None:
    """One over a limit: 413 too_large naming the element, the count, the limit and the
    setting; nothing is recorded; at the limit the alert is accepted."""
    status, body, _ = await post_cap(small, alert("over", **over))
    assert status == 413, body
    assert body["error"] == "too_large" and setting in body["message"]
    # Every limit exceeded is named (four infos are also four areas); this one once.
    [error] = [e for e in body["errors"] if setting in e["message"]]
    assert (error["pointer"], error["code"]) == (pointer, "too_many")
    limit = {"SONAE_INTAKE_CAP_MAX_POLYGON_POINTS": 12,
             "SONAE_INTAKE_CAP_MAX_ELEMENTS": 200}.get(setting, 3)
    assert error["message"].startswith(f"{count} ")
    assert f"the limit is {limit} ({setting})" in error["message"]
    assert await rows_written(small) == 0  # never half-applied

    status, body, _ = await post_cap(small, alert("at-limit", **at_limit))
    assert status == 202, body


async def test_a_jma_message_over_its_element_limit_is_413(
        kafka_bootstrap: str, database_url: str, namespace: str, db_pool: asyncpg.Pool) -> None:
    """A JMA message with more elements than SONAE_INTAKE_JMA_MAX_ELEMENTS is 413."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    async for running in start_intake(settings, db_pool,
                                      intake_options={"max_jma_elements": 100}):
        xml = (JMA / "15_11_01_150916_VPWW54.xml").read_bytes()
        headers = {"Authorization": "Bearer " + token(Role.SENSOR, "jma", senders=["jma:*"])}
        status, body, _ = await running.post("/v1/jma", None, raw=xml, headers=headers,
                                             content_type="application/xml")
        assert status == 413 and body["error"] == "too_large", body
        assert "100 elements" in body["message"]
        assert await rows_written(running) == 0


# --- the event loop keeps answering ----------------------------------------------------

SLOW_CIRCLES = 20_000
"""Circles in the slow alert: ~0.7 MB, seconds of work (each circle meets every district)."""


async def test_other_requests_are_answered_promptly_while_a_limit_sized_cap_is_parsed(
        kafka_bootstrap: str, database_url: str, namespace: str, db_pool: asyncpg.Pool) -> None:
    """While an alert at the (raised) circle limit is parsed and mapped, /healthz and a
    report are answered far sooner than the parse takes."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    limits = CapLimits(elements=10 * SLOW_CIRCLES, circles=SLOW_CIRCLES)
    async for running in start_intake(
            settings, db_pool, intake_options={"cap_limits": limits},
            app_options={"unauthenticated_limiter": RateLimiter(10_000, 10_000)}):
        xml = alert("slow-1", circles=SLOW_CIRCLES)
        assert len(xml) < 1024 * 1024  # within the default byte limit
        started = time.monotonic()
        parse = asyncio.create_task(post_cap(running, xml))
        latencies: list[float] = []
        report_latency = None
        while not parse.done():
            t = time.monotonic()
            status, _ = await running.get("/healthz")
            latencies.append(time.monotonic() - t)
            assert status == 200
            if report_latency is None and time.monotonic() - started > 0.3:
                t = time.monotonic()
                status, body, _ = await running.post(
                    "/v1/reports", report_body("during-parse"), headers=auth(Role.FIELD))
                report_latency = time.monotonic() - t
                assert status == 202, body
        status, body, _ = await parse
        took = time.monotonic() - started
        assert status == 202, body
    # The alert must take long enough that answers held up behind it would show.
    assert took > 1.5, f"the alert took only {took:.2f} s: make it larger"
    # On the loop, the answers wait for the parse: the slowest takes about `took`.
    bound = max(0.5, took / 4)
    assert max(latencies) < bound, (max(latencies), took)
    assert report_latency is not None and report_latency < bound, (report_latency, took)
    assert len(latencies) >= 5, latencies  # they were answered during the parse


async def test_a_full_parsing_pool_is_503_with_retry_after(
        kafka_bootstrap: str, database_url: str, namespace: str, db_pool: asyncpg.Pool) -> None:
    """With one thread and no queue, an alert posted while another is parsed is 503 with
    Retry-After and records nothing; sent again afterwards it is accepted."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    pool = ParsePool(workers=1, queue=0)
    limits = CapLimits(elements=10 * SLOW_CIRCLES, circles=SLOW_CIRCLES)
    async for running in start_intake(settings, db_pool,
                                      intake_options={"cap_limits": limits, "parsing": pool}):
        slow = asyncio.create_task(post_cap(running, alert("slow-2", circles=SLOW_CIRCLES)))
        await wait_for(lambda: pool.in_flight == 1, what="the slow alert is being parsed")
        status, body, response = await post_cap(running, alert("quick-1"))
        assert status == 503 and body["error"] == "unavailable", body
        assert response.headers["Retry-After"] == "1"
        assert (await slow)[0] == 202
        status, body, _ = await post_cap(running, alert("quick-1"))
        assert status == 202, body


# --- slow clients, the connection cap ---------------------------------------------------


def _address(running: Running) -> tuple[str, int]:
    host, port = running.url.removeprefix("http://").split(":")
    return host, int(port)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection (within ``seconds``)."""
    return await asyncio.wait_for(reader.read(), seconds)


async def test_a_client_trickling_its_headers_is_cut_off(
        kafka_bootstrap: str, database_url: str, namespace: str, db_pool: asyncpg.Pool) -> None:
    """Headers sent a byte at a time past the header timeout: the connection is closed;
    a silent connection too."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    async for running in start_intake(settings, db_pool, header_timeout=1.0):
        silent_reader, silent_writer = await asyncio.open_connection(*_address(running))
        elapsed = await seconds_until_cut_off(*_address(running))
        assert 0.8 <= elapsed < 6, elapsed
        assert await _closed_within(silent_reader, 5) == b""
        silent_writer.close()


async def test_a_body_that_does_not_arrive_in_time_is_408(
        kafka_bootstrap: str, database_url: str, namespace: str, db_pool: asyncpg.Pool) -> None:
    """A body stalled past the body timeout: 408 timeout naming the bytes received, and the
    connection is closed; nothing is recorded."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    async for running in start_intake(settings, db_pool, app_options={"body_timeout": 1.0}):
        reader, writer = await asyncio.open_connection(*_address(running))
        head = (f"POST /v1/reports HTTP/1.1\r\nHost: intake\r\n"
                f"Content-Type: application/json\r\nContent-Length: 1000\r\n"
                f"Authorization: {auth(Role.FIELD)['Authorization']}\r\n\r\n")
        writer.write(head.encode() + b'{"client_report_id": ')
        await writer.drain()
        answer = await _closed_within(reader, 10)
        writer.close()
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 408"), answer[:200]
        body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
        assert body["error"] == "timeout" and "21 bytes received" in body["message"]
        assert await rows_written(running) == 0


async def test_connections_over_the_cap_get_503_until_one_closes(
        kafka_bootstrap: str, database_url: str, namespace: str, db_pool: asyncpg.Pool) -> None:
    """With a cap of 3 open connections a fourth is answered 503 (Retry-After) and closed;
    once one closes, requests are served again."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    async for running in start_intake(settings, db_pool, max_connections=3):
        held = [await asyncio.open_connection(*_address(running)) for _ in range(3)]
        # A request on a held connection is served: the cap counts, it does not block.
        reader, writer = held[0]
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: intake\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200")

        extra_reader, extra_writer = await asyncio.open_connection(*_address(running))
        answer = await _closed_within(extra_reader, 10)
        extra_writer.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"Retry-After: 1" in answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "unavailable"

        for _, w in held:
            w.close()
            await w.wait_closed()

        async def served(r: Running = running) -> bool:
            status, _ = await r.get("/healthz")
            return status == 200

        await wait_for(served, what="served again once connections closed")


# --- requests without a valid token ------------------------------------------------------


async def test_requests_without_a_valid_token_are_rate_limited_per_address(
        kafka_bootstrap: str, database_url: str, namespace: str, db_pool: asyncpg.Pool) -> None:
    """Missing or invalid tokens (and public paths) spend the address's bucket: then 429
    with Retry-After; a valid token from the same address keeps its own limit."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    async for running in start_intake(
            settings, db_pool,
            app_options={"unauthenticated_limiter": RateLimiter(3, 0.01)}):
        bad = {"Authorization": "Bearer not-a-token"}
        codes = [(await running.post("/v1/reports", report_body(), headers=bad))[0],
                 (await running.post("/v1/reports", report_body()))[0],
                 (await running.get("/healthz"))[0]]
        assert codes == [401, 401, 200]
        status, body, response = await running.post("/v1/reports", report_body(), headers=bad)
        assert status == 429 and body["error"] == "rate_limited", body
        assert "without a valid token" in body["message"]
        assert int(response.headers["Retry-After"]) >= 1
        assert (await running.get("/healthz"))[0] == 429
        status, body, _ = await running.post("/v1/reports", report_body("ok-1"),
                                             headers=auth(Role.FIELD))
        assert status == 202, body


# --- the raw topic -------------------------------------------------------------------


async def test_raw_topic_cap_over_a_limit_is_dead_lettered_naming_it(
        kafka_bootstrap: str, database_url: str, namespace: str, db_pool: asyncpg.Pool) -> None:
    """The limits hold for CAP from intake.raw too: one over is dead-lettered with the limit
    named, and the record after it is still ingested."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    limits = CapLimits(circles=3)
    async for running in start_intake(settings, db_pool, intake_options={"cap_limits": limits}):
        topic = qualified("intake.raw", namespace)
        producer = clients.producer(settings)
        await producer.start()
        try:
            for xml in (alert("raw-over", circles=4), alert("raw-ok", circles=3)):
                await producer.send_and_wait(topic, json.dumps(
                    {"kind": "cap", "source": "bounds-bridge", "data": xml.decode()}).encode(),
                    key=b"k")
        finally:
            await producer.stop()
        stop = asyncio.Event()
        ingest = asyncio.create_task(
            Ingest(running.intake, settings, group_id=f"{namespace}-raw").run(stop))
        try:
            async def letters() -> list[DeadLetter]:
                records = await read_topic(settings, qualified("deadletter", namespace))
                return [DeadLetter.model_validate_json(r.value) for r in records if r.value]

            async def warnings() -> list[Any]:
                return await read_topic(settings, qualified("hazards.observations", namespace))

            await wait_for(lambda: _non_empty(letters), timeout=30, what="a dead letter")
            [letter] = await letters()
            assert letter.error.startswith("TooManyElements")
            assert "SONAE_INTAKE_CAP_MAX_CIRCLES" in letter.error
            await wait_for(lambda: _non_empty(warnings), timeout=30,
                           what="the next record's warning")
        finally:
            stop.set()
            await asyncio.wait_for(ingest, 15)


async def _non_empty(read: Any) -> bool:
    return bool(await read())
