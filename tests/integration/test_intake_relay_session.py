"""The relay's hold on the outbox against the real PostgreSQL: one lock, marks after acks."""

from __future__ import annotations

import asyncpg
import pytest

from services.intake.store import Store
from tests.integration.test_intake_group_commit import gauge_write, store_for

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
