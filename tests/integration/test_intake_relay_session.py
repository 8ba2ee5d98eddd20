"""The relay's hold on the outbox against the real PostgreSQL: one lock, marks after acks."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from infra.embedded.processes import free_port
from infra.kafka import clients
from infra.settings import load_settings
from services.intake.metrics import IntakeMetrics
from services.intake.relay import Relay
from services.intake.store import _RELAY_LOCK_CLASS, Store
from tests.integration.test_intake_group_commit import gauge_write, store_for
from tests.support import wait_for

pytestmark = pytest.mark.integration


async def unsent_ids(pool: asyncpg.Pool) -> list[int]:
    async with pool.acquire() as conn:
        return [r["id"] for r in await conn.fetch(
            "select id from outbox where sent_at is null order by id")]


async def filled(pool: asyncpg.Pool, namespace: str, count: int) -> tuple[Store, list[int]]:
    store = await store_for(pool, namespace)
    for i in range(count):
        await store.record(gauge_write(f"g-{i}"))
    return store, await unsent_ids(pool)


async def test_a_batch_is_marked_sent_only_after_it_was_published(
        db_pool: asyncpg.Pool, namespace: str) -> None:
    """Unacknowledged batches are read again; acknowledged ones are marked by the next read."""
    store, ids = await filled(db_pool, namespace, 5)
    async with store.relay_session() as session:
        assert session is not None
        first = await session.next_batch(2)
        assert [r.id for r in first] == ids[:2]
        # Publishing failed (no published() call): the same rows come again.
        assert [r.id for r in await session.next_batch(2)] == ids[:2]
        session.published(first)
        second = await session.next_batch(2)
        assert [r.id for r in second] == ids[2:4]
        assert await unsent_ids(db_pool) == ids[2:]
        session.published(second)
        third = await session.next_batch(2)
        assert [r.id for r in third] == ids[4:]
        session.published(third)
        await session.mark()
    assert await unsent_ids(db_pool) == []


async def test_one_relay_per_schema_holds_the_lock_until_its_connection_ends(
        db_pool: asyncpg.Pool, namespace: str) -> None:
    """A second relay gets no session while the first holds one, and takes over after."""
    store, _ = await filled(db_pool, namespace, 1)
    async with store.relay_session() as first:
        assert first is not None
        async with store.relay_session() as second:
            assert second is None
        # The holder's connection dies (server restart, network): the lock goes with it.
        async with db_pool.acquire() as conn:
            assert await conn.fetchval("select pg_terminate_backend($1)",
                                       first.conn.get_server_pid())
        async with store.relay_session() as third:
            assert third is not None
            assert len(await third.next_batch(10)) == 1



async def terminate_relay_session(pool: asyncpg.Pool) -> None:
    """End the connection that holds this schema's publishing lock (as a server restart does)."""
    async with pool.acquire() as conn:
        pid = await conn.fetchval(
            "select pid from pg_locks where locktype = 'advisory' and granted"
            " and classid = $1::bigint::oid"
            " and objid = (hashtext(current_schema())::bigint & 4294967295)::oid",
            _RELAY_LOCK_CLASS)
        assert pid is not None, "no relay holds the lock"
        await conn.execute("select pg_terminate_backend($1)", pid)


async def test_each_outage_is_reported_once_and_the_relay_recovers(
        db_pool: asyncpg.Pool, namespace: str, kafka_bootstrap: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Two outages: one warning each, retries with backoff, a recovery line each, nothing lost."""
    store, _ = await filled(db_pool, namespace, 3)
    live = load_settings(kafka_bootstrap=kafka_bootstrap, namespace=namespace)
    dead = load_settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", namespace=namespace)
    state = {"attempts": 0, "broker_up": False}

    def producer() -> AIOKafkaProducer:
        state["attempts"] += 1
        return clients.producer(live if state["broker_up"] else dead, request_timeout_ms=2000)

    async def drained() -> bool:
        return await unsent_ids(db_pool) == []

    relay = Relay(store, producer, metrics=IntakeMetrics(), poll_interval=0.1)
    caplog.set_level(logging.INFO, logger="services.intake.relay")
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        # Outage 1: the broker is unreachable from the start.
        await wait_for(lambda: state["attempts"] >= 3, timeout=30, what="retries")
        state["broker_up"] = True
        await wait_for(drained, timeout=30, what="the outbox drained after outage 1")
        # Outage 2: the database connection goes, and the broker with it.
        state["broker_up"] = False
        await terminate_relay_session(db_pool)
        await store.record(gauge_write("during-outage-2"))
        relay.wake()
        before = state["attempts"]
        await wait_for(lambda: state["attempts"] >= before + 3, timeout=30, what="retries")
        assert not await drained()
        state["broker_up"] = True
        await wait_for(drained, timeout=30, what="the outbox drained after outage 2")
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("relay cannot publish" in m for m in messages) == 2, messages
    assert sum("relay recovered" in m for m in messages) == 2, messages
