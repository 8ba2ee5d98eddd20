"""Helpers shared by the tests: typed produce/consume, waiting with a deadline, a running intake.

Test modules import helpers from here only, never from one another."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Container,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, overload

import aiohttp
import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from infra.db.migrate import migrate
from infra.embedded.processes import free_port
from infra.kafka import clients
from infra.kafka.compat import end_offsets
from infra.settings import Settings, load_settings
from infra.topics import ensure_topics
from schemas.envelope import Envelope, new_event
from schemas.events import Event, decode_event
from schemas.hazards import GaugeReading
from schemas.region import load_region
from schemas.topics import qualified, split_qualified
from services.common.auth import AREA_ROLES, Role, issue_token
from services.common.bus import Publisher
from services.common.httpguard import GuardedSite, runner_options
from services.intake.domain import Kind
from services.intake.http import build_app
from services.intake.metrics import IntakeMetrics
from services.intake.ratelimit import RateLimiter
from services.intake.relay import Relay
from services.intake.service import Intake
from services.intake.store import Store, Write

T = TypeVar("T")


@overload
async def wait_for(predicate: Callable[[], Awaitable[T]], *, timeout: float = ...,
                   interval: float = ..., what: str = ...) -> T: ...
@overload
async def wait_for(predicate: Callable[[], T], *, timeout: float = ...,
                   interval: float = ..., what: str = ...) -> T: ...
async def wait_for(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        last = result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")
        await asyncio.sleep(interval)


def schema_dsn(database_url: str, schema: str) -> str:
    """A DSN whose sessions use ``schema`` (asyncpg passes unknown query keys as settings)."""
    return f"{database_url}?search_path={schema}"


async def produce_events(bootstrap: str, namespace: str, events: Iterable[Envelope]) -> int:
    """Produce typed events to their catalogue topics in ``namespace`` (acks=all)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        return await Publisher(producer, namespace).publish_many(events)
    finally:
        await producer.stop()


async def consume_events(
    bootstrap: str, namespace: str, topic: str, *, count: int, timeout: float = 10.0
) -> list[Event]:
    """Read ``count`` events of a catalogue topic from the beginning, decoded, or fail."""
    name = qualified(topic, namespace)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=50)
    await consumer.start()
    try:
        if name not in await consumer.topics():  # also refreshes the metadata
            raise AssertionError(f"topic {name} does not exist")
        partitions = [TopicPartition(name, p)
                      for p in sorted(consumer.partitions_for_topic(name) or set())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        got: list[Event] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"read {len(got)} of {count} events from {name}")
            batches = await consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for records in batches.values():
                got.extend(decode_event(r.value) for r in records if r.value is not None)
        return got
    finally:
        await consumer.stop()


# --- intake: settings, tokens, bodies and an in-process intake --------------------------
# Shared by tests/integration/test_intake_http.py, test_intake_ingest.py, test_intake_crash.py
# and test_field_cli.py.

SECRET = "integration-test-secret-0123456789abcdef"
KANDA = {"lat": 35.69282, "lon": 139.7658}
REGION = load_region()
SHELTER = REGION.shelters_in("kanda-koen")[0].id




def make_settings(kafka_bootstrap: str, database_url: str, namespace: str,
                  **overrides: Any) -> Settings:
    """Settings for one test: its namespace, the session's broker and database."""
    return load_settings(kafka_bootstrap=kafka_bootstrap, database_url=database_url,
                         namespace=namespace, token_secret=SECRET, **overrides)


TEAM_AREAS = ("kanda-koen", "jimbocho", "fujimi")
"""The areas of the tests' field and shelter_staff tokens (a team token must name some)."""


def token(role: Role | str, name: str = "kanda-team-1", ttl: float = 3600,
          senders: Sequence[str] = ()) -> str:
    """A bearer token signed with the tests' secret (team tokens carry TEAM_AREAS)."""
    areas = TEAM_AREAS if Role(role).value in AREA_ROLES else ()
    return issue_token(SECRET, role, name, timedelta(seconds=ttl), areas=areas,
                       senders=senders)


def auth(role: Role | str, name: str = "kanda-team-1") -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token(role, name)}"}


def report_body(client_id: str = "r-1", **overrides: Any) -> dict[str, Any]:
    """A valid report inside 神田公園地区."""
    body: dict[str, Any] = {"client_report_id": client_id, "category": "fire", "severity": 4,
                            "location": KANDA, "description": "煙が見える"}
    body.update(overrides)
    return body


async def prepare_schema(pool: asyncpg.Pool) -> None:
    """Apply the migrations inside the test's schema."""
    async with pool.acquire() as conn:
        await migrate(conn)


async def read_topic(settings: Settings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic, from the beginning to the (correct) end of each partition."""
    _, spec = split_qualified(topic)
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(spec.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await end_offsets(consumer, tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            for batch in (await consumer.getmany(*pending, timeout_ms=200)).values():
                records.extend(batch)
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return records
    finally:
        await consumer.stop()


async def event_ids_on(settings: Settings, name: str) -> list[str]:
    """The event ids on a catalogue topic of the test's namespace, duplicates included, sorted.

    Sorted because a topic has several partitions and a read interleaves them in no
    fixed order: two reads of an unchanged topic may list its records differently.
    """
    records = await read_topic(settings, qualified(name, settings.namespace))
    return sorted(json.loads(r.value)["event_id"] for r in records if r.value is not None)


@dataclass
class Running:
    """An in-process intake: HTTP on a free port, relay publishing to the real broker."""

    url: str
    settings: Settings
    pool: asyncpg.Pool
    intake: Intake
    relay: Relay
    session: aiohttp.ClientSession
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def post(self, path: str, body: Any, *, headers: dict[str, str] | None = None,
                   raw: bytes | None = None, content_type: str = "application/json"
                   ) -> tuple[int, Any, aiohttp.ClientResponse]:
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.session.post(self.url + path, data=data,
                                     headers={"Content-Type": content_type, **(headers or {})}
                                     ) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None, response

    async def get(self, path: str, headers: dict[str, str] | None = None
                  ) -> tuple[int, Any]:
        async with self.session.get(self.url + path, headers=headers) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except json.JSONDecodeError:
                return response.status, text

    async def backlog(self) -> int:
        return await self.intake.store.backlog()


async def start_intake(settings: Settings, pool: asyncpg.Pool,
                       limiter: RateLimiter | None = None,
                       max_json_bytes: int = 64 * 1024,
                       denylist: Container[str] = frozenset(),
                       max_token_lifetime: timedelta | None = None, *,
                       intake_options: Mapping[str, Any] | None = None,
                       app_options: Mapping[str, Any] | None = None,
                       header_timeout: float = 20.0,
                       max_connections: int = 1024) -> AsyncIterator[Running]:
    """Migrate, create topics, and serve intake until the caller's context ends.

    Served as the process serves it: the guarded site (connection cap) and the
    header timeout; ``intake_options`` and ``app_options`` go to ``Intake`` and
    ``build_app``.
    """
    await prepare_schema(pool)
    await ensure_topics(settings, settings.namespace)
    metrics = IntakeMetrics()
    store = Store(pool, settings.namespace)
    await store.check_tables()
    intake = Intake(store, REGION, metrics=metrics, **(intake_options or {}))
    relay = Relay(store, lambda: clients.producer(settings), metrics=metrics,
                  poll_interval=0.2)
    app = build_app(intake, secret=SECRET,
                    limiter=limiter or RateLimiter(1000, 1000), max_json_bytes=max_json_bytes,
                    denylist=denylist, max_token_lifetime=max_token_lifetime,
                    **(app_options or {}))
    runner = web.AppRunner(app, access_log=None, **runner_options(header_timeout))
    await runner.setup()
    port = free_port()
    await GuardedSite(runner, "127.0.0.1", port, max_connections=max_connections).start()
    stop = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))
    session = aiohttp.ClientSession()
    try:
        yield Running(f"http://127.0.0.1:{port}", settings, pool, intake, relay, session,
                      [relay_task])
    finally:
        stop.set()
        await session.close()
        await asyncio.wait_for(relay_task, 10)
        await runner.cleanup()
        intake.parsing.close()


async def seconds_until_cut_off(host: str, port: int, *, give_up: float = 10.0) -> float:
    """Open a connection, send a request line and then a header byte every 0.1 s (a
    slow-loris client); return how long until the server closed it (AssertionError if
    it had not after ``give_up`` seconds)."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: sonae\r\n")
        while time.monotonic() - started < give_up:
            try:
                writer.write(b"X")
                await writer.drain()
            except ConnectionError:
                return time.monotonic() - started
            try:
                if await asyncio.wait_for(reader.read(1024), 0.1) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                pass
            except ConnectionError:
                return time.monotonic() - started
        raise AssertionError(f"a client trickling its headers was not cut off in {give_up} s")
    finally:
        writer.close()


async def store_for(pool: asyncpg.Pool, namespace: str) -> Store:
    """Intake's store over ``pool`` (the test's schema), migrations applied."""
    async with pool.acquire() as conn:
        await migrate(conn)
    return Store(pool, namespace)


def gauge_write(client_id: str | None, event: Any = None) -> Write:
    """A one-event hazard write (the store's own input, no HTTP or validation)."""
    now = datetime.now(UTC)
    event = event or new_event(GaugeReading, {"gauge_id": "g-1", "level_m": 1.5,
                                              "observed_at": now},
                               occurred_at=now, source="test")
    return Write(kind=Kind.HAZARD, scope="gauges", client_id=client_id,
                 body_hash=f"hazard:{event.event_id}", status_code=202,
                 response={"event_id": str(event.event_id)}, events=(event,))
