"""Wiring of the recorder process: settings in, pool, consumer and producer, run.

``main(settings)`` is the entry point ``sonae service run recorder`` calls.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from infra.health import beacon_path, beat
from infra.kafka import clients
from infra.kafka.membership import group_membership
from infra.logs import configure_logging
from infra.settings import Settings
from infra.topics import ensure_topics
from services.common.bus import Publisher
from services.common.retry import sleep_until
from services.common.runtime import run_service
from services.recorder.consumer import (
    SERVICE,
    Recorder,
    RecorderConfig,
    group_id,
    recorded_topics,
)
from services.recorder.errors import RecorderError, StoreUnavailable
from services.recorder.store import EventStore, is_transient

log = logging.getLogger(__name__)

__all__ = ["connect_pool", "main", "serve"]

_CONNECT_RETRY_MAX = 5.0


async def connect_pool(dsn: str, stop: asyncio.Event | None = None) -> asyncpg.Pool:
    """An asyncpg pool for the store, waiting out a database that is (re)starting.

    Raises StoreUnavailable if ``stop`` is set before the database answers.
    """
    # min_size=0: asyncpg keeps no connection floor, so while the server is down the
    # pool does not log a traceback per background reconnect; the writer's own retry
    # (with backoff) is the one place that reconnects.
    pool: asyncpg.Pool = await asyncpg.create_pool(dsn, min_size=0, max_size=2)
    delay = 0.1
    while True:
        try:
            await pool.fetchval("select 1")
            return pool
        except Exception as exc:
            if not is_transient(exc):
                await pool.close()
                raise
            if stop is not None and stop.is_set():
                await pool.close()
                raise StoreUnavailable(f"PostgreSQL unreachable at start: {exc}") from exc
            log.warning("PostgreSQL unreachable (%s); retrying in %.1fs", exc, delay)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                await sleep_until(stop, delay)
            delay = min(delay * 2, _CONNECT_RETRY_MAX)


async def serve(settings: Settings, stop: asyncio.Event,
                *, config: RecorderConfig | None = None) -> None:
    """Record the settings' namespace until ``stop`` is set."""
    namespace = settings.namespace
    # The recorder subscribes by name: make sure every topic exists, so none is
    # missed until the next metadata refresh.
    await ensure_topics(settings)
    pool = await connect_pool(settings.database_url, stop)
    try:
        store = EventStore(pool)
        await store.check_ready()
        consumer = clients.consumer(settings, *recorded_topics(namespace),
                                    group_id=group_id(namespace))
        producer = clients.producer(settings)
        await producer.start()
        try:
            await consumer.start()
            try:
                recorder = Recorder(consumer, store, Publisher(producer, namespace),
                                    config=config)
                log.info("recording namespace %r into the event store", namespace or "live")
                # The beacon says "in my group and consuming" for `sonae status`.
                beacon = beacon_path(settings.data_dir, SERVICE, namespace)
                done = asyncio.Event()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(beat(beacon, lambda: group_membership(consumer), done),
                                   name="health-beacon")
                    try:
                        await recorder.run(stop)
                    finally:
                        done.set()
                log.info("recorder stopped after %d new events", recorder.recorded)
            finally:
                await consumer.stop()
        finally:
            await producer.stop()
    finally:
        await pool.close()


def main(settings: Settings) -> None:
    """Run the recorder process until SIGTERM (blocking)."""
    configure_logging(settings)  # a no-op under `sonae service run`
    try:
        run_service(serve, settings)
    except RecorderError as exc:
        raise SystemExit(f"recorder: {exc}") from None
