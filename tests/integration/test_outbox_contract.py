"""The outbox relay's contract, run against each of its users (intake, the broadcaster).

Against the real PostgreSQL and Kafka: a batch is marked only after it was
published, one relay per schema holds the lock until its connection ends, an
outage is warned once and its recovery logged once, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from infra.db.migrate import migrate
from infra.embedded.processes import free_port
from infra.kafka import clients
from infra.settings import load_settings
from schemas.envelope import new_event
from schemas.hazards import GaugeReading
from schemas.topics import route
from services.broadcaster.delivery import DeliveryStore
from services.broadcaster.dispatch import BROADCAST_OUTBOX
from services.broadcaster.dispatch import OutboxRelay as BroadcasterRelay
from services.common.outbox import OutboxRelay, OutboxTable, ProducerFactory, outbox_session
from services.intake.metrics import IntakeMetrics
from services.intake.relay import Relay as IntakeRelay
from services.intake.store import OUTBOX
from tests.support import gauge_write, store_for, wait_for

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class User:
    """One user of the outbox: its table, how it writes a row, how it builds its relay."""

    name: str
    table: OutboxTable
    write: Callable[[asyncpg.Pool, str, str], Awaitable[None]]
    relay: Callable[[asyncpg.Pool, str, ProducerFactory], Awaitable[OutboxRelay]]


async def _intake_write(pool: asyncpg.Pool, namespace: str, client_id: str) -> None:
    store = await store_for(pool, namespace)
    await store.record(gauge_write(client_id))


async def _intake_relay(pool: asyncpg.Pool, namespace: str,
                        factory: ProducerFactory) -> OutboxRelay:
    return IntakeRelay(await store_for(pool, namespace), factory, metrics=IntakeMetrics(),
                       poll_interval=0.1)


async def _broadcaster_write(pool: asyncpg.Pool, namespace: str, client_id: str) -> None:
    # The ledger writes its events into broadcast_outbox in its own transactions;
    # for the relay, a row is a row.
    async with pool.acquire() as conn:
        await migrate(conn)
        now = datetime.now(UTC)
        event = new_event(GaugeReading, {"gauge_id": client_id, "level_m": 1.5,
                                         "observed_at": now},
                          occurred_at=now, source="test")
        routed = route(event, namespace)
        await conn.execute(
            "insert into broadcast_outbox (namespace, topic, key, value, event_id) "
            "values ($1, $2, $3, $4, $5)",
            namespace, routed.topic, routed.key, routed.value, event.event_id)


async def _broadcaster_relay(pool: asyncpg.Pool, namespace: str,
                             factory: ProducerFactory) -> OutboxRelay:
    async with pool.acquire() as conn:
        await migrate(conn)
    return BroadcasterRelay(DeliveryStore(pool, namespace), factory, poll_interval=0.1)


USERS = [
    User("intake", OUTBOX, _intake_write, _intake_relay),
    User("broadcaster", BROADCAST_OUTBOX, _broadcaster_write, _broadcaster_relay),
]


@pytest.fixture(params=USERS, ids=[u.name for u in USERS])
def user(request: pytest.FixtureRequest) -> User:
    """Each user of the shared outbox relay in turn."""
    chosen: User = request.param
    return chosen


async def unsent_ids(pool: asyncpg.Pool, table: OutboxTable,
                     namespace: str | None = None) -> list[int]:
    """The ids of the rows (of ``namespace``, or all) not yet marked sent, in order."""
    async with pool.acquire() as conn:
        return [r["id"] for r in await conn.fetch(
            f"select id from {table.table} where sent_at is null"
            " and namespace = coalesce($1, namespace) order by id", namespace)]


async def filled(pool: asyncpg.Pool, namespace: str, user: User, count: int) -> list[int]:
    """Write ``count`` rows into the user's outbox; return the unsent ids."""
    for i in range(count):
        await user.write(pool, namespace, f"g-{i}")
    return await unsent_ids(pool, user.table)


async def test_a_batch_is_marked_sent_only_after_it_was_published(
        db_pool: asyncpg.Pool, namespace: str, user: User) -> None:
    """Unacknowledged batches are read again; acknowledged ones are marked by the next read."""
    ids = await filled(db_pool, namespace, user, 5)
    async with outbox_session(db_pool, user.table, namespace) as session:
        assert session is not None
        first = await session.next_batch(2)
        assert [r.id for r in first] == ids[:2]
        # Publishing failed (no published() call): the same rows come again.
        assert [r.id for r in await session.next_batch(2)] == ids[:2]
        session.published(first)
        second = await session.next_batch(2)
        assert [r.id for r in second] == ids[2:4]
        assert await unsent_ids(db_pool, user.table) == ids[2:]
        session.published(second)
        third = await session.next_batch(2)
        assert [r.id for r in third] == ids[4:]
        session.published(third)
        await session.mark()
    assert await unsent_ids(db_pool, user.table) == []


async def test_one_relay_per_schema_holds_the_lock_until_its_connection_ends(
        db_pool: asyncpg.Pool, namespace: str, user: User) -> None:
    """A second relay gets no session while the first holds one, and takes over after."""
    await filled(db_pool, namespace, user, 1)
    async with outbox_session(db_pool, user.table, namespace) as first:
        assert first is not None
        async with outbox_session(db_pool, user.table, namespace) as second:
            assert second is None
        # The holder's connection dies (server restart, network): the lock goes with it.
        # (The timeout makes the call wait until the backend is gone: without it the
        # lock may still be held for a moment after the call returns.)
        async with db_pool.acquire() as conn:
            assert await conn.fetchval("select pg_terminate_backend($1, 5000)",
                                       first.conn.get_server_pid())
        async with outbox_session(db_pool, user.table, namespace) as third:
            assert third is not None
            assert len(await third.next_batch(10)) == 1


async def test_a_dead_session_connection_ends_the_session_quietly(
        db_pool: asyncpg.Pool, namespace: str, user: User) -> None:
    """Leaving a session whose backend was terminated does not raise (the lock went with it)."""
    await filled(db_pool, namespace, user, 1)
    for _ in range(5):  # the race (asyncpg noticing the close late) is timing-dependent
        async with outbox_session(db_pool, user.table, namespace) as session:
            assert session is not None
            async with db_pool.acquire() as conn:
                # No timeout: the session ends while asyncpg may not have noticed yet.
                await conn.execute("select pg_terminate_backend($1)",
                                   session.conn.get_server_pid())
    await wait_for(lambda: lock_free(db_pool, user.table, namespace), timeout=10,
                   what="the lock freed")


async def lock_free(pool: asyncpg.Pool, table: OutboxTable, namespace: str) -> bool:
    """Whether a new session gets the lock (and gives it back)."""
    async with outbox_session(pool, table, namespace) as session:
        return session is not None


async def terminate_relay_session(pool: asyncpg.Pool, table: OutboxTable,
                                  namespace: str) -> None:
    """End the connection that holds this namespace's publishing lock (as a server restart
    does)."""
    async with pool.acquire() as conn:
        pid = await conn.fetchval(
            "select pid from pg_locks where locktype = 'advisory' and granted"
            " and classid = $1::bigint::oid"
            " and objid = (hashtext(current_schema() || '/' || $2)::bigint & 4294967295)::oid",
            table.lock_class, namespace)
        assert pid is not None, "no relay holds the lock"
        await conn.execute("select pg_terminate_backend($1)", pid)


async def test_each_outage_is_reported_once_and_the_relay_recovers(
        db_pool: asyncpg.Pool, namespace: str, kafka_bootstrap: str, user: User,
        caplog: pytest.LogCaptureFixture) -> None:
    """Two outages: one warning each, retries with backoff, a recovery line each, nothing lost."""
    await filled(db_pool, namespace, user, 3)
    live = load_settings(kafka_bootstrap=kafka_bootstrap, namespace=namespace)
    dead = load_settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", namespace=namespace)
    state = {"attempts": 0, "broker_up": False}

    def producer() -> AIOKafkaProducer:
        state["attempts"] += 1
        return clients.producer(live if state["broker_up"] else dead, request_timeout_ms=2000)

    async def drained() -> bool:
        return await unsent_ids(db_pool, user.table) == []

    relay = await user.relay(db_pool, namespace, producer)
    caplog.set_level(logging.INFO, logger="services.common.outbox")
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        # Outage 1: the broker is unreachable from the start.
        await wait_for(lambda: state["attempts"] >= 3, timeout=30, what="retries")
        state["broker_up"] = True
        await wait_for(drained, timeout=30, what="the outbox drained after outage 1")
        # Outage 2: the database connection goes, and the broker with it.
        state["broker_up"] = False
        await terminate_relay_session(db_pool, user.table, namespace)
        await user.write(db_pool, namespace, "during-outage-2")
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
    assert relay.published >= 4  # at least once: nothing lost


async def test_each_namespace_has_its_own_rows_and_lock(
        db_pool: asyncpg.Pool, namespace: str, user: User) -> None:
    """A session reads only its namespace's rows, and two namespaces publish side by side."""
    drill = f"drill.{namespace}"
    ours = await filled(db_pool, namespace, user, 2)
    await user.write(db_pool, drill, "g-0")  # the same client id, in a drill
    theirs = await unsent_ids(db_pool, user.table, drill)
    assert len(theirs) == 1 and not set(theirs) & set(ours)
    async with outbox_session(db_pool, user.table, namespace) as first, \
            outbox_session(db_pool, user.table, drill) as second:
        assert first is not None and second is not None  # one lock per namespace
        batch = await first.next_batch(10)
        assert [r.id for r in batch] == await unsent_ids(db_pool, user.table, namespace)
        assert [r.id for r in await second.next_batch(10)] == theirs
        first.published(batch)
        await first.mark()
    assert await unsent_ids(db_pool, user.table, namespace) == []
    assert await unsent_ids(db_pool, user.table, drill) == theirs
