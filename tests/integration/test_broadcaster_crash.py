"""SIGKILL the broadcaster process mid-stream and restart it: nothing lost, nothing doubled.

The public feed and the CAP feed end with exactly one document per (message,
version, language): a record re-produced after the kill carries the same event
id, which every consumer deduplicates on. Webhook subscribers may see a request
twice, always with the same Sonae-Delivery-Id and the same body (at-least-once
with an idempotency key: HTTP cannot do better; docs/broadcaster.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from infra.embedded.processes import free_port
from infra.kafka.compat import end_offsets
from schemas.broadcasts import BroadcastDelivered, BroadcastPublished
from schemas.envelope import Envelope
from schemas.events import decode_event
from schemas.topics import qualified
from services.broadcaster.channels import DELIVERY_ID_HEADER
from tests.support import produce_events, schema_dsn, wait_for
from tests.support.broadcaster import (
    SECRET,
    migrated,
    order_events,
    receiver,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 24
CHANNELS_PER_MESSAGE = 4 + 4 + 1 + 4  # public feed, webhook, CAP feed, push (no subscribers)


@contextmanager
def broadcaster_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``python -m services.broadcaster.main`` in its own process group; kill it after."""
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.broadcaster.main"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


async def read_topic(bootstrap: str, topic: str) -> list[Envelope]:
    """Every event of a topic, duplicates included, up to its end now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=50)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                        or set())]
        consumer.assign(tps)
        ends = await end_offsets(consumer, tps)
        await consumer.seek_to_beginning(*tps)
        got: list[Envelope] = []
        deadline = time.monotonic() + 30
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                got.extend(decode_event(r.value) for r in records if r.value is not None)
        return got
    finally:
        await consumer.stop()


async def delivered(pool: asyncpg.Pool) -> int:
    n: int = await pool.fetchval(
        "select count(*) from broadcast_deliveries where state = 'delivered'")
    return n


async def test_sigkill_mid_stream_then_restart_delivers_each_exactly_once(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str, tmp_path: Path,
) -> None:
    """Kill -9 while orders stream in; after a restart every delivery happened exactly once."""
    await migrated(db_pool)
    orders = [order_events(f"crash-{i}", versions=1)[0] for i in range(ORDERS)]
    expected = ORDERS * CHANNELS_PER_MESSAGE
    log = tmp_path / "broadcaster.log"
    async with receiver(slow={"app": 0.05}) as recv:
        hooks = tmp_path / "webhooks.toml"
        hooks.write_text(
            "[retry]\nbase_delay_seconds = 0.2\nmax_delay_seconds = 1.0\n\n"
            f'[[subscribers]]\nname = "app"\nurl = "{recv.url("app")}"\n'
            f'secret = "{SECRET.decode()}"\ntimeout_seconds = 10.0\n', encoding="utf-8")
        env = {
            **os.environ,
            "SONAE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "SONAE_DATABASE_URL": schema_dsn(database_url, db_schema),
            "SONAE_NAMESPACE": namespace,
            "SONAE_HOST": "127.0.0.1",
            "SONAE_BROADCASTER_PORT": str(free_port()),
            "SONAE_WEBHOOKS_FILE": str(hooks),
            "SONAE_LOG_LEVEL": "INFO",
        }

        async def stream() -> None:
            for order in orders:
                await produce_events(kafka_bootstrap, namespace, [order])
                await asyncio.sleep(0.1)  # a steady trickle, so the kill lands mid-stream

        with broadcaster_process(env, log) as first:
            producer = asyncio.create_task(stream())
            try:
                await wait_for(lambda: delivered(db_pool), timeout=60,
                               what="first deliveries (see broadcaster.log)")
                await wait_for(lambda: _at_least(db_pool, 20), timeout=60,
                               what="20 deliveries before the kill")
                os.killpg(first.pid, signal.SIGKILL)
                first.wait(timeout=30)
            finally:
                await producer
        before = await delivered(db_pool)
        assert before < expected, "the kill came too late to test anything"

        env["SONAE_BROADCASTER_PORT"] = str(free_port())
        with broadcaster_process(env, log) as second:
            await wait_for(lambda: _at_least(db_pool, expected), timeout=90,
                           what=f"all {expected} deliveries after the restart")
            await wait_for(lambda: _outbox_empty(db_pool), timeout=30,
                           what="the outbox published")
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0, log.read_text(errors="replace")[-3000:]

    # The ledger: one delivered row per (message, version, language, channel).
    rows = await db_pool.fetch("select message_id, version, language, channel, state, "
                               "delivery_id from broadcast_deliveries")
    assert len(rows) == expected and {r["state"] for r in rows} == {"delivered"}

    # Public feed: exactly the expected documents; a re-produced record is the same event.
    feed = await read_topic(kafka_bootstrap, qualified("public.messages", namespace))
    by_key: dict[tuple[UUID, int, str], set[UUID]] = defaultdict(set)
    for event in feed:
        assert isinstance(event, BroadcastPublished)
        by_key[(event.payload.message_id, event.payload.version, event.payload.language)].add(
            event.event_id)
    assert len(by_key) == ORDERS * 4
    assert all(len(ids) == 1 for ids in by_key.values())
    assert len(feed) - ORDERS * 4 <= 1  # the record in flight at the kill, if any

    # CAP feed: one document per order version.
    cap = await db_pool.fetch("select identifier, order_id from cap_alerts")
    assert len(cap) == ORDERS
    assert {r["order_id"] for r in cap} == {o.payload.order_id for o in orders}  # type: ignore[attr-defined]

    # Webhooks: every delivery arrived; any repeat has the same delivery id and body.
    webhook_ids = {str(r["delivery_id"]) for r in rows if r["channel"] == "webhook-app"}
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for request in recv.of("app"):
        bodies[request.headers[DELIVERY_ID_HEADER]].add(request.body)
    assert set(bodies) == webhook_ids
    assert all(len(b) == 1 for b in bodies.values())
    # At most the one request in flight at the kill (each worker sends one at a time). The
    # generous webhook timeout keeps a loaded machine's slow answer from adding a retry.
    assert len(recv.of("app")) - len(webhook_ids) <= 1

    # The outcome events: one broadcast.delivered per delivery (by event id).
    outcomes = await read_topic(kafka_bootstrap, qualified("broadcasts.deliveries", namespace))
    delivered_ids = {e.event_id for e in outcomes if isinstance(e, BroadcastDelivered)}
    assert len(delivered_ids) == expected


async def _at_least(pool: asyncpg.Pool, n: int) -> bool:
    return await delivered(pool) >= n


async def _outbox_empty(pool: asyncpg.Pool) -> bool:
    unsent = await pool.fetchval("select count(*) from broadcast_outbox where sent_at is null")
    return bool(unsent == 0)
