"""The relay's two paths against the real broker and PostgreSQL: from the outbox, and direct."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from infra.kafka import clients
from infra.settings import Settings
from infra.topics import ensure_topics
from schemas.envelope import new_event
from schemas.hazards import GaugeReading
from schemas.topics import route
from services.intake.domain import Kind
from services.intake.metrics import IntakeMetrics
from services.intake.relay import Relay
from services.intake.store import OutboxRow, Store, Write
from tests.integration.test_intake_http import make_settings, prepare_schema, read_topic
from tests.support import wait_for

pytestmark = pytest.mark.integration


def reading(client_id: str, gauge: str, level: float) -> Write:
    """A gauge reading write; readings of one gauge share a Kafka key (the gauge id)."""
    now = datetime.now(UTC)
    event = new_event(GaugeReading, {"gauge_id": gauge, "level_m": level, "observed_at": now},
                      occurred_at=now, source="test")
    return Write(kind=Kind.HAZARD, scope="gauges", client_id=client_id,
                 body_hash=f"hazard:{event.event_id}", status_code=202,
                 response={"event_id": str(event.event_id)}, events=(event,))


def outbox_reads(store: Store) -> list[int]:
    """The ids of the rows the relay reads from the outbox table, as it reads them."""
    selected: list[int] = []
    original = store.publish_batch

    async def counting(*args: object, **kwargs: object) -> list[OutboxRow]:
        rows = await original(*args, **kwargs)  # type: ignore[arg-type]
        selected.extend(r.id for r in rows)
        return rows

    store.publish_batch = counting  # type: ignore[method-assign]
    return selected


async def unsent(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval("select count(*) from outbox where sent_at is null")
        return count


async def levels_on_topic(settings: Settings) -> dict[str, list[float]]:
    """Per gauge, the levels in the order the topic holds them; no event twice (the relay
    repeats an event only after a crash or a failed acknowledgement, none here)."""
    topic = route(reading("probe", "g-0", 0.0).events[0], settings.namespace).topic
    records = await read_topic(settings, topic)
    seen: set[str] = set()
    out: dict[str, list[float]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = json.loads(record.value)
        assert event["event_id"] not in seen, f"published twice: {event}"
        seen.add(event["event_id"])
        out.setdefault(event["payload"]["gauge_id"], []).append(event["payload"]["level_m"])
    return out


async def test_leftovers_first_then_direct_and_order_kept_through_an_overflow(
        kafka_bootstrap: str, database_url: str, namespace: str,
        db_pool: asyncpg.Pool) -> None:
    """Rows committed before the relay starts are published from the outbox; then committed
    rows come directly; a burst beyond the direct queue is caught up from the outbox. Every
    event reaches Kafka, each gauge's readings in commit order, and every row is marked."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    await prepare_schema(db_pool)
    await ensure_topics(settings, namespace)
    store = Store(db_pool, namespace)
    levels: dict[str, list[float]] = {"g-1": [], "g-2": []}
    n = 0

    async def write_some(count: int) -> None:
        nonlocal n
        writes = []
        for _ in range(count):
            gauge = f"g-{n % 2 + 1}"
            levels[gauge].append(n / 100)
            writes.append(reading(f"k-{n}", gauge, n / 100))
            n += 1
        for w in writes:  # one at a time: commit order is the order above
            await store.record(w)

    await write_some(30)  # before any relay: these are "left over"
    assert await unsent(db_pool) == 30
    # No sweep during the test: whatever is published, the two paths published.
    relay = Relay(store, lambda: clients.producer(settings), metrics=IntakeMetrics(),
                  max_queued=50, sweep_age=timedelta(hours=1))
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await wait_for(lambda: _equals(unsent(db_pool), 0), timeout=30, what="leftovers")
        await wait_for(lambda: _true(relay._direct), timeout=10, what="direct path")
        await write_some(20)
        await wait_for(lambda: _equals(unsent(db_pool), 0), timeout=30, what="direct rows")
        # A burst the queue cannot hold (more than 50 rows committed at once).
        await asyncio.gather(*(store.record(reading(f"k-{n + i}", "g-3", i / 100))
                               for i in range(200)))
        levels["g-3"] = [i / 100 for i in range(200)]
        n += 200
        await write_some(10)
        await wait_for(lambda: _equals(unsent(db_pool), 0), timeout=30, what="catch-up")
        assert relay._direct  # back on the direct path after catching up
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    on_topic = await levels_on_topic(settings)
    assert on_topic["g-1"] == levels["g-1"]
    assert on_topic["g-2"] == levels["g-2"]
    # The burst was concurrent: its commit order is the outbox's id order.
    async with db_pool.acquire() as conn:
        burst = [json.loads(r["value"])["payload"]["level_m"] for r in await conn.fetch(
            "select value from outbox where convert_from(value, 'UTF8') like '%\"g-3\"%' "
            "order by id")]
    assert on_topic["g-3"] == burst and sorted(burst) == levels["g-3"]


async def test_the_direct_path_reads_nothing_back(
        kafka_bootstrap: str, database_url: str, namespace: str,
        db_pool: asyncpg.Pool) -> None:
    """Once caught up, a committed write is published from what the store handed over: its
    row is marked sent without the relay selecting it (the outbox path would lock and read
    it first)."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    await prepare_schema(db_pool)
    await ensure_topics(settings, namespace)
    store = Store(db_pool, namespace)
    relay = Relay(store, lambda: clients.producer(settings), metrics=IntakeMetrics(),
                  sweep_age=timedelta(hours=1))
    selected = outbox_reads(store)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await wait_for(lambda: _true(relay._direct), timeout=10, what="direct path")
        await store.record(reading("direct-1", "g-1", 1.0))
        await wait_for(lambda: _equals(unsent(db_pool), 0), timeout=10, what="marked sent")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert selected == []
    assert (await levels_on_topic(settings))["g-1"] == [1.0]


async def _equals(value: object, expected: object) -> bool:
    return await value == expected  # type: ignore[misc]


async def _true(value: bool) -> bool:
    return value


async def test_a_queue_of_zero_publishes_from_the_outbox_only(
        kafka_bootstrap: str, database_url: str, namespace: str,
        db_pool: asyncpg.Pool) -> None:
    """SONAE_INTAKE_RELAY_QUEUE=0: every row is read from the outbox, none handed over."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    await prepare_schema(db_pool)
    await ensure_topics(settings, namespace)
    store = Store(db_pool, namespace)
    relay = Relay(store, lambda: clients.producer(settings), metrics=IntakeMetrics(),
                  max_queued=0, sweep_age=timedelta(hours=1))
    selected = outbox_reads(store)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        for i in range(5):
            await store.record(reading(f"q0-{i}", "g-1", i / 10))
        await wait_for(lambda: _equals(unsent(db_pool), 0), timeout=10, what="published")
        assert not relay._direct
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    async with db_pool.acquire() as conn:
        ids = [r[0] for r in await conn.fetch("select id from outbox order by id")]
    assert sorted(selected) == ids
    assert (await levels_on_topic(settings))["g-1"] == [i / 10 for i in range(5)]


async def test_a_failed_direct_publish_falls_back_to_the_outbox(
        kafka_bootstrap: str, database_url: str, namespace: str,
        db_pool: asyncpg.Pool) -> None:
    """A send that fails on the direct path leaves its rows unsent; the relay reconnects,
    catches up from the outbox in id order, and returns to the direct path."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    await prepare_schema(db_pool)
    await ensure_topics(settings, namespace)
    store = Store(db_pool, namespace)
    producers: list[AIOKafkaProducer] = []
    fail_next = asyncio.Event()

    def factory() -> AIOKafkaProducer:
        producer = clients.producer(settings)
        original = producer.send

        async def send(*args: Any, **kwargs: Any) -> Any:
            if fail_next.is_set():
                fail_next.clear()
                raise KafkaConnectionError("injected: the broker went away")
            return await original(*args, **kwargs)

        producer.send = send  # type: ignore[method-assign]
        producers.append(producer)
        return producer

    relay = Relay(store, factory, metrics=IntakeMetrics(), sweep_age=timedelta(hours=1))
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await wait_for(lambda: _true(relay._direct), timeout=10, what="direct path")
        fail_next.set()
        for i in range(20):
            await store.record(reading(f"f-{i}", "g-1", i / 10))
        await wait_for(lambda: _equals(unsent(db_pool), 0), timeout=30, what="published")
        await wait_for(lambda: _true(relay._direct), timeout=10, what="direct again")
        assert not fail_next.is_set()  # the failure happened...
        assert len(producers) == 2  # ...and the producer was closed and replaced
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert (await levels_on_topic(settings))["g-1"] == [i / 10 for i in range(20)]
