"""The JMA feed poller process: ``sonae service run jma-feed`` (``sonae up`` runs it too).

Off by default (``SONAE_JMA_FEED_ENABLED=false``): CI, the demo and a ward's test
machines have no internet, and polling JMA is a decision for whoever operates
the system. Disabled, the process says so once and idles until stopped, so the
supervisor sees a healthy process rather than one to restart.

Enabled, it follows ``SONAE_JMA_FEED_URLS`` (JMA's regular / extra / eqvol feeds by
default) every ``SONAE_JMA_FEED_INTERVAL_SECONDS`` (≥ 60) plus up to
``SONAE_JMA_FEED_JITTER_SECONDS``, and posts each new message of the region
pack's ``data_types`` to intake (``SONAE_INTAKE_URL``) with a sensor token it
signs itself (subject ``jma-feed``). Refused entries are dead-lettered on the
namespace's ``deadletter`` topic with their bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Final

import aiohttp
import asyncpg
from aiokafka import AIOKafkaProducer

from infra.health import beacon_path, beat
from infra.kafka import clients
from infra.logs import configure_logging
from infra.settings import Settings
from schemas.common import Problem, utc_now
from schemas.deadletter import DeadLetter
from schemas.jma import load_jma_table
from schemas.region import RegionPackError
from schemas.topics import qualified
from services.common.auth import Role, issue_token
from services.common.runtime import run_service
from services.jma_feed.errors import EntryRefused, JmaFeedStartupError, JmaFeedTablesMissing
from services.jma_feed.feed import FeedEntry
from services.jma_feed.poller import DeadLetter as DeadLetterPort
from services.jma_feed.poller import Poller
from services.jma_feed.store import FeedStore

log = logging.getLogger(__name__)

__all__ = ["SERVICE", "SUBJECT", "kafka_dead_letters", "main", "serve"]

SERVICE: Final = "jma-feed"
SUBJECT: Final = "jma-feed"
"""The token subject the poller posts to intake as."""
_TOKEN_TTL: Final = timedelta(hours=1)
_HTTP_TIMEOUT: Final = aiohttp.ClientTimeout(total=30, connect=10)


class _Token:
    """A sensor token, signed again when it nears expiry."""

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.token_secret
        self._token = ""
        self._renew_at = datetime.min.replace(tzinfo=UTC)

    def __call__(self) -> str:
        now = datetime.now(UTC)
        if now >= self._renew_at:
            # It relays JMA's own feed, so it speaks for every JMA office (``jma:*``).
            self._token = issue_token(self._secret, Role.SENSOR, SUBJECT, _TOKEN_TTL, now=now,
                                      senders=["jma:*"])
            self._renew_at = now + _TOKEN_TTL / 2
        return self._token


def kafka_dead_letters(producer: AIOKafkaProducer, namespace: str) -> DeadLetterPort:
    """Dead-letter refused entries on the namespace's ``deadletter`` topic, bytes and all.

    The letter's ``topic`` is ``jma-feed`` (the entry came from no Kafka topic) and its
    key the entry's link; intake's field problems become the letter's problems.
    """
    topic = qualified("deadletter", namespace)

    async def dead_letter(entry: FeedEntry, data: bytes, refused: EntryRefused) -> None:
        problems = tuple(Problem(code="jma", field=pointer[:200] or None,
                                 message=(message or "refused")[:1000])
                         for pointer, message in refused.problems[:100])
        letter = DeadLetter.from_record(
            topic=SERVICE, partition=0, offset=0, key=entry.link.encode("utf-8"),
            value=data, error=f"EntryRefused: {refused}", service=SERVICE,
            failed_at=utc_now(), problems=problems)
        await producer.send_and_wait(topic, letter.model_dump_json().encode("utf-8"),
                                     key=entry.link.encode("utf-8"))
        log.warning("dead-lettered jma feed entry %s: %s", entry.link, refused)

    return dead_letter


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run the poller until ``stop`` is set (idle when disabled), beating its health beacon.

    The poller consumes no topic, so its beacon says only that its loop runs: idle
    when disabled, polling once started.
    """
    state = {"serving": False, "detail": "starting"}
    done = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(beat(beacon_path(settings.data_dir, SERVICE, settings.namespace),
                            lambda: (state["serving"] is True, str(state["detail"])), done),
                       name="health-beacon")
        try:
            await _serve(settings, stop, state)
        finally:
            done.set()


async def _serve(settings: Settings, stop: asyncio.Event, state: dict[str, object]) -> None:
    if not settings.jma_feed_enabled:
        log.info("jma feed poller disabled (SONAE_JMA_FEED_ENABLED=false); idle")
        state.update(serving=True, detail="disabled (SONAE_JMA_FEED_ENABLED=false), idle")
        await stop.wait()
        return
    try:
        table = load_jma_table(settings.region)
    except RegionPackError as e:
        raise JmaFeedStartupError(f"cannot load the JMA code table of region pack "
                                   f"{settings.region!r} (SONAE_REGION): {e}") from e
    try:
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    except (OSError, asyncpg.PostgresError) as e:
        raise JmaFeedStartupError(f"cannot reach PostgreSQL (SONAE_DATABASE_URL): {e}") from e
    producer = clients.producer(settings)
    try:
        store = FeedStore(pool)
        await store.check_tables()
        await producer.start()
        dead_letter = kafka_dead_letters(producer, settings.namespace)

        async with aiohttp.ClientSession(timeout=_HTTP_TIMEOUT) as session:
            poller = Poller(
                session=session, store=store, feeds=settings.jma_feed_url_list,
                data_types=table.data_types, intake_url=settings.intake_base_url,
                token=_Token(settings), dead_letter=dead_letter,
                interval=settings.jma_feed_interval_seconds,
                jitter=settings.jma_feed_jitter_seconds)
            log.info("jma feed poller following %s every %.0f s (+ up to %.0f s), data types %s",
                     ", ".join(poller.feeds), poller.interval, poller.jitter,
                     ", ".join(t.value for t in poller.data_types))
            state.update(serving=True, detail=f"polling {len(poller.feeds)} feeds")
            await poller.run(stop)
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 5.0)


def main(settings: Settings) -> None:
    """Blocking entry point: poll until SIGTERM; exit 2 with a one-line reason if unable."""
    configure_logging(settings)
    try:
        run_service(serve, settings)
    except (JmaFeedStartupError, JmaFeedTablesMissing) as e:
        log.error("jma feed poller cannot start: %s", e)
        raise SystemExit(2) from None
