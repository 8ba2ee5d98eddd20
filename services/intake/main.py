"""Wiring of the intake process: HTTP server, outbox relay and raw ingest in one task group.

``main(settings)`` is the registered entry point (``sonae service run intake``).
Migrations are applied by ``sonae up`` / ``sonae db migrate``, not here; intake
refuses to start, naming the fix, when its tables are missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import asyncpg
from aiohttp import web

from infra.kafka import clients
from infra.logs import configure_logging
from infra.redact import mask_passwords
from infra.settings import Settings
from infra.topics import ensure_topics
from schemas.jma import load_jma_table
from schemas.region import RegionPackError, load_region
from services.common.httpguard import GuardedSite, runner_options
from services.common.revocation import DenyList
from services.common.runtime import run_service
from services.intake.cap import CapLimits
from services.intake.errors import IntakeStartupError, IntakeTablesMissing
from services.intake.http import build_app
from services.intake.ingest import Ingest
from services.intake.metrics import IntakeMetrics
from services.intake.parsepool import ParsePool
from services.intake.ratelimit import RateLimiter
from services.intake.relay import Relay
from services.intake.service import Intake
from services.intake.store import Store

log = logging.getLogger(__name__)

__all__ = ["main", "serve"]

HTTP_SHUTDOWN_GRACE: Final = 5.0
"""Seconds in-flight HTTP requests get to finish on SIGTERM."""
PRODUCER_REQUEST_TIMEOUT_MS: Final = 10_000
"""Fail a produce (and retry it) after this long rather than aiokafka's 40 s default."""


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run intake until ``stop`` is set."""
    try:
        region = load_region(settings.region)
    except RegionPackError as e:
        raise IntakeStartupError(f"cannot load region pack {settings.region!r} "
                                 f"(SONAE_REGION): {e}") from e
    try:
        jma_table = load_jma_table(settings.region, region)
    except RegionPackError as e:
        raise IntakeStartupError(f"cannot load the JMA code table of region pack "
                                 f"{settings.region!r} (SONAE_REGION): {e}") from e
    try:
        pool = await asyncpg.create_pool(settings.database_url, min_size=2, max_size=10)
    except (OSError, asyncpg.PostgresError) as e:
        raise IntakeStartupError(mask_passwords(
            f"cannot reach PostgreSQL at {settings.database_url} (SONAE_DATABASE_URL): {e}"
        )) from e
    try:
        store = Store(pool, settings.namespace)
        await store.check_tables()
        metrics = IntakeMetrics()
        parsing = ParsePool(settings.intake_parse_workers, settings.intake_parse_queue)
        intake = Intake(store, region, metrics=metrics, jma_table=jma_table,
                        max_jma_bytes=settings.intake_max_jma_bytes,
                        max_jma_elements=settings.intake_jma_max_elements,
                        cap_limits=CapLimits.from_settings(settings), parsing=parsing)
        relay = Relay(
            store,
            lambda: clients.producer(settings, request_timeout_ms=PRODUCER_REQUEST_TIMEOUT_MS),
            metrics=metrics,
            on_connect=lambda: ensure_topics(settings),
        )
        denylist = DenyList(lambda: asyncpg.connect(settings.database_url),
                            poll_seconds=settings.token_denylist_poll_seconds)
        ingest = Ingest(intake, settings, denylist=denylist)
        app = build_app(intake, secret=settings.token_secret,
                        denylist=denylist, max_token_lifetime=settings.token_max_ttl,
                        limiter=RateLimiter(settings.intake_rate_burst,
                                            settings.intake_rate_per_second),
                        unauthenticated_limiter=RateLimiter(
                            settings.intake_unauthenticated_rate_burst,
                            settings.intake_unauthenticated_rate_per_second),
                        body_timeout=settings.intake_body_timeout_seconds,
                        max_json_bytes=settings.intake_max_json_bytes,
                        max_cap_bytes=settings.intake_max_cap_bytes,
                        max_jma_bytes=settings.intake_max_jma_bytes)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_GRACE,
                               **runner_options(settings.intake_header_timeout_seconds))
        await runner.setup()
        try:
            site = GuardedSite(runner, settings.host, settings.intake_port,
                               max_connections=settings.intake_max_connections)
            try:
                await site.start()
            except OSError as e:
                raise IntakeStartupError(
                    f"cannot listen on {settings.host}:{settings.intake_port} "
                    f"(SONAE_INTAKE_PORT): {e}") from e
            log.info("intake listening on http://%s:%d (namespace %r, region %s)",
                     settings.host, settings.intake_port, settings.namespace, region.id)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(relay.run(stop), name="intake-relay")
                tg.create_task(ingest.run(stop), name="intake-ingest")
                tg.create_task(denylist.run(stop), name="intake-denylist")
        finally:
            await runner.cleanup()
            parsing.close()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 5.0)


def main(settings: Settings) -> None:
    """Blocking entry point: serve until SIGTERM; exit 2 with a one-line reason if unable."""
    configure_logging(settings)
    try:
        run_service(serve, settings)
    except (IntakeStartupError, IntakeTablesMissing) as e:
        log.error("intake cannot start: %s", e)
        raise SystemExit(2) from None
