"""The JMA feed poller against a local Atom feed, a real intake, broker and PostgreSQL.

The feed and the messages are served by the test on loopback (aiohttp); the messages
are JMA's samples (出典：気象庁, tests/fixtures/jma/).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from infra.embedded.processes import free_port
from infra.kafka import clients
from schemas.deadletter import DeadLetter
from schemas.events import Event, decode_event
from schemas.jma import DataType
from schemas.topics import qualified
from services.common.auth import Role, issue_token
from services.jma_feed.main import kafka_dead_letters
from services.jma_feed.poller import Poller
from services.jma_feed.store import FeedStore
from tests.support import (
    SECRET,
    Running,
    make_settings,
    read_topic,
    schema_dsn,
    start_intake,
    wait_for,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JMA = ROOT / "tests" / "fixtures" / "jma"
ENTRY = ("from infra.settings import load_settings; from services.jma_feed.main import main; "
         "main(load_settings())")
WARNING = "15_12_02_161130_VPWW54.xml"   # 東京都: 大雨・洪水警報 for 千代田区
QUAKE = "32-35_06_03_240613_VXSE53.xml"  # 震度３ in 東京都２３区


def _broken() -> bytes:
    text = (JMA / WARNING).read_text("utf-8")
    return text.replace("<InfoType>発表</InfoType>", "<InfoType>発令</InfoType>").encode()


@dataclass
class Feed:
    """A JMA-like Atom feed and its messages, counting what is asked of it."""

    entries: list[tuple[str, str, bytes]]
    """(file name, entry title = Control/Title, bytes), oldest first."""
    feed_gets: int = 0
    not_modified: int = 0
    message_gets: Counter[str] = field(default_factory=Counter)
    url: str = ""

    def document(self) -> bytes:
        items = "".join(
            f"<entry><id>urn:test:{name}</id><title>{title}</title>"
            f"<updated>2026-01-01T00:{i:02d}:00+09:00</updated>"
            f'<link type="application/xml" href="{self.url}/data/{name}"/></entry>'
            for i, (name, title, _) in enumerate(self.entries))
        return (f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
                f"<title>test</title><id>urn:test</id><updated>2026-01-01T00:00:00Z</updated>"
                f"{items}</feed>").encode()

    def app(self) -> web.Application:
        async def feed(request: web.Request) -> web.Response:
            self.feed_gets += 1
            body = self.document()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if request.headers.get("If-None-Match") == etag:
                self.not_modified += 1
                return web.Response(status=304, headers={"ETag": etag})
            return web.Response(body=body, content_type="application/atom+xml",
                                headers={"ETag": etag})

        async def message(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            self.message_gets[name] += 1
            data = next(d for n, _, d in self.entries if n == name)
            return web.Response(body=data, content_type="application/xml")

        app = web.Application()
        app.router.add_get("/feed.xml", feed)
        app.router.add_get("/data/{name}", message)
        return app


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def running(kafka_bootstrap: str, database_url: str, namespace: str,
                  db_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    """Intake for one test (its migrations include the poller's tables)."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    async for r in start_intake(settings, db_pool):
        yield r


async def _events(running: Running) -> list[Event]:
    async def drained() -> bool:
        return await running.backlog() == 0

    await wait_for(drained, what="outbox drained")
    records = await read_topic(running.settings, qualified("hazards.observations",
                                                           running.settings.namespace))
    return [decode_event(json.loads(r.value)) for r in records if r.value]


async def test_polls_conditionally_dead_letters_a_bad_entry_and_goes_on(
        running: Running, db_pool: asyncpg.Pool) -> None:
    """Entries posted once, oldest first; a refused one dead-lettered with its bytes; then 304."""
    feed = Feed([
        (WARNING, "気象警報・注意報（Ｈ２７）", (JMA / WARNING).read_bytes()),
        ("broken.xml", "気象警報・注意報（Ｈ２７）", _broken()),
        ("tornado.xml", "竜巻注意情報", b"never fetched"),
        (QUAKE, "震源・震度に関する情報", (JMA / QUAKE).read_bytes()),
    ])
    runner, feed.url = await _serve(feed.app())
    producer = clients.producer(running.settings)
    await producer.start()
    try:
        async with aiohttp.ClientSession() as session:
            poller = Poller(
                session=session, store=FeedStore(db_pool), feeds=[feed.url + "/feed.xml"],
                data_types=tuple(DataType), intake_url=running.url,
                token=lambda: issue_token(SECRET, Role.SENSOR, "jma-feed", timedelta(hours=1),
                                      senders=["jma:*"]),
                dead_letter=kafka_dead_letters(producer, running.settings.namespace))
            first = await poller.poll(feed.url + "/feed.xml")
            assert (first.fetched, first.accepted, first.dead_lettered) == (3, 2, 1)
            assert "tornado.xml" not in feed.message_gets  # not a data type Sonae reads

            second = await poller.poll(feed.url + "/feed.xml")
            assert second.not_modified and feed.not_modified == 1
            assert sum(feed.message_gets.values()) == 3  # the second poll fetched nothing
    finally:
        await producer.stop()
        await runner.cleanup()

    types = sorted(type(e).__name__ for e in await _events(running))
    assert types == ["HazardWarning"] * 3 + ["SeismicIntensity"]  # 大雨, 洪水, 雷; the quake
    letters = [DeadLetter.model_validate_json(r.value) for r in await read_topic(
        running.settings, qualified("deadletter", running.settings.namespace)) if r.value]
    [letter] = letters
    assert letter.original_bytes() == _broken() and letter.service == "jma-feed"
    assert letter.key is not None and letter.key.endswith("/data/broken.xml")
    assert any(p.field == "/Report/Head/InfoType" for p in letter.problems)
    rows = await db_pool.fetch("select link, outcome from jma_feed_entries order by link")
    assert sorted(r["outcome"] for r in rows) == ["accepted", "accepted", "dead_lettered"]


@dataclass
class HoldingProxy:
    """Forwards POST /v1/jma to intake; the first answer it never passes on (held)."""

    target: str
    forwarded: int = 0
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hold_first: bool = True

    def app(self) -> web.Application:
        async def post(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            headers = {k: v for k, v in request.headers.items()
                       if k in ("Authorization", "Content-Type")}
            async with aiohttp.ClientSession() as session, session.post(
                    self.target + "/v1/jma", data=body, headers=headers) as response:
                status, answer = response.status, await response.read()
            self.forwarded += 1
            if self.hold_first:
                self.hold_first = False
                self.held.set()
                await self.release.wait()  # the poller is killed while it waits for this
            return web.Response(status=status, body=answer, content_type="application/json")

        app = web.Application()
        app.router.add_post("/v1/jma", post)
        return app


@pytest.mark.timeout(180)
async def test_sigkill_between_fetch_and_acknowledgement_loses_and_duplicates_nothing(
        running: Running, db_pool: asyncpg.Pool, database_url: str, db_schema: str,
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Killed after intake wrote an entry but before the poller saw the ack: refetched, replayed."""
    feed = Feed([
        (WARNING, "気象警報・注意報（Ｈ２７）", (JMA / WARNING).read_bytes()),
        (QUAKE, "震源・震度に関する情報", (JMA / QUAKE).read_bytes()),
    ])
    feed_runner, feed.url = await _serve(feed.app())
    proxy = HoldingProxy(running.url)
    proxy_runner, proxy_url = await _serve(proxy.app())
    env = {**os.environ, "SONAE_JMA_FEED_ENABLED": "true",
           "SONAE_JMA_FEED_URLS": feed.url + "/feed.xml", "SONAE_INTAKE_URL": proxy_url,
           "SONAE_DATABASE_URL": schema_dsn(database_url, db_schema),
           "SONAE_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "SONAE_NAMESPACE": running.settings.namespace, "SONAE_TOKEN_SECRET": SECRET,
           "SONAE_REGION": "chiyoda", "SONAE_LOG_LEVEL": "INFO"}
    log = tmp_path / "jma-feed.log"

    def start() -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen([sys.executable, "-c", ENTRY], cwd=ROOT, stdout=out,
                                    stderr=out, env=env)

    async def handled() -> int:
        return int(await db_pool.fetchval("select count(*) from jma_feed_entries"))

    async def both_handled() -> bool:
        return await handled() == 2

    process = start()
    try:
        await wait_for(proxy.held.is_set, timeout=60, what="intake to answer the first post")
        assert process.poll() is None, log.read_text()
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert await handled() == 0  # intake recorded it, the poller never saw the ack

        process = start()
        await wait_for(both_handled, timeout=90,
                       what=f"both entries handled ({log})")
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        proxy.release.set()
        await proxy_runner.cleanup()
        await feed_runner.cleanup()

    assert feed.message_gets[WARNING] == 2  # fetched again after the kill
    rows = dict(await db_pool.fetch("select link, outcome from jma_feed_entries"))
    assert rows[f"{feed.url}/data/{WARNING}"] == "replayed"
    assert rows[f"{feed.url}/data/{QUAKE}"] == "accepted"
    events = await _events(running)
    ids = [str(e.event_id) for e in events]
    assert len(ids) == len(set(ids)) == 4  # 大雨, 洪水, 雷 warnings and the quake, once each

