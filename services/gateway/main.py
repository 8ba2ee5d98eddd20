"""Wiring of the gateway process: Kafka source, websocket server, dashboard, heartbeats.

``main(settings)`` is the registered entry point (``sonae service run gateway``).
:func:`running` is the same wiring as an async context manager, used by the
tests and the benchmark so that they exercise exactly what production runs.
Nothing connects at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

import asyncpg
from aiohttp import web
from websockets.asyncio.server import Server, serve

from infra.kafka import clients
from infra.logs import configure_logging
from infra.settings import Settings
from schemas.region import Region, RegionPackError, load_region
from schemas.topics import is_drill
from services.common.bus import Publisher
from services.common.httpguard import runner_options
from services.common.revocation import Connect, DenyList
from services.common.runtime import run_service
from services.gateway.athome import AtHomeForm
from services.gateway.cop import COP, RegionIndex
from services.gateway.errors import GatewayStartupError, LogReplaced
from services.gateway.http import build_app
from services.gateway.hub import CLIENT_QUEUE_SIZE, Hub
from services.gateway.push import PushApi
from services.gateway.server import (
    CLOSE_TIMEOUT,
    MAX_MESSAGE_BYTES,
    PING_INTERVAL,
    PING_TIMEOUT,
    Gateway,
    IntakeCalls,
    IntakeReports,
    ReportSink,
    allowed_origins,
    close_connection,
    heartbeats,
)
from services.gateway.source import Source

log = logging.getLogger(__name__)

__all__ = ["Running", "main", "running", "serve_gateway"]

DB_CONNECT_TIMEOUT: Final = 5.0
"""Seconds to reach the event store for a cold start before reading the broker instead."""
SERVICE_RESTART: Final = 1012
"""Close code when the log was replaced under us: reconnect for a fresh snapshot."""


@dataclass
class Running:
    """A started gateway: its hub and where it listens."""

    hub: Hub
    gateway: Gateway
    source: Source
    websocket_url: str
    dashboard_url: str
    server: Server


async def _store_pool(settings: Settings) -> asyncpg.Pool | None:
    try:
        return await asyncio.wait_for(
            asyncpg.create_pool(settings.database_url, min_size=1, max_size=2),
            DB_CONNECT_TIMEOUT)
    except (OSError, asyncpg.PostgresError, TimeoutError) as e:
        log.warning("event store unreachable (%s): the picture is read from the broker", e)
        return None


@contextlib.asynccontextmanager
async def running(settings: Settings, *, region: Region | None = None,
                  pool: asyncpg.Pool | None = None, reports: ReportSink | None = None,
                  intake: IntakeCalls | None = None,
                  websocket_port: int | None = None, dashboard_port: int | None = None,
                  queue_size: int = CLIENT_QUEUE_SIZE,
                  revocation: Connect | None = None) -> AsyncIterator[Running]:
    """Start the gateway (source first, then the servers); stop it on exit.

    ``pool`` is the event store for the cold start (None: read the broker only).
    ``revocation`` connects to the token deny list's database (None: no deny list).
    The source, heartbeats and the deny list run in a task group until the context exits.
    """
    region = region or load_region(settings.region)
    hub = Hub(COP.empty(RegionIndex.from_region(region), drill=is_drill(settings.namespace)),
              settings.namespace)
    ws_port = websocket_port if websocket_port is not None else settings.gateway_port
    http_port = dashboard_port if dashboard_port is not None else settings.dashboard_port
    producer = clients.producer(settings)
    source = Source(settings, hub, pool=pool)
    stop = asyncio.Event()
    push = PushApi(settings, region, pool)
    athome = AtHomeForm(settings)
    runner = web.AppRunner(build_app(region, gateway_port=ws_port,
                                     namespace=settings.namespace, hub=hub, push=push,
                                     athome=athome),
                           access_log=None, **runner_options())
    try:
        await push.start()
        await producer.start()
        await source.start()
        gateway = Gateway(hub, secret=settings.token_secret, namespace=settings.namespace,
                          area_ids=[d.id for d in region.districts],
                          publisher=Publisher(producer, settings.namespace), reports=reports,
                          intake=intake, queue_size=queue_size,
                          max_token_lifetime=settings.token_max_ttl,
                          message_rate=settings.gateway_message_rate_per_second,
                          message_burst=settings.gateway_message_burst,
                          max_per_address=settings.gateway_max_connections_per_address)
        denylist = None
        if revocation is not None:
            denylist = DenyList(revocation, poll_seconds=settings.token_denylist_poll_seconds,
                                on_revoked=gateway.revoked)
            gateway.denylist = denylist
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.host, http_port).start()
        except OSError as e:
            raise GatewayStartupError(f"cannot listen on {settings.host}:{http_port} "
                                      f"(SONAE_DASHBOARD_PORT): {e}") from None
        try:
            server = await serve(
                gateway.handler, settings.host, ws_port,
                origins=allowed_origins(settings.host, http_port),
                max_size=MAX_MESSAGE_BYTES, ping_interval=PING_INTERVAL,
                ping_timeout=PING_TIMEOUT, close_timeout=CLOSE_TIMEOUT,
                # Deltas are small; per-connection deflate would cost more CPU than the
                # bytes it saves when fanning out to thousands of clients.
                compression=None)
        except OSError as e:
            raise GatewayStartupError(f"cannot listen on {settings.host}:{ws_port} "
                                      f"(SONAE_GATEWAY_PORT): {e}") from None
        async with server, asyncio.TaskGroup() as tg:
            tg.create_task(_read_log(settings, hub, source, pool, stop), name="gateway-source")
            tg.create_task(heartbeats(hub, stop), name="gateway-heartbeats")
            if denylist is not None:
                tg.create_task(denylist.run(stop), name="gateway-denylist")
            try:
                yield Running(hub, gateway, source, f"ws://{settings.host}:{ws_port}/",
                              f"http://{settings.host}:{http_port}/", server)
            finally:
                stop.set()
                server.close()
    finally:
        await source.stop()
        await runner.cleanup()
        await athome.close()
        await producer.stop()


async def _read_log(settings: Settings, hub: Hub, source: Source, pool: asyncpg.Pool | None,
                    stop: asyncio.Event) -> None:
    while True:
        try:
            await source.run(stop)
            return
        except LogReplaced as e:
            # The broker lost the log we were reading (and was perhaps rehydrated):
            # every position we handed out is void. Start over and let the clients
            # reconnect; they will get fresh snapshots (their epoch no longer matches).
            log.warning("log replaced (%s): rebuilding the picture", e)
            await source.stop()
            await asyncio.gather(*(close_connection(c.ws, SERVICE_RESTART, "log replaced")
                                   for c in list(hub.clients)))
            hub.reset()
            await source.start()


async def serve_gateway(settings: Settings, stop: asyncio.Event) -> None:
    """Run the gateway until ``stop`` is set."""
    try:
        region = load_region(settings.region)
    except RegionPackError as e:
        raise GatewayStartupError(f"cannot load region pack {settings.region!r} "
                                  f"(SONAE_REGION): {e}") from None
    pool = await _store_pool(settings)
    reports = IntakeReports(settings.intake_base_url)
    try:
        async with running(settings, region=region, pool=pool, reports=reports, intake=reports,
                           revocation=lambda: asyncpg.connect(settings.database_url)) as gw:
            # Never a token here: logs are read by more people than tokens are for
            # (`sonae token issue` mints them; the demo prints its own to the console).
            log.info("gateway: websocket %s, dashboard %s (namespace %r)",
                     gw.websocket_url, gw.dashboard_url, settings.namespace)
            await stop.wait()
    finally:
        await reports.close()
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 5.0)


def main(settings: Settings) -> None:
    """Blocking entry point: serve until SIGTERM; exit 2 with a one-line reason if unable."""
    configure_logging(settings)
    try:
        run_service(serve_gateway, settings)
    except GatewayStartupError as e:
        log.error("gateway cannot start: %s", e)
        raise SystemExit(2) from None
