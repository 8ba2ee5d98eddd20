"""Helpers shared by the tests: typed produce/consume, waiting with a deadline, intake writes."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from infra.db.migrate import migrate
from schemas.envelope import Envelope, new_event
from schemas.events import Event, decode_event
from schemas.hazards import GaugeReading
from schemas.topics import qualified
from services.common.bus import Publisher
from services.intake.domain import Kind
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
