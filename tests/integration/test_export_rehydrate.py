"""Export a window of the event store as JSONL; rehydrate an empty broker from the store."""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from click.testing import CliRunner

from infra.embedded.broker import EmbeddedBroker
from infra.embedded.processes import free_port
from infra.kafka import clients
from infra.kafka.compat import end_offsets
from infra.settings import Settings
from infra.topics import ensure_topics
from schemas.envelope import new_event
from schemas.evacuation import OrderIssued, OrderLifted, OrderUpdated
from schemas.events import Event, decode_event, encode_event
from schemas.examples import example
from schemas.topics import key_for, route
from services.recorder.cli import events as events_cli
from services.recorder.domain import Recorded, event_row
from services.recorder.errors import BrokerNotEmpty
from services.recorder.export import Window, export_window
from services.recorder.rehydrate import is_broker_empty, rehydrate, rehydrate_if_empty
from services.recorder.store import EventStore
from tests.support import produce_events, schema_dsn, wait_for
from tests.support.recorder import (
    at,
    caught_up,
    migrate_pool,
    mixed_events,
    recorder_settings,
    running_recorder,
    stored_count,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JST = timezone(timedelta(hours=9))


def orders(n: int) -> list[Event]:
    """``n`` orders, each issued, updated and lifted (three versions on one key)."""
    issued, updated, lifted = (example("evacuation.order_issued"),
                               example("evacuation.order_updated"),
                               example("evacuation.order_lifted"))
    out: list[Event] = []
    for i in range(n):
        change = {"order_id": uuid.uuid4()}
        source = "evacuation-decision"
        out.append(new_event(OrderIssued, issued.payload.model_copy(update=change),
                             occurred_at=at(i), source=source))
        out.append(new_event(OrderUpdated, updated.payload.model_copy(update=change),
                             occurred_at=at(i + 1), source=source))
        out.append(new_event(OrderLifted, lifted.payload.model_copy(update=change),
                             occurred_at=at(i + 2), source=source))
    return out


async def store_directly(pool: asyncpg.Pool, namespace: str, events: Sequence[Event]) -> None:
    """Write events into the store as the recorder would, without a broker."""
    rows = []
    for offset, event in enumerate(events):
        routed = route(event, namespace)
        rows.append(Recorded(event_row(event, topic=routed.topic, partition=0, offset=offset,
                                       key=key_for(event).decode(),
                                       envelope=routed.value.decode()), event))
    await EventStore(pool).write(rows)


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, bytes, bytes]:
    """``python -m sonae.cli ARGS`` as a real process: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sonae.cli", *args, cwd=ROOT,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def read_all(settings: Settings, topics: Sequence[str]) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topics`` from the beginning to the (corrected) end."""
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(t, p) for t in topics
               for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = await end_offsets(consumer, tps, profile=settings.kafka_profile)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while len(records) < sum(ends.values()):
            assert time.monotonic() < deadline, "could not read the topics to their end"
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def per_key(pairs: Sequence[tuple[str, str | None, object]]) -> dict[tuple[str, str | None],
                                                                    list[object]]:
    out: dict[tuple[str, str | None], list[object]] = defaultdict(list)
    for topic, key, event_id in pairs:
        out[(topic, key)].append(event_id)
    return dict(out)


@pytest.fixture
async def empty_broker(tmp_path: Path) -> AsyncIterator[EmbeddedBroker]:
    """A second embedded broker of the test's own: the broker "started empty"."""
    broker = EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log")
    await asyncio.to_thread(broker.start)
    try:
        yield broker
    finally:
        await asyncio.to_thread(broker.stop)


async def test_export_writes_the_window_in_event_time_order(
    database_url: str, db_schema: str, db_pool: asyncpg.Pool, namespace: str,
) -> None:
    """The export of a window is exactly the stored events of that window and namespace,
    one canonical event per line, in event-time order."""
    await migrate_pool(db_pool)
    events = mixed_events(300, "export") + orders(5)
    other = mixed_events(20, "other")  # another namespace: never exported here
    await store_directly(db_pool, namespace, events)
    await store_directly(db_pool, "drill.x", other)
    since, until = at(50), at(150)
    out = io.BytesIO()
    totals: list[int] = []
    count = await _export(db_pool, Window(namespace, since, until), out, totals)
    lines = out.getvalue().splitlines()
    expected = sorted((e for e in events if since <= e.occurred_at < until),
                      key=lambda e: e.occurred_at)
    assert count == len(lines) == len(expected) == totals[0] > 0
    # Event-time order; ties in store order (sorted() is stable, the list is store order).
    assert [decode_event(line).event_id for line in lines] == [e.event_id for e in expected]
    assert lines == [encode_event(e) for e in expected]

    code, stdout, stderr = await run_cli(
        "events", "export", "--since", since.astimezone(JST).isoformat(),
        "--until", until.isoformat().replace("+00:00", "Z"), "--namespace", namespace,
        env={"SONAE_DATABASE_URL": schema_dsn(database_url, db_schema)})
    assert code == 0, stderr.decode()
    assert stdout.splitlines() == lines
    assert f"exported {len(lines)} events".encode() in stderr


async def _export(pool: asyncpg.Pool, window: Window, out: io.BytesIO, totals: list[int]) -> int:
    async with pool.acquire() as conn:
        return await export_window(conn, window, out, on_total=totals.append)


def test_export_refuses_a_time_without_timezone() -> None:
    """--since/--until without a timezone is an error naming the option."""
    result = CliRunner().invoke(events_cli, ["export", "--since", "2025-08-21T14:00"])
    assert result.exit_code == 2
    assert "'--since'" in result.output and "no timezone" in result.output
    result = CliRunner().invoke(events_cli, ["export", "--until", "yesterday"])
    assert "'--until'" in result.output and "not an ISO-8601 time" in result.output
    result = CliRunner().invoke(events_cli, ["export", "--since", "2025-08-21T14:00Z",
                                             "--until", "2025-08-21T13:00Z"])
    assert result.exit_code == 2 and "window is empty" in result.output


async def test_rehydrating_an_empty_broker_restores_every_event_in_order_per_key(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str, empty_broker: EmbeddedBroker,
) -> None:
    """Events recorded from one broker, republished into an empty one, are the same
    events with the same keys in the same order per key; a non-empty broker is refused."""
    await migrate_pool(db_pool)
    dsn = schema_dsn(database_url, db_schema)
    live = recorder_settings(kafka_bootstrap, dsn, namespace)
    await ensure_topics(live)
    produced = mixed_events(1500, "rehydrate") + orders(20)
    await produce_events(kafka_bootstrap, namespace, produced)
    async with running_recorder(live):
        await wait_for(lambda: _count_is(db_pool, len(produced)), timeout=30,
                       what="everything recorded")

    fresh = recorder_settings(empty_broker.bootstrap, dsn, namespace)
    assert await is_broker_empty(fresh)
    sink = io.StringIO()
    assert await rehydrate_if_empty(fresh, out=sink) == len(produced)
    assert "republished" in sink.getvalue()
    assert not await is_broker_empty(fresh)

    topics = sorted({route(e, namespace).topic for e in produced})
    records = await read_all(fresh, topics)
    assert len(records) == len(produced)
    assert {r.value for r in records} == {encode_event(e) for e in produced}
    got = per_key([(r.topic, r.key.decode() if r.key else None,
                    decode_event(r.value).event_id) for r in records])
    want = per_key([(route(e, namespace).topic, key_for(e).decode(), e.event_id)
                    for e in produced])
    assert got == want  # same events, same keys, same order per key
    stored = await db_pool.fetch("select topic, key, event_id from events order by seq")
    assert per_key([(r["topic"], r["key"], r["event_id"]) for r in stored]) == want

    assert await rehydrate_if_empty(fresh, out=sink) == 0
    with pytest.raises(BrokerNotEmpty, match="--force"):
        await rehydrate(fresh)
    code, _, stderr = await run_cli("rehydrate", env={k: v for k, v in fresh.env().items()
                                                      if k.startswith("SONAE_")})
    assert code == 1 and b"--force" in stderr

    # The recorder reading the rehydrated broker stores nothing new.
    async with running_recorder(fresh):
        await wait_for(lambda: caught_up(fresh), timeout=30, what="rehydrated topics read")
    assert await stored_count(db_pool) == len(produced)


async def _count_is(pool: asyncpg.Pool, n: int) -> bool:
    return await stored_count(pool) == n
