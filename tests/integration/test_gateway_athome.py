"""The gateway's POST /v1/public/at-home: forwarded to a real intake without a token, with
the gateway's own per-address limit and body bound, and 503 when intake is away."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from infra.embedded.processes import free_port
from tests.support import Running, make_settings, start_intake
from tests.support.gateway import gateway, gateway_settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def intake(kafka_bootstrap: str, database_url: str, namespace: str,
                 db_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    """Intake for one test."""
    async for running in start_intake(make_settings(kafka_bootstrap, database_url, namespace),
                                      db_pool):
        yield running


def household(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"client_id": str(uuid.uuid4()), "area_id": "jimbocho", "size": 1,
                            "needs": ["medical_power"]}
    body.update(overrides)
    return body


async def post(url: str, body: bytes, content_type: str = "application/json"
               ) -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.post(
            url, data=body, headers={"Content-Type": content_type}) as response:
        return response.status, json.loads(await response.text()), dict(response.headers)


async def test_the_form_is_forwarded_and_answered_as_intake_answers(
        kafka_bootstrap: str, namespace: str, intake: Running) -> None:
    """202 then 200 for a resend; intake's 422 naming /area_id comes back as it is."""
    settings = gateway_settings(kafka_bootstrap, namespace, intake_url=intake.url,
                                athome_form_rate_burst=100)
    async with gateway(settings) as gw:
        url = gw.dashboard_url.rstrip("/") + "/v1/public/at-home"
        body = json.dumps(household()).encode()
        status, ack, _ = await post(url, body)
        assert status == 202, ack
        assert (await post(url, body))[:2] == (200, ack)
        status, error, _ = await post(url, json.dumps(household(area_id="atlantis")).encode())
        assert status == 422 and [e["pointer"] for e in error["errors"]] == ["/area_id"]
        # The public form's rules hold behind the gateway: no exercise flag.
        status, _, _ = await post(url, json.dumps(household(exercise=True)).encode())
        assert status == 403
    async with intake.pool.acquire() as conn:
        rows = await conn.fetch("select via, area_id from athome_households")
    assert [dict(r) for r in rows] == [{"via": "public", "area_id": "jimbocho"}]


async def test_the_gateway_limits_each_address_and_bounds_the_body(
        kafka_bootstrap: str, namespace: str, intake: Running) -> None:
    """Over the address's burst: 429 with Retry-After; too big: 413; not JSON: 415."""
    settings = gateway_settings(kafka_bootstrap, namespace, intake_url=intake.url,
                                athome_form_rate_burst=4, athome_form_rate_per_second=0.01)
    async with gateway(settings) as gw:
        url = gw.dashboard_url.rstrip("/") + "/v1/public/at-home"
        status, error, _ = await post(url, json.dumps(household(note="x" * 20_000)).encode())
        assert status == 413, error
        status, _, _ = await post(url, b"size=1", "application/x-www-form-urlencoded")
        assert status == 415
        assert (await post(url, json.dumps(household()).encode()))[0] == 202
        assert (await post(url, json.dumps(household()).encode()))[0] == 202
        status, error, headers = await post(url, json.dumps(household()).encode())
        assert status == 429 and error["error"] == "rate_limited"
        assert int(headers["Retry-After"]) >= 1


async def test_intake_away_is_503_to_retry(kafka_bootstrap: str, namespace: str,
                                           intake: Running) -> None:
    """With intake unreachable the form is answered 503 with Retry-After (the page keeps it)."""
    settings = gateway_settings(kafka_bootstrap, namespace,
                                intake_url=f"http://127.0.0.1:{free_port()}")
    async with gateway(settings) as gw:
        url = gw.dashboard_url.rstrip("/") + "/v1/public/at-home"
        status, error, headers = await post(url, json.dumps(household()).encode())
        assert status == 503 and error["error"] == "unavailable", error
        assert headers["Retry-After"] == "5"
