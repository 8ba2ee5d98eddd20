"""Helpers for the recorder tests: events, settings, a running recorder, store queries."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka.structs import TopicPartition

from infra.db.migrate import migrate
from infra.kafka import clients
from infra.kafka.compat import end_offsets
from infra.settings import Settings, load_settings
from schemas.envelope import derive_id, new_event
from schemas.events import Event
from schemas.examples import example
from schemas.hazards import GaugeReading
from schemas.reports import ReportAccepted, ReportSubmitted
from schemas.topics import key_for, route
from services.recorder.consumer import RecorderConfig, group_id, recorded_topics
from services.recorder.domain import Recorded, event_row
from services.recorder.main import serve
from services.recorder.store import EventStore

T0 = datetime(2025, 8, 21, 5, 0, tzinfo=UTC)
SENDER = "field-team-7"  # intake derives report ids from the token subject



def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def report_pair(i: int, tag: str) -> tuple[ReportSubmitted, ReportAccepted]:
    """A submission and its acceptance for report number ``i``."""
    base = example("report.submitted")
    assert isinstance(base, ReportSubmitted)
    body = base.payload.model_copy(update={"client_report_id": f"{tag}-{i:06d}",
                                           "area_id": ("kanda-koen", "kojimachi",
                                                       "fujimi", "banchou")[i % 4]})
    sub = new_event(ReportSubmitted, body, occurred_at=at(i), source="intake")
    acc = new_event(
        ReportAccepted,
        {"report_id": derive_id("report", SENDER, body.client_report_id),
         "submitted_event_id": sub.event_id, "report": body, "outside_region": False,
         "area_id": body.area_id},
        occurred_at=at(i + 0.5), source="intake", cause=sub,
    )
    return sub, acc


def gauge(i: int) -> GaugeReading:
    """A gauge reading number ``i`` (one of four gauges)."""
    return new_event(
        GaugeReading,
        {"gauge_id": f"gauge-{i % 4}", "level_m": 1.0 + (i % 300) / 100, "observed_at": at(i)},
        occurred_at=at(i), source="gauge-feed",
    )


def mixed_events(n: int, tag: str) -> list[Event]:
    """``n`` events: report submissions with acceptances, and gauge readings."""
    out: list[Event] = []
    i = 0
    while len(out) < n:
        if i % 3 == 2:
            out.append(gauge(i))
        else:
            out.extend(report_pair(i, tag))
        i += 1
    return out[:n]


def recorder_settings(bootstrap: str, database_url: str, namespace: str) -> Settings:
    return load_settings(kafka_bootstrap=bootstrap, database_url=database_url,
                         namespace=namespace)


async def migrate_pool(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await migrate(conn)


async def stored_ids(pool: asyncpg.Pool) -> list[uuid.UUID]:
    rows = await pool.fetch("select event_id from events")
    return [r["event_id"] for r in rows]


async def stored_count(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("select count(*) from events")
    return count


async def group_offsets(settings: Settings, group: str,
                        topics: Iterable[str]) -> dict[TopicPartition, int]:
    """Committed offsets of ``group`` (-1 where none), and end offsets, per partition."""
    admin = clients.admin(settings)
    await admin.start()
    try:
        meta = await admin.describe_topics(list(topics))
        tps = [TopicPartition(m["topic"], p["partition"]) for m in meta for p in m["partitions"]]
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        return {tp: committed[tp].offset if tp in committed else -1 for tp in tps}
    finally:
        await admin.close()


async def topic_ends(settings: Settings, topics: Iterable[str]) -> dict[TopicPartition, int]:
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics
               for p in sorted(await _partitions(consumer, t))]
        return await end_offsets(consumer, tps, profile=settings.kafka_profile)
    finally:
        await consumer.stop()


async def _partitions(consumer: Any, topic: str) -> set[int]:
    await consumer.topics()  # refresh metadata
    parts: set[int] | None = consumer.partitions_for_topic(topic)
    return parts or set()


async def caught_up(settings: Settings) -> bool:
    """True when the recorder's group has committed every record of its topics."""
    topics = recorded_topics(settings.namespace)
    committed = await group_offsets(settings, group_id(settings.namespace), topics)
    ends = await topic_ends(settings, topics)
    return all(committed.get(tp, -1) >= end for tp, end in ends.items() if end > 0)


@asynccontextmanager
async def running_recorder(
    settings: Settings, config: RecorderConfig | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """The recorder's ``serve`` as a task; stopped (as by SIGTERM) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, config=config))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


# --- tests ---------------------------------------------------------------------------


async def store_directly(pool: asyncpg.Pool, namespace: str, events: Iterable[Event]) -> None:
    """Write events into the store and its projections as the recorder would, without a broker."""
    rows = []
    for offset, event in enumerate(events):
        routed = route(event, namespace)
        rows.append(Recorded(event_row(event, topic=routed.topic, partition=0, offset=offset,
                                       key=key_for(event).decode(),
                                       envelope=routed.value.decode()), event))
    await EventStore(pool).write(rows)
