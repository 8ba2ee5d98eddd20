"""Every `/healthz` says healthy (200) or unhealthy (503) and nothing else: no driver error
text, backlog or position for whoever asks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from infra.embedded.processes import free_port
from services.broadcaster.feed import CapFeedStore
from services.broadcaster.http import FeedInfo, make_app
from services.gateway.cop import COP, RegionIndex
from services.gateway.http import build_app as dashboard_app
from services.gateway.hub import Hub
from services.intake.http import build_app as intake_app
from services.intake.metrics import IntakeMetrics
from services.intake.service import Intake
from services.intake.store import Store
from tests.support import REGION, SECRET, prepare_schema

pytestmark = pytest.mark.integration

HEALTHY = {"status": "healthy"}
UNHEALTHY = {"status": "unhealthy"}


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def get(url: str) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json(), await response.text()


@asynccontextmanager
async def unreachable_pool() -> AsyncIterator[asyncpg.Pool]:
    """A pool whose server is gone: every acquire fails as when PostgreSQL is down."""
    pool = await asyncpg.create_pool(f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/x",
                                     min_size=0, max_size=1)
    try:
        yield pool
    finally:
        await pool.close()


def intake_for(pool: asyncpg.Pool) -> web.Application:
    return intake_app(Intake(Store(pool, ""), REGION, metrics=IntakeMetrics()), secret=SECRET)


async def test_intake_healthz_is_healthy_or_unhealthy_only(
        db_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    """Intake: healthy with the database, unhealthy without it; the reason only in the log."""
    await prepare_schema(db_pool)
    async with serving(intake_for(db_pool)) as url:
        assert (await get(url + "/healthz"))[:2] == (200, HEALTHY)
    async with unreachable_pool() as pool, serving(intake_for(pool)) as url:
        with caplog.at_level(logging.WARNING, logger="services.intake.http"):
            status, body, text = await get(url + "/healthz")
            await get(url + "/healthz")
        assert (status, body) == (503, UNHEALTHY)
        assert "refused" not in text.lower() and "127.0.0.1" not in text
        unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(unreachable) == 1  # once per outage, not once per probe


async def test_broadcaster_healthz_is_healthy_or_unhealthy_only(db_pool: asyncpg.Pool) -> None:
    """Broadcaster: healthy with the database, unhealthy without it, no error text."""
    info = FeedInfo(feed_id=uuid4(), title="t", author="a")
    async with serving(make_app(CapFeedStore(db_pool), db_pool, "", info)) as url:
        assert (await get(url + "/healthz"))[:2] == (200, HEALTHY)
    async with unreachable_pool() as pool, \
            serving(make_app(CapFeedStore(pool), pool, "", info)) as url:
        status, body, text = await get(url + "/healthz")
        assert (status, body) == (503, UNHEALTHY)
        assert "refused" not in text.lower() and "127.0.0.1" not in text


async def test_gateway_healthz_says_healthy_once_caught_up_and_nothing_else() -> None:
    """Gateway: unhealthy until the picture caught up, then healthy; no clients or position."""
    hub = Hub(COP.empty(RegionIndex.from_region(REGION)), "ns", [("cop", 0)])
    async with serving(dashboard_app(REGION, gateway_port=1, namespace="ns", hub=hub)) as url:
        assert (await get(url + "/healthz"))[:2] == (503, UNHEALTHY)
        hub.ready.set()
        assert (await get(url + "/healthz"))[:2] == (200, HEALTHY)
