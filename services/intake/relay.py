"""The outbox relay: publish committed outbox rows to Kafka, then mark them sent.

- Wakes on ``LISTEN sonae_outbox`` (a trigger notifies at commit) and polls every
  :data:`POLL_INTERVAL` seconds anyway, so a lost notification costs at most that.
- Holds the schema's publishing lock on one connection
  (:meth:`~services.intake.store.Store.relay_session`); publishes a batch
  pipelined (every send queued, then every ack awaited, with ``acks=all`` from
  the client factory) and marks it sent with the statement that reads the next
  batch, so a cycle is one round trip to PostgreSQL and one to the broker.
- While the broker is unreachable it retries with bounded exponential backoff
  (:data:`BACKOFF_MIN` .. :data:`BACKOFF_MAX`), recreating the producer, while
  the HTTP API keeps accepting into the outbox; the backlog drains when the
  broker returns. After each (re)connection it creates any missing catalogue
  topics, so a broker that came back *empty* is usable at once.
- A crash between publish and mark leaves the rows unsent: they are published
  again on restart. Consumers deduplicate by ``event_id``; the outbox itself
  never holds two rows for one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.intake.metrics import IntakeMetrics
from services.intake.store import OutboxRow, RelaySession, Store

log = logging.getLogger(__name__)

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "BATCH_SIZE", "POLL_INTERVAL", "Relay"]

BATCH_SIZE: Final = 500
"""Rows per publish transaction."""
POLL_INTERVAL: Final = 1.0
"""Seconds between polls when no notification arrives."""
BACKOFF_MIN: Final = 0.2
BACKOFF_MAX: Final = 5.0
"""Retry delays while the broker or database is unavailable (doubling, bounded)."""
SEND_TIMEOUT: Final = 15.0
"""A batch not fully acknowledged within this many seconds is retried."""
BACKLOG_EVERY: Final = 1.0
"""Seconds between counts of unsent rows for the ``outbox_backlog`` gauge."""
OUTBOX_RETENTION: Final = timedelta(days=7)
"""Sent rows are deleted after this long (the event store keeps every event)."""
_RETENTION_EVERY: Final = 3600.0

# Failures that mean "try again later", not "this code is wrong".
TRANSIENT: Final = (KafkaError, OSError, TimeoutError, asyncpg.PostgresConnectionError,
                    asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                    asyncpg.TooManyConnectionsError)

ProducerFactory = Callable[[], AIOKafkaProducer]


class Relay:
    """Publishes a store's outbox through producers made by ``producer_factory``."""

    def __init__(
        self,
        store: Store,
        producer_factory: ProducerFactory,
        *,
        metrics: IntakeMetrics,
        on_connect: Callable[[], Awaitable[Any]] | None = None,
        batch_size: int = BATCH_SIZE,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.store = store
        self._factory = producer_factory
        self._on_connect = on_connect
        self.metrics = metrics
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.connected = False
        """True while a producer is started and the last publish succeeded."""
        self._wake = asyncio.Event()
        self._delay = BACKOFF_MIN
        self._failing = False
        """Whether the last attempt failed (one warning per outage; backoff grows)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._listen(stop), name="outbox-listen")
            tg.create_task(self._publish_loop(stop), name="outbox-publish")

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
                        log.info("relay connected to the broker")
                    async with self.store.relay_session() as session:
                        if session is None:
                            # Another relay of this schema publishes; take over when it stops.
                            self._set_connected(True)
                            await self._sleep(stop, self.poll_interval, wakeable=False)
                            continue
                        try:
                            await self._drain_while_running(stop, session, producer)
                        finally:
                            with contextlib.suppress(*TRANSIENT):
                                await session.mark()
                except TRANSIENT as e:
                    self.metrics.relay_errors.inc()
                    self._set_connected(False)
                    if not self._failing:
                        # One line per outage, not per retry.
                        log.warning("relay cannot publish (%s: %s); retrying with backoff, "
                                    "intake keeps accepting", type(e).__name__, e)
                    self._failing = True
                    await self._close(producer)
                    producer = None
                    await self._sleep(stop, self._delay, wakeable=False)
                    self._delay = min(self._delay * 2, BACKOFF_MAX)
                    with contextlib.suppress(*TRANSIENT):
                        self.metrics.outbox_backlog.set(await self.store.backlog())
        finally:
            self._set_connected(False)
            await self._close(producer)

    async def _drain_while_running(self, stop: asyncio.Event, session: RelaySession,
                                   producer: AIOKafkaProducer) -> None:
        """Publish the outbox until ``stop``; between drains, sleep until notified."""
        send = self._sender(producer)
        last_retention = 0.0
        last_backlog = 0.0
        while not stop.is_set():
            # The statement reading a batch also marks the previous one sent; the
            # drain ends with the statement that marks the last and finds nothing.
            while batch := await session.next_batch(self.batch_size):
                await send(batch)
                session.published(batch)
                if stop.is_set():
                    return
            self._set_connected(True)
            if self._failing:
                log.info("relay recovered; outbox draining resumed")
                self._delay, self._failing = BACKOFF_MIN, False
            if time.monotonic() - last_backlog >= BACKLOG_EVERY:
                # A count per publish cost as much as the publish's own queries.
                last_backlog = time.monotonic()
                self.metrics.outbox_backlog.set(await self.store.backlog())
            if time.monotonic() - last_retention > _RETENTION_EVERY:
                last_retention = time.monotonic()
                await self.store.forget_sent(OUTBOX_RETENTION)
            await self._sleep(stop, self.poll_interval, wakeable=True)

    def _sender(self, producer: AIOKafkaProducer) -> Callable[[list[OutboxRow]], Awaitable[None]]:
        async def send(rows: list[OutboxRow]) -> None:
            started = time.perf_counter()

            async def pipelined() -> None:
                # Queue every record first (the producer batches per partition and
                # keeps their order), then wait for all acknowledgements.
                futures = [await producer.send(r.topic, r.value, key=r.key) for r in rows]
                await asyncio.gather(*futures)

            await asyncio.wait_for(pipelined(), SEND_TIMEOUT)
            self.metrics.publish_seconds.observe(time.perf_counter() - started)
            self.metrics.published.inc(len(rows))

        return send

    async def _listen(self, stop: asyncio.Event) -> None:
        # A dedicated connection held for LISTEN; if it drops, polling still
        # delivers, and the listener reconnects with backoff.
        delay = BACKOFF_MIN
        while not stop.is_set():
            try:
                async with self.store.pool.acquire() as conn:
                    schema: str = await conn.fetchval("select current_schema()")

                    def notified(_c: Any, _pid: int, _channel: str, payload: str,
                                 schema: str = schema) -> None:
                        if payload == schema:
                            self._wake.set()

                    await conn.add_listener("sonae_outbox", notified)
                    try:
                        delay = BACKOFF_MIN
                        while not stop.is_set() and not conn.is_closed():
                            await self._sleep(stop, 1.0, wakeable=False)
                    finally:
                        with contextlib.suppress(*TRANSIENT):
                            await conn.remove_listener("sonae_outbox", notified)
            except TRANSIENT as e:
                log.debug("outbox listener lost (%s); polling meanwhile", e)
                await self._sleep(stop, delay, wakeable=False)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _sleep(self, stop: asyncio.Event, seconds: float, *, wakeable: bool) -> None:
        waits = [asyncio.ensure_future(stop.wait())]
        if wakeable:
            waits.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            if wakeable:
                self._wake.clear()

    async def _close(self, producer: AIOKafkaProducer | None) -> None:
        if producer is None:
            return
        # Stopping flushes pending sends; bound it so a dead broker cannot hold us.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 5.0)

    def _set_connected(self, value: bool) -> None:
        self.connected = value
        self.metrics.broker_connected.set(1 if value else 0)
