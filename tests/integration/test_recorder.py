"""The recorder in-process against the real broker and PostgreSQL: exactly once,
projections, offsets after the database commit, dead letters."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest

from infra.kafka import clients
from infra.topics import ensure_topics
from schemas.envelope import new_event
from schemas.evacuation import OrderIssued, OrderLifted, OrderUpdated
from schemas.events import decode_event, encode_event
from schemas.examples import example
from schemas.reports import ReportRejected, ReportSubmitted
from schemas.topics import qualified
from services.recorder.consumer import group_id, recorded_topics
from services.recorder.errors import RecorderTablesMissing
from services.recorder.main import serve
from tests.support import produce_events, schema_dsn, wait_for
from tests.support.recorder import (
    at,
    caught_up,
    group_offsets,
    migrate_pool,
    mixed_events,
    recorder_settings,
    report_pair,
    running_recorder,
    stored_count,
    stored_ids,
)

pytestmark = pytest.mark.integration


async def test_events_are_stored_once_and_a_redelivery_adds_nothing(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """Every produced event is stored exactly once; producing them all again stores nothing."""
    await migrate_pool(db_pool)
    settings = recorder_settings(kafka_bootstrap, schema_dsn(database_url, db_schema), namespace)
    await ensure_topics(settings)
    events = mixed_events(3000, "once")
    await produce_events(kafka_bootstrap, namespace, events)
    async with running_recorder(settings):
        await wait_for(lambda: stored_count(db_pool), timeout=30, what="first events stored")
        await wait_for(lambda: _equals(stored_count(db_pool), len(events)), timeout=30,
                       what="all events stored")
        await produce_events(kafka_bootstrap, namespace, events)  # a full redelivery
        await wait_for(lambda: caught_up(settings), timeout=30, what="redelivery consumed")
    assert sorted(await stored_ids(db_pool)) == sorted(e.event_id for e in events)
    rows = await db_pool.fetch(
        "select namespace, topic, key, type, envelope::text as envelope from events "
        "where type = 'report.accepted' limit 5")
    assert {r["namespace"] for r in rows} == {namespace}
    assert all(r["topic"] == qualified("reports", namespace) for r in rows)
    reports = await db_pool.fetchval(
        "select count(*) from reports_current where status = 'accepted'")
    assert reports == sum(1 for e in events if e.type == "report.accepted")


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


def rejection_of(sub: ReportSubmitted, seconds: float) -> ReportRejected:
    return new_event(
        ReportRejected,
        {"client_report_id": sub.payload.client_report_id, "submitted_event_id": sub.event_id,
         "reasons": [{"code": "duplicate", "message": "already reported"}]},
        occurred_at=at(seconds), source="intake", cause=sub)


async def test_projections_follow_versions_and_event_time(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """Orders keep their highest version; a report's submission and rejection join it
    through its acceptance in whatever order they are stored; deliveries keep their
    final outcome."""
    await migrate_pool(db_pool)
    settings = recorder_settings(kafka_bootstrap, schema_dsn(database_url, db_schema), namespace)
    await ensure_topics(settings)
    order_id = uuid.uuid4()
    issued = example("evacuation.order_issued")
    updated = example("evacuation.order_updated")
    lifted = example("evacuation.order_lifted")
    v1 = new_event(OrderIssued, issued.payload.model_copy(update={"order_id": order_id}),
                   occurred_at=at(0), source="evacuation-decision")
    v2 = new_event(OrderUpdated, updated.payload.model_copy(update={"order_id": order_id}),
                   occurred_at=at(10), source="evacuation-decision")
    v3 = new_event(OrderLifted, lifted.payload.model_copy(update={"order_id": order_id}),
                   occurred_at=at(20), source="evacuation-decision")
    s1, a1 = report_pair(1, "proj")  # acceptance stored before its submission
    s2, a2 = report_pair(2, "proj")  # rejected, then accepted later (event time)
    r2 = rejection_of(s2, 2.25)
    s3, a3 = report_pair(3, "proj")  # rejected last, rejection stored first
    r3 = rejection_of(s3, 5)
    requested = example("broadcast.requested")
    delivered = example("broadcast.delivered")
    failed_late = example("broadcast.failed").model_copy(update={
        "event_id": uuid.uuid4(),
        "payload": example("broadcast.failed").payload.model_copy(
            update={"language": "ja", "channel": "public-feed", "attempt": 1})})
    first = [v1, v3, v2, a1, s2, r2, r3, requested, delivered]
    second = [s1, a2, s3, a3, failed_late]
    async with running_recorder(settings):
        await produce_events(kafka_bootstrap, namespace, first)
        await wait_for(lambda: _equals(stored_count(db_pool), len(first)), timeout=20,
                       what="the first round stored")
        await produce_events(kafka_bootstrap, namespace, second)
        await wait_for(lambda: _equals(stored_count(db_pool), len(first) + len(second)),
                       timeout=20, what="the second round stored")
    order_row = await db_pool.fetchrow(
        "select version, status, level, last_event_id, namespace from orders_current "
        "where order_id = $1", order_id)
    assert order_row is not None
    assert (order_row["version"], order_row["status"]) == (3, "lifted")
    assert (order_row["last_event_id"], order_row["namespace"]) == (v3.event_id, namespace)
    reports = {r["report_id"]: r for r in await db_pool.fetch(
        "select report_id, status, area_id, outside_region, submitted_event_id, "
        "reasons::text as reasons from reports_current")}
    assert set(reports) == {a1.payload.report_id, a2.payload.report_id, a3.payload.report_id}
    one, two, three = (reports[a.payload.report_id] for a in (a1, a2, a3))
    assert (one["status"], one["outside_region"], one["submitted_event_id"]) == (
        "accepted", False, s1.event_id)
    assert (two["status"], two["reasons"], two["submitted_event_id"]) == (
        "accepted", None, s2.event_id)
    assert three["status"] == "rejected" and "already reported" in three["reasons"]
    assert three["submitted_event_id"] == s3.event_id
    deliveries = {(r["language"], r["channel"]): r for r in await db_pool.fetch(
        "select language, channel, status, attempt, kind from broadcasts_current")}
    assert len(deliveries) == 8  # 4 languages x 2 channels
    assert deliveries[("ja", "public-feed")]["status"] == "delivered"
    assert deliveries[("en", "webhook")]["status"] == "requested"
    assert {r["kind"] for r in deliveries.values()} == {"order_issued"}


async def test_offsets_are_committed_only_after_the_rows_exist(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """While the database cannot take the batch, the group's committed offsets stay put."""
    await migrate_pool(db_pool)
    settings = recorder_settings(kafka_bootstrap, schema_dsn(database_url, db_schema), namespace)
    await ensure_topics(settings)
    events = mixed_events(200, "lag")
    topics = recorded_topics(namespace)
    async with db_pool.acquire() as blocker:
        lock = blocker.transaction()
        await lock.start()
        # Holds the recorder's COPY until this transaction ends.
        await blocker.execute("lock table events in access exclusive mode")
        released = False
        try:
            async with running_recorder(settings):
                await produce_events(kafka_bootstrap, namespace, events)

                async def recorder_waits_for_the_lock() -> bool:
                    waiting: int = await db_pool.fetchval(
                        "select count(*) from pg_locks where not granted "
                        "and relation = 'events'::regclass")
                    return waiting > 0

                await wait_for(recorder_waits_for_the_lock, timeout=20,
                               what="the recorder blocked on the events table")
                committed = await group_offsets(settings, group_id(namespace), topics)
                assert all(offset <= 0 for offset in committed.values()), committed
                await lock.rollback()
                released = True
                await wait_for(lambda: _equals(stored_count(db_pool), len(events)),
                               timeout=20, what="events stored after the lock")
                await wait_for(lambda: caught_up(settings), timeout=20, what="offsets committed")
        finally:
            if not released:
                await lock.rollback()


async def test_undecodable_record_is_dead_lettered_and_its_partition_continues(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """Bytes that are not an event go to the deadletter topic (and dead_letters); the
    event behind them on the same partition is stored."""
    await migrate_pool(db_pool)
    settings = recorder_settings(kafka_bootstrap, schema_dsn(database_url, db_schema), namespace)
    await ensure_topics(settings)
    sub, acc = report_pair(7, "poison")
    producer = clients.producer(settings)
    await producer.start()
    try:
        topic = qualified("reports", namespace)
        key = (sub.payload.area_id or "").encode()
        await producer.send_and_wait(topic, b'{"type": "report.submitted", "oops"', key=key)
        await producer.send_and_wait(topic, b'{"type": "report.unknown"}', key=key)
    finally:
        await producer.stop()
    await produce_events(kafka_bootstrap, namespace, [sub, acc])
    async with running_recorder(settings):
        await wait_for(lambda: _equals(stored_count(db_pool), 2), timeout=20,
                       what="the events behind the poison")

        async def letters() -> list[asyncpg.Record]:
            return list(await db_pool.fetch(
                "select topic, service, error, letter::text from dead_letters order by \"offset\""))

        rows = await wait_for(lambda: _len_is(letters(), 2), timeout=20, what="2 dead letters")
    assert {r["topic"] for r in rows} == {topic}
    assert {r["service"] for r in rows} == {"recorder"}
    assert "MalformedEvent" in rows[0]["error"]
    assert "UnknownEventType" in rows[1]["error"]


async def _len_is(rows: Any, n: int) -> Any:
    got = await rows
    return got if len(got) == n else None


async def test_an_older_schema_version_is_stored_in_its_current_shape(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """A report.submitted v1 (flat lat/lon) is stored upcast to v2; others as received."""
    await migrate_pool(db_pool)
    settings = recorder_settings(kafka_bootstrap, schema_dsn(database_url, db_schema), namespace)
    await ensure_topics(settings)
    sub, acc = report_pair(11, "v1")
    document = json.loads(encode_event(sub))
    location = document["payload"].pop("location")
    document["payload"].update(lat=location["lat"], lon=location["lon"])
    document["schema_version"] = 1
    producer = clients.producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(qualified("reports", namespace),
                                     json.dumps(document).encode(), key=b"kojimachi")
    finally:
        await producer.stop()
    await produce_events(kafka_bootstrap, namespace, [acc])
    async with running_recorder(settings):
        await wait_for(lambda: _equals(stored_count(db_pool), 2), timeout=20, what="2 events")
    rows = {r["type"]: r for r in await db_pool.fetch(
        "select type, schema_version, envelope::text as envelope from events")}
    upcast = rows["report.submitted"]
    assert upcast["schema_version"] == 2
    assert decode_event(upcast["envelope"]) == sub
    assert json.loads(upcast["envelope"])["payload"]["location"] == location
    assert decode_event(rows["report.accepted"]["envelope"]) == acc


async def test_recorder_refuses_to_start_on_an_unmigrated_database(
    kafka_bootstrap: str, database_url: str, db_schema: str, namespace: str,
) -> None:
    """Without the event store tables the recorder stops at once and says to migrate."""
    settings = recorder_settings(kafka_bootstrap, schema_dsn(database_url, db_schema), namespace)
    with pytest.raises(RecorderTablesMissing, match="sonae db migrate"):
        await asyncio.wait_for(serve(settings, asyncio.Event()), 20)
