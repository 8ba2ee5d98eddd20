"""The broadcaster's feed server cuts off slow clients (real broker and PostgreSQL)."""

from __future__ import annotations

import aiohttp
import asyncpg
import pytest

from services.broadcaster.main import Options
from services.broadcaster.webhooks import WebhookConfig
from services.common import httpguard
from tests.support import seconds_until_cut_off, wait_for
from tests.support.broadcaster import fast_retry, migrated, running, settings_for

pytestmark = pytest.mark.integration


async def test_the_feed_cuts_off_a_client_trickling_its_headers(
        kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
        namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CAP/Atom feed's server closes a connection whose headers are not all there by
    the header timeout (aiohttp's own default is an hour)."""
    monkeypatch.setattr(httpguard, "HEADER_TIMEOUT", 1.0)
    await migrated(db_pool)
    settings = settings_for(kafka_bootstrap, database_url, db_schema, namespace)
    options = Options(webhooks=WebhookConfig(subscribers=()), dispatch=fast_retry())
    async with running(settings, options), aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{settings.broadcaster_port}/cap/alerts.atom"

        async def serving() -> bool:
            try:
                async with http.get(url) as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_for(serving, timeout=30, what="the feed is served")
        elapsed = await seconds_until_cut_off("127.0.0.1", settings.broadcaster_port)
        assert 0.8 <= elapsed < 6, elapsed
