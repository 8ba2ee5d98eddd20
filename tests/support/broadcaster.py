"""Helpers for the broadcaster tests: a webhook receiver, order events, settings, queries."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from lxml import etree

from infra.db.migrate import migrate
from infra.embedded.processes import free_port
from infra.settings import Settings, load_settings
from schemas.broadcasts import BroadcastPublished
from schemas.envelope import Envelope, new_event
from schemas.evacuation import OrderIssued, OrderLifted, OrderUpdated
from schemas.events import decode_event
from schemas.examples import example
from services.broadcaster.channels import (
    WebhookSubscriber,
)
from services.broadcaster.dispatch import DispatchConfig
from services.broadcaster.main import Options, serve
from services.broadcaster.webhooks import (
    RetrySettings,
)
from tests.support import schema_dsn

XSD = Path("schemas/cap/CAP-v1.2.xsd")
CAP = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
ATOM = {"atom": "http://www.w3.org/2005/Atom"}
SECRET = b"test-webhook-secret-0123456789-abcdef"
LANGS = {"ja", "en", "zh", "ko"}
T0 = datetime(2025, 8, 21, 5, 0, tzinfo=UTC)




@dataclass
class Request:
    """One request the receiver got."""

    hook: str
    headers: dict[str, str]
    body: bytes
    at: datetime

    @property
    def event(self) -> BroadcastPublished:
        event = decode_event(self.body)
        assert isinstance(event, BroadcastPublished)
        return event


@dataclass
class Receiver:
    """A local webhook endpoint: /hook/<name> answers 200, or 503 for names in ``failing``,
    after ``slow[name]`` seconds."""

    failing: set[str] = field(default_factory=set)
    slow: dict[str, float] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    port: int = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{name}"

    def of(self, name: str) -> list[Request]:
        return [r for r in self.requests if r.hook == name]

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.requests.append(Request(name, dict(request.headers), await request.read(),
                                     datetime.now(UTC)))
        if name in self.slow:
            await asyncio.sleep(self.slow[name])  # a slow subscriber, not a test wait
        return web.Response(status=503 if name in self.failing else 200, text="ok")


@asynccontextmanager
async def receiver(**kwargs: Any) -> AsyncIterator[Receiver]:
    """Run a :class:`Receiver` on 127.0.0.1 for the block."""
    recv = Receiver(**kwargs)
    app = web.Application()
    app.router.add_post("/hook/{name}", recv._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    recv.port = free_port()
    await web.TCPSite(runner, "127.0.0.1", recv.port).start()
    try:
        yield recv
    finally:
        await runner.cleanup()


def subscriber(recv: Receiver, name: str, *, live: bool = True,
               languages: tuple[str, ...] = ("ja", "en", "zh", "ko")) -> WebhookSubscriber:
    return WebhookSubscriber(name=name, url=recv.url(name), secret=SECRET, languages=languages,
                             live=live, timeout=5.0)


async def migrated(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await migrate(conn)


def order_events(tag: str, *, exercise: bool = False, areas: tuple[str, ...] = ("kanda-koen",),
                 versions: int = 3) -> list[Envelope]:
    """Issued, updated (level 5, more areas) and lifted versions of a fresh order."""
    order_id = uuid.uuid5(uuid.NAMESPACE_URL, f"sonae-test-order-{tag}-{uuid.uuid4()}")
    issued = example("evacuation.order_issued")
    assert isinstance(issued, OrderIssued)
    body = issued.payload.model_copy(update={"order_id": order_id, "area_ids": areas})
    first = new_event(OrderIssued, body, occurred_at=T0, source="evacuation-decision",
                      exercise=exercise)
    out: list[Envelope] = [first]
    updated = example("evacuation.order_updated")
    assert isinstance(updated, OrderUpdated)
    out.append(new_event(
        OrderUpdated, updated.payload.model_copy(update={"order_id": order_id}),
        occurred_at=T0 + timedelta(minutes=60), source="evacuation-decision", cause=first))
    lifted = example("evacuation.order_lifted")
    assert isinstance(lifted, OrderLifted)
    out.append(new_event(
        OrderLifted, lifted.payload.model_copy(update={"order_id": order_id}),
        occurred_at=T0 + timedelta(hours=9), source="evacuation-decision", cause=first))
    return out[:versions]


async def delivery_states(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("select state, count(*) as n from broadcast_deliveries group by state")
    return {r["state"]: r["n"] for r in rows}


async def count_delivered(pool: asyncpg.Pool, channel: str | None = None) -> int:
    n: int = await pool.fetchval(
        "select count(*) from broadcast_deliveries where state = 'delivered' "
        "and ($1::text is null or channel = $1)", channel)
    return n


async def outbox_events(pool: asyncpg.Pool) -> list[Envelope]:
    rows = await pool.fetch("select value from broadcast_outbox order by id")
    return [decode_event(bytes(r["value"])) for r in rows]


def settings_for(kafka_bootstrap: str, database_url: str, db_schema: str,
                 namespace: str) -> Settings:
    return load_settings(kafka_bootstrap=kafka_bootstrap,
                         database_url=schema_dsn(database_url, db_schema),
                         namespace=namespace, broadcaster_port=free_port(), host="127.0.0.1")


@asynccontextmanager
async def running(settings: Settings, options: Options) -> AsyncIterator[None]:
    """Run the broadcaster in this event loop for the block; stop it cleanly afterwards."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, options=options))
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        except BaseException:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise


def fast_retry(**overrides: Any) -> DispatchConfig:
    retry = RetrySettings(**{"max_attempts": 8, "base_delay_seconds": 0.2,
                             "max_delay_seconds": 1.0, "failures_to_down": 5,
                             "probe_interval_seconds": 60.0, **overrides})
    return DispatchConfig(retry=retry, poll_interval=0.2, lease=10.0)


def xsd() -> Any:
    return etree.XMLSchema(etree.parse(str(XSD)))


def published_keys(events: Iterable[Envelope]) -> list[tuple[uuid.UUID, int, str]]:
    keys = []
    for e in events:
        assert isinstance(e, BroadcastPublished)
        keys.append((e.payload.message_id, e.payload.version, e.payload.language))
    return keys
