"""Wiring of the broadcaster process: settings in; consumer, channel workers, relay and feed run.

``main(settings)`` is what ``sonae service run broadcaster`` calls
(``services.broadcaster.main:main``); ``python -m services.broadcaster.main``
does the same with settings from the environment.

Settings: the usual ``SONAE_*`` (Kafka, database, namespace, region, host,
``broadcaster_port``) and, read here until they move into infra/settings.py:

- ``SONAE_WEBHOOKS_FILE``: webhook subscribers (services/broadcaster/webhooks.py);
- ``SONAE_CAP_BASE_URL``: absolute base of the feed's links, when behind a proxy;
- ``SONAE_CAP_DIR``: also write each CAP document to this directory.

The public feed, the CAP feed and the push channel are live channels in the live
namespace only; in a drill or test namespace they are that namespace's own, not
live (the push channel then reaches only that namespace's subscriptions).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

from infra.kafka import clients
from infra.logs import configure_logging
from infra.settings import Settings, load_settings
from infra.topics import ensure_topics
from schemas.envelope import derive_id
from schemas.region import RegionPackError, load_region
from services.broadcaster.channels import (
    CapFeedChannel,
    Channel,
    PublicFeedChannel,
    WebhookChannel,
)
from services.broadcaster.consumer import (
    BroadcastConsumer,
    BroadcastService,
    ConsumerConfig,
    consumed_topics,
    group_id,
)
from services.broadcaster.delivery import TRANSIENT_DB_ERRORS, DeliveryStore
from services.broadcaster.dispatch import DispatchConfig, Dispatcher, OutboxRelay
from services.broadcaster.domain import ChannelRoute, Planner
from services.broadcaster.errors import BroadcasterError
from services.broadcaster.feed import CapFeedStore
from services.broadcaster.http import FeedInfo, make_app
from services.broadcaster.push import (
    PUSH_KINDS,
    FanoutStore,
    PushChannel,
    PushConfig,
    VapidSigner,
)
from services.broadcaster.templates import Composer, load_templates
from services.broadcaster.webhooks import WebhookConfig, webhooks_for
from services.common.bus import Publisher
from services.common.httpguard import runner_options
from services.common.retry import sleep_until
from services.common.runtime import run_service
from services.common.webpush import ensure_vapid_keys

log = logging.getLogger(__name__)

__all__ = ["Options", "main", "serve"]


@dataclass(frozen=True)
class Options:
    """What tests (and the environment) can change beyond Settings."""

    webhooks: WebhookConfig | None = None
    """Subscribers; None reads the settings' webhook file (``SONAE_WEBHOOKS_FILE``)."""
    dispatch: DispatchConfig | None = None
    """Worker tuning; None takes the webhook file's [retry] and defaults."""
    feeds_live: bool | None = None
    """Force the public and CAP feeds live or not (default: live iff the namespace is live)."""
    cap_dir: Path | None = None
    cap_base_url: str | None = None
    consumer: ConsumerConfig | None = None
    push: PushConfig | None = None
    """The push channel's tuning; None: no push channel. :meth:`from_settings` (what the
    process runs) always sets it; tests of other channels leave it out."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Options:
        """Options from the settings' webhook file, CAP directory and CAP base URL."""
        return cls(webhooks=webhooks_for(settings.webhooks_file), cap_dir=settings.cap_dir,
                   cap_base_url=settings.cap_base_url,
                   push=PushConfig(contact=settings.push_contact,
                                   concurrency=settings.push_concurrency))


async def _connect(dsn: str, stop: asyncio.Event) -> asyncpg.Pool | None:
    delay = 0.1
    while not stop.is_set():
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(dsn, min_size=1, max_size=6)
            return pool
        except TRANSIENT_DB_ERRORS as e:
            log.warning("PostgreSQL unreachable (%s); retrying in %.1fs", e, delay)
            await sleep_until(stop, delay)
            delay = min(delay * 2, 5.0)
    return None


async def serve(settings: Settings, stop: asyncio.Event, *, options: Options | None = None) -> None:
    """Run the broadcaster for the settings' namespace until ``stop`` is set."""
    options = options if options is not None else Options.from_settings(settings)
    namespace = settings.namespace
    region = load_region(settings.region)
    templates = load_templates(settings.region)
    pending = templates.review.pending()
    if pending:
        log.warning("message wording in %s awaits review by the ward's translators",
                    ", ".join(pending))
    webhooks = (options.webhooks if options.webhooks is not None
                else webhooks_for(settings.webhooks_file))
    # A claim must outlive one attempt (the slowest subscriber's timeout), and no more:
    # after a crash, the lease is how long an interrupted delivery waits to be retried.
    slowest = max((sub.timeout for sub in webhooks.subscribers), default=2.0)
    dispatch_config = options.dispatch or DispatchConfig(retry=webhooks.retry,
                                                         lease=max(5.0, 2 * slowest + 2.0))

    await ensure_topics(settings)
    pool = await _connect(settings.database_url, stop)
    if pool is None:
        return
    try:
        store = DeliveryStore(pool, namespace)
        await store.check_ready()
        push_config = options.push
        vapid = await ensure_vapid_keys(pool) if push_config is not None else None
        feed = CapFeedStore(pool)
        producer = clients.producer(settings)
        await producer.start()
        session = aiohttp.ClientSession()
        # Its own connections: the fan-out bounds its requests per origin itself.
        push_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=0, limit_per_host=push_config.concurrency if push_config else 0))
        runner: web.AppRunner | None = None
        try:
            channels: list[Channel] = [
                PublicFeedChannel(producer, namespace, live=options.feeds_live),
                CapFeedChannel(feed, namespace, live=options.feeds_live,
                               directory=options.cap_dir),
                *(WebhookChannel(sub, session) for sub in webhooks.subscribers),
            ]
            if push_config is not None and vapid is not None:
                channels.append(PushChannel(
                    FanoutStore(pool, namespace), push_session,
                    VapidSigner(vapid.signer(), push_config.contact,
                                lifetime=push_config.vapid_lifetime),
                    live=namespace == "" if options.feeds_live is None else options.feeds_live,
                    stop=stop, config=push_config, lease=dispatch_config.lease,
                    renew=lambda o: store.extend_lease(o.delivery_id, o.attempt,
                                                       dispatch_config.lease)))
            routes = [ChannelRoute(c.name, c.live, c.languages,
                                   "cap" if isinstance(c, CapFeedChannel) else "published",
                                   kinds=PUSH_KINDS if isinstance(c, PushChannel) else None)
                      for c in channels]
            planner = Planner(Composer(region, templates), namespace, routes)
            service = BroadcastService(planner, store, sender=templates.cap.sender)
            dispatcher = Dispatcher(channels, store, dispatch_config)
            relay = OutboxRelay(store, lambda: clients.producer(settings))

            info = FeedInfo(
                feed_id=derive_id("cap-feed", region.id, namespace or "live"),
                title=f"{templates.cap.sender_name.get(region.default_language)} — CAP",
                author=templates.cap.sender_name.get(region.default_language),
                base_url=options.cap_base_url,
            )
            runner = web.AppRunner(make_app(feed, pool, namespace, info), access_log=None,
                                   **runner_options())
            await runner.setup()
            try:
                await web.TCPSite(runner, settings.host, settings.broadcaster_port).start()
            except OSError as e:
                raise BroadcasterError(
                    f"cannot serve the CAP feed on {settings.host}:{settings.broadcaster_port} "
                    f"(SONAE_HOST, SONAE_BROADCASTER_PORT): {e.strerror or e}") from e
            log.info("CAP feed on http://%s:%d/cap/alerts.atom; channels: %s", settings.host,
                     settings.broadcaster_port,
                     ", ".join(f"{c.name}{' (live)' if c.live else ''}" for c in channels))

            def planned() -> None:
                dispatcher.wake()
                relay.wake()

            consumer = clients.consumer(settings, *consumed_topics(namespace),
                                        group_id=group_id(namespace))
            await consumer.start()
            try:
                reader = BroadcastConsumer(consumer, service, Publisher(producer, namespace),
                                           on_planned=planned, config=options.consumer)
                async with asyncio.TaskGroup() as group:
                    group.create_task(reader.run(stop), name="broadcaster-consumer")
                    group.create_task(dispatcher.run(stop), name="broadcaster-dispatch")
                    group.create_task(relay.run(stop), name="broadcaster-relay")
            finally:
                await consumer.stop()
        finally:
            if runner is not None:
                await runner.cleanup()
            await session.close()
            await push_session.close()
            await producer.stop()
    finally:
        await pool.close()


def main(settings: Settings) -> None:
    """Run the broadcaster process until SIGTERM (blocking)."""
    try:
        options = Options.from_settings(settings)
        run_service(lambda s, stop: serve(s, stop, options=options), settings)
    except (BroadcasterError, RegionPackError) as exc:
        raise SystemExit(f"broadcaster: {exc}") from None


if __name__ == "__main__":
    settings = load_settings()
    configure_logging(settings)
    main(settings)
