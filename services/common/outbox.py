"""The transactional outbox relay: publish committed outbox rows to Kafka, then mark them sent.

A service writes the events of a database change into an outbox table in the
same transaction as the change; :class:`OutboxRelay` publishes them. What
differs between users is an :class:`OutboxTable` (the table, its NOTIFY
channel, the advisory-lock class); intake (``outbox``) and the broadcaster
(``broadcast_outbox``) both run this relay.

- Every row belongs to one namespace (its ``namespace`` column); a relay is
  built for one namespace and publishes only that namespace's rows, so a drill's
  relay never publishes live rows, nor live's a drill's (migration 0006).
- Wakes on ``LISTEN <channel>`` (a trigger notifies at commit, the payload is
  ``<schema>/<namespace>``) and polls every ``poll_interval`` seconds anyway, so
  a lost notification costs at most that.
- Holds its namespace's publishing lock on one connection (:func:`outbox_session`,
  ``pg_try_advisory_lock(lock_class, hashtext(current_schema() || '/' || namespace))``),
  so one relay per (schema, namespace) publishes and the outbox's id order
  (per-key order) reaches Kafka intact. The lock is a session lock: it ends with
  the connection, however that ends, and a connection found dead when the
  session ends is expected, not an error.
- Publishes a batch pipelined (every send queued, then every ack awaited) and
  marks it sent with the statement that reads the next batch
  (:meth:`OutboxSession.next_batch`), so a cycle is one round trip to PostgreSQL
  and one to the broker. A batch is marked only after the broker acknowledged it.
- While the broker or database is unreachable it retries with bounded
  exponential backoff, recreating the producer; one warning per outage and one
  recovery line when a drain succeeds again.
- A crash between publish and mark leaves the rows unsent: they are published
  again on restart. Consumers deduplicate by ``event_id``; an outbox never holds
  two rows for one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Protocol
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer

from services.common.retry import BACKOFF_MAX, BACKOFF_MIN, TRANSIENT, Backoff, sleep_until

log = logging.getLogger(__name__)

__all__ = [
    "BATCH_SIZE",
    "OUTBOX_RETENTION",
    "POLL_INTERVAL",
    "SEND_TIMEOUT",
    "OutboxRelay",
    "OutboxRow",
    "OutboxSession",
    "OutboxTable",
    "ProducerFactory",
    "RelayMetrics",
    "outbox_session",
    "wake_payload",
]

BATCH_SIZE: Final = 500
"""Rows per publish."""
POLL_INTERVAL: Final = 1.0
"""Seconds between polls when no notification arrives."""
SEND_TIMEOUT: Final = 15.0
"""A batch not fully acknowledged within this many seconds is retried."""
BACKLOG_EVERY: Final = 1.0
"""Seconds between counts of unsent rows for the backlog gauge."""
OUTBOX_RETENTION: Final = timedelta(days=7)
"""Sent rows are deleted after this long (the event store keeps every event)."""
_RETENTION_EVERY: Final = 3600.0


@dataclass(frozen=True)
class OutboxTable:
    """What one user's outbox is: its table, NOTIFY channel and advisory-lock class.

    The table has the columns ``id`` (identity), ``namespace``, ``topic``, ``key``,
    ``value``, ``event_id`` and ``sent_at``; its insert trigger notifies ``channel``
    with ``<schema>/<namespace>`` as the payload (:func:`wake_payload`).
    """

    table: str
    channel: str
    lock_class: int
    """First key of ``pg_try_advisory_lock(classid, objid)``; objid hashes schema and namespace."""

    @property
    def next_batch_sql(self) -> str:
        """Marks the rows published last ($2) and reads up to $1 unsent ones of namespace $3."""
        # Both parts see the statement's snapshot, in which the rows being marked
        # are still unsent: hence the exclusion.
        return f"""
with marked as (
    update {self.table} set sent_at = now() where id = any($2::bigint[])
)
select id, topic, key, value, event_id from {self.table}
where namespace = $3 and sent_at is null and id <> all($2::bigint[])
order by id limit $1
"""


def wake_payload(schema: str, namespace: str) -> str:
    """The NOTIFY payload of rows written in ``schema`` for ``namespace`` (migration 0006)."""
    return f"{schema}/{namespace}"


# The lock's second key: one publisher per (schema, namespace).
_LOCK_SQL: Final = ("select pg_try_advisory_lock($1, hashtext(current_schema() || '/' || $2))")


@dataclass(frozen=True)
class OutboxRow:
    """An event waiting for the relay: a Kafka record and its outbox id."""

    id: int
    topic: str
    key: bytes | None
    value: bytes
    event_id: UUID


class OutboxSession:
    """The relay's hold on one namespace of an outbox: a connection that has its lock.

    Each :meth:`next_batch` is one autocommitted statement that marks the batch
    published last sent and reads the next unsent rows, so a relay cycle costs one
    round trip to PostgreSQL beside the broker's acknowledgement. A batch is only
    marked after :meth:`published`: rows whose publishing failed stay unsent.
    """

    def __init__(self, conn: asyncpg.Connection, table: OutboxTable, namespace: str) -> None:
        self.conn = conn
        self.namespace = namespace
        self._sql = table.next_batch_sql
        self._unmarked: list[int] = []

    async def next_batch(self, limit: int) -> list[OutboxRow]:
        """Mark the last published batch sent; return up to ``limit`` unsent rows of the
        session's namespace, in id order."""
        rows = await self.conn.fetch(self._sql, limit, self._unmarked, self.namespace)
        self._unmarked = []
        return [OutboxRow(r["id"], r["topic"],
                          bytes(r["key"]) if r["key"] is not None else None,
                          bytes(r["value"]), r["event_id"])
                for r in rows]

    def published(self, batch: Sequence[OutboxRow]) -> None:
        """The broker acknowledged every row of ``batch``: mark it with the next statement."""
        self._unmarked = [row.id for row in batch]

    async def mark(self) -> None:
        """Mark the last published batch sent now (before the session ends)."""
        if self._unmarked:
            await self.next_batch(0)


@contextlib.asynccontextmanager
async def outbox_session(pool: asyncpg.Pool, table: OutboxTable,
                         namespace: str) -> AsyncIterator[OutboxSession | None]:
    """A connection holding the publishing lock of ``namespace`` in this schema; ``None`` if
    another relay has it.

    The lock is a session advisory lock: it is held while the connection is, and
    PostgreSQL releases it when the connection ends, however it ends (the pool's
    reset also releases it when the session is returned).
    """
    conn = await pool.acquire()
    try:
        if not await conn.fetchval(_LOCK_SQL, table.lock_class, namespace):
            yield None
            return
        # A mark lost in a server crash only means the rows are published again,
        # which consumers absorb (they deduplicate by event_id): not worth an fsync.
        await conn.execute("set synchronous_commit = off")
        yield OutboxSession(conn, table, namespace)
    finally:
        try:
            await pool.release(conn)
        except Exception as e:
            # The session's connection died (server restart, terminated backend) and
            # asyncpg noticed only in the pool's reset, which then fails (connection
            # does not exist, or a protocol state the dead socket left behind). The
            # pool terminates a connection whose reset failed, so it stays sound, and
            # the lock went with the connection: expected, not an error.
            log.debug("outbox session connection was gone at release (%s: %s)",
                      type(e).__name__, e)


class RelayMetrics(Protocol):
    """The metrics a relay keeps (intake's :class:`~services.intake.metrics.IntakeMetrics`)."""

    @property
    def outbox_backlog(self) -> Any: ...  # a Gauge
    @property
    def published(self) -> Any: ...  # a Counter
    @property
    def publish_seconds(self) -> Any: ...  # a Histogram
    @property
    def relay_errors(self) -> Any: ...  # a Counter
    @property
    def broker_connected(self) -> Any: ...  # a Gauge


ProducerFactory = Callable[[], AIOKafkaProducer]


class OutboxRelay:
    """Publishes one namespace's rows of an outbox table through producers made by
    ``producer_factory``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        table: OutboxTable,
        producer_factory: ProducerFactory,
        *,
        namespace: str,
        name: str,
        metrics: RelayMetrics | None = None,
        on_connect: Callable[[], Awaitable[Any]] | None = None,
        batch_size: int = BATCH_SIZE,
        poll_interval: float = POLL_INTERVAL,
        final_drain: float = 0.0,
        outage_note: str = "",
    ) -> None:
        self.pool = pool
        self.table = table
        self.namespace = namespace
        """The namespace whose rows this relay publishes (and no other's)."""
        self.name = name
        """Who relays, for log lines ("intake", "broadcaster")."""
        self._factory = producer_factory
        self._on_connect = on_connect
        self.metrics = metrics
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.final_drain = final_drain
        """Seconds spent publishing what is left once stopped (0: stop after the batch)."""
        self._outage_note = outage_note
        self.connected = False
        """True while a producer is started and the last publish succeeded."""
        self.published = 0
        """Rows published (acknowledged) since start."""
        self._wake = asyncio.Event()
        self._backoff = Backoff(BACKOFF_MIN, BACKOFF_MAX)
        self._failing = False
        """Whether the last attempt failed (one warning per outage; backoff grows)."""

    def session(self) -> contextlib.AbstractAsyncContextManager[OutboxSession | None]:
        """This namespace's publishing session (see :func:`outbox_session`)."""
        return outbox_session(self.pool, self.table, self.namespace)

    async def backlog(self) -> int:
        """This namespace's outbox rows not yet published."""
        async with self.pool.acquire() as conn:
            count: int = await conn.fetchval(
                f"select count(*) from {self.table.table} "
                "where namespace = $1 and sent_at is null", self.namespace)
        return count

    async def forget_sent(self, older_than: timedelta) -> int:
        """Delete this namespace's rows published longer ago than ``older_than``; return
        how many."""
        async with self.pool.acquire() as conn:
            status: str = await conn.execute(
                f"delete from {self.table.table} where namespace = $2 "
                "and sent_at is not null and sent_at < now() - $1::interval", older_than,
                self.namespace)
        return int(status.split()[-1])

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._listen(stop), name=f"{self.name}-outbox-listen")
            tg.create_task(self._publish_loop(stop), name=f"{self.name}-outbox-publish")

    def wake(self) -> None:
        """Publish now rather than at the next poll."""
        self._wake.set()

    async def _publish_loop(self, stop: asyncio.Event) -> None:
        producer: AIOKafkaProducer | None = None
        try:
            while not stop.is_set():
                try:
                    if producer is None:
                        producer = self._factory()
                        await producer.start()
                        if self._on_connect is not None:
                            await self._on_connect()
                        log.info("%s relay connected to the broker", self.name)
                    async with self.session() as session:
                        if session is None:
                            # Another relay of this namespace publishes; take over when it stops.
                            self._set_connected(True)
                            await sleep_until(stop, self.poll_interval)
                            continue
                        try:
                            await self._drain_while_running(stop, session, producer)
                        finally:
                            with contextlib.suppress(*TRANSIENT):
                                await session.mark()
                except TRANSIENT as e:
                    if self.metrics is not None:
                        self.metrics.relay_errors.inc()
                    self._set_connected(False)
                    if not self._failing:
                        # One line per outage, not per retry.
                        log.warning("%s relay cannot publish (%s: %s); retrying with backoff%s",
                                    self.name, type(e).__name__, e, self._outage_note)
                    self._failing = True
                    await self._close(producer)
                    producer = None
                    await sleep_until(stop, self._backoff.next())
                    if self.metrics is not None:
                        with contextlib.suppress(*TRANSIENT):
                            self.metrics.outbox_backlog.set(await self.backlog())
        finally:
            self._set_connected(False)
            await self._close(producer)

    async def _drain(self, stop: asyncio.Event | None, session: OutboxSession,
                     send: Callable[[list[OutboxRow]], Awaitable[None]]) -> bool:
        """Publish until the outbox is empty; False if ``stop`` was set first."""
        # The statement reading a batch also marks the previous one sent; the
        # drain ends with the statement that marks the last and finds nothing.
        while batch := await session.next_batch(self.batch_size):
            await send(batch)
            session.published(batch)
            if stop is not None and stop.is_set():
                return False
        return True

    async def _drain_while_running(self, stop: asyncio.Event, session: OutboxSession,
                                   producer: AIOKafkaProducer) -> None:
        """Publish the outbox until ``stop``; between drains, sleep until notified."""
        send = self._sender(producer)
        last_retention = 0.0
        last_backlog = 0.0
        while not stop.is_set():
            if not await self._drain(stop, session, send):
                break
            self._set_connected(True)
            if self._failing:
                log.info("%s relay recovered; outbox draining resumed", self.name)
                self._backoff.reset()
                self._failing = False
            if self.metrics is not None and time.monotonic() - last_backlog >= BACKLOG_EVERY:
                # A count per publish cost as much as the publish's own queries.
                last_backlog = time.monotonic()
                self.metrics.outbox_backlog.set(await self.backlog())
            if time.monotonic() - last_retention > _RETENTION_EVERY:
                last_retention = time.monotonic()
                deleted = await self.forget_sent(OUTBOX_RETENTION)
                if deleted:
                    log.info("%s relay: deleted %d published rows older than %s", self.name,
                             deleted, OUTBOX_RETENTION)
            await sleep_until(stop, self.poll_interval, self._wake)
            self._wake.clear()
        if self.final_drain > 0:
            # Publish what is left (bounded), so little waits for the restart.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.final_drain):
                    await self._drain(None, session, send)

    def _sender(self, producer: AIOKafkaProducer) -> Callable[[list[OutboxRow]], Awaitable[None]]:
        async def send(rows: list[OutboxRow]) -> None:
            started = time.perf_counter()

            async def pipelined() -> None:
                # Queue every record first (the producer batches per partition and
                # keeps their order), then wait for all acknowledgements.
                futures = [await producer.send(r.topic, r.value, key=r.key) for r in rows]
                await asyncio.gather(*futures)

            await asyncio.wait_for(pipelined(), SEND_TIMEOUT)
            self.published += len(rows)
            if self.metrics is not None:
                self.metrics.publish_seconds.observe(time.perf_counter() - started)
                self.metrics.published.inc(len(rows))

        return send

    async def _listen(self, stop: asyncio.Event) -> None:
        # A dedicated connection held for LISTEN; if it drops, polling still
        # delivers, and the listener reconnects with backoff.
        backoff = Backoff(BACKOFF_MIN, BACKOFF_MAX)
        channel = self.table.channel
        while not stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    schema: str = await conn.fetchval("select current_schema()")
                    ours = wake_payload(schema, self.namespace)

                    def notified(_c: Any, _pid: int, _channel: str, payload: str,
                                 ours: str = ours) -> None:
                        if payload == ours:
                            self._wake.set()

                    await conn.add_listener(channel, notified)
                    try:
                        backoff.reset()
                        while not stop.is_set() and not conn.is_closed():
                            await sleep_until(stop, 1.0)
                    finally:
                        with contextlib.suppress(*TRANSIENT):
                            await conn.remove_listener(channel, notified)
            except TRANSIENT as e:
                log.debug("%s outbox listener lost (%s); polling meanwhile", self.name, e)
                await sleep_until(stop, backoff.next())

    async def _close(self, producer: AIOKafkaProducer | None) -> None:
        if producer is None:
            return
        # Stopping flushes pending sends; bound it so a dead broker cannot hold us.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 5.0)

    def _set_connected(self, value: bool) -> None:
        self.connected = value
        if self.metrics is not None:
            self.metrics.broker_connected.set(1 if value else 0)
