"""Tokens against the real services: revocation through PostgreSQL, expiry and area limits.

`sonae token revoke` writes the deny list in the test's own schema; intake and the
gateway hear of it through LISTEN/NOTIFY (their poll is set far longer than the test
waits, so the wake-up is what is tested); websockets are real connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import jwt
import pytest
from click.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from infra.embedded.processes import free_port
from infra.settings import DEVELOPMENT_SECRET, load_settings
from services.common.auth import Role, issue_token
from services.common.revocation import Connect, DenyList
from services.common.token_cli import token as token_group
from services.gateway.main import serve_gateway
from tests.support import (
    SECRET,
    Running,
    auth,
    make_settings,
    prepare_schema,
    report_body,
    start_intake,
    token,
    wait_for,
)
from tests.support.gateway import SECRET as GATEWAY_SECRET
from tests.support.gateway import gateway, gateway_settings, peer
from tests.support.gateway import token as gateway_token

pytestmark = pytest.mark.integration

LONG_POLL = 60.0
"""The deny list's poll in these tests: longer than any wait, so NOTIFY must do it."""


def _connect(database_url: str, schema: str) -> Connect:
    return lambda: asyncpg.connect(database_url, server_settings={"search_path": schema})


async def _revoke(database_url: str, schema: str, secret: str, text: str) -> str:
    """Run `sonae token revoke` against the test's schema; return its output."""
    # The command runs its own event loop, so it gets a thread of its own.
    result = await asyncio.to_thread(
        CliRunner().invoke, token_group, ["revoke", text, "--reason", "test"], env={
            "SONAE_DATABASE_URL": f"{database_url}?search_path={schema}",
            "SONAE_TOKEN_SECRET": secret})
    assert result.exit_code == 0, result.output
    return result.output


@contextlib.asynccontextmanager
async def _running(denylist: DenyList) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(denylist.run(stop))
    try:
        await asyncio.wait_for(denylist.loaded.wait(), 10)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_revoked_token_is_refused_by_intake_within_seconds(
        kafka_bootstrap: str, database_url: str, namespace: str, db_pool: asyncpg.Pool,
        db_schema: str) -> None:
    """`sonae token revoke TOKEN` puts its jti on the deny list; intake answers 401 revoked."""
    await prepare_schema(db_pool)
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    denylist = DenyList(_connect(database_url, db_schema), poll_seconds=LONG_POLL)
    headers = auth(Role.FIELD, "kanda-team-1")
    other = auth(Role.FIELD, "jimbocho-team")
    async with _running(denylist):
        async for running in start_intake(settings, db_pool, denylist=denylist):
            status, body, _ = await running.post("/v1/reports", report_body("r-1"),
                                                 headers=headers)
            assert status == 202, body
            output = await _revoke(database_url, db_schema, SECRET,
                             headers["Authorization"].removeprefix("Bearer "))
            assert output.startswith("revoked ")

            async def refused(running: Running = running) -> bool:
                status, body, _ = await running.post("/v1/reports", report_body("r-2"),
                                                     headers=headers)
                return status == 401 and "revoked" in body["message"]

            await wait_for(refused, timeout=5, what="intake refuses the revoked token")
            status, _, _ = await running.post("/v1/reports", report_body("r-3"), headers=other)
            assert status == 202  # another token of the same role is untouched
    async with db_pool.acquire() as conn:
        row = await conn.fetchrow("select revoked_by, reason, expires_at from revoked_tokens")
    assert row["reason"] == "test" and row["expires_at"] > datetime.now(UTC)


async def test_an_open_websocket_of_a_revoked_token_is_closed_4401(
        kafka_bootstrap: str, database_url: str, namespace: str, db_pool: asyncpg.Pool,
        db_schema: str) -> None:
    """Revoking an HQ token closes its open session (4401 "token revoked"); a new hello fails."""
    await prepare_schema(db_pool)
    settings = gateway_settings(kafka_bootstrap, namespace,
                                token_denylist_poll_seconds=LONG_POLL)
    hq = gateway_token(Role.HQ, "hq-duty-officer")
    jti = jwt.decode(hq, options={"verify_signature": False})["jti"]
    async with gateway(settings, revocation=_connect(database_url, db_schema)) as gw, \
            peer(gw, token=hq) as session, peer(gw, token=gateway_token(Role.HQ)) as other:
        await session.until(lambda m: m["type"] == "snapshot")
        await other.until(lambda m: m["type"] == "snapshot")
        # A bare jti is enough to revoke.
        assert await _revoke(database_url, db_schema, GATEWAY_SECRET, jti) == f"revoked {jti}\n"
        with pytest.raises(ConnectionClosed):
            await session.until(lambda m: False, timeout=5)
        assert session.ws.close_code == 4401 and session.ws.close_reason == "token revoked"
        await other.send({"type": "ping", "id": "p1"})
        assert (await other.until(lambda m: m["type"] == "pong"))["id"] == "p1"
        async with peer(gw, token=hq) as again:
            refused = await again.until(lambda m: m["type"] == "error")
            assert refused["code"] == "unauthorized" and "revoked" in refused["message"]


async def test_a_session_closes_4401_when_its_token_expires(
        kafka_bootstrap: str, namespace: str) -> None:
    """A websocket outlives no token: at exp it is closed with 4401 "token expired"."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    short = issue_token(GATEWAY_SECRET, Role.HQ, "hq-duty-officer", timedelta(seconds=3))
    async with gateway(settings) as gw, peer(gw, token=short) as session:
        await session.until(lambda m: m["type"] == "snapshot")
        with pytest.raises(ConnectionClosed):
            await session.until(lambda m: False, timeout=10)
        assert session.ws.close_code == 4401 and session.ws.close_reason == "token expired"
        assert any(m["type"] == "error" and m["code"] == "unauthorized"
                   for m in session.messages)


async def test_a_hello_can_only_narrow_a_team_tokens_areas(
        kafka_bootstrap: str, namespace: str) -> None:
    """A field token's areas bound its view: a hello naming another area closes with 4403."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    team = gateway_token(Role.FIELD, "jimbo-team", areas=("jimbocho", "fujimi"))
    async with gateway(settings) as gw:
        async with peer(gw, token=team, areas=["jimbocho"]) as narrowed:
            welcome = await narrowed.until(lambda m: m["type"] == "welcome")
            assert welcome["areas"] == ["jimbocho"]
            assert welcome["own_areas"] == ["fujimi", "jimbocho"]
        async with connect(gw.websocket_url) as ws:
            await ws.send(json.dumps({"type": "hello", "token": team, "areas": ["kanda-koen"]}))
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4403 and ws.close_reason is not None
            assert "kanda-koen" in ws.close_reason


async def test_a_token_longer_lived_than_the_maximum_is_refused(
        kafka_bootstrap: str, database_url: str, namespace: str, db_pool: asyncpg.Pool) -> None:
    """SONAE_TOKEN_MAX_TTL_HOURS bounds exp - iat: intake answers 401 for a longer token."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    long_lived = token(Role.HQ, "hq-duty", ttl=2 * 3600)
    async for running in start_intake(settings, db_pool, max_token_lifetime=timedelta(hours=1)):
        status, body, _ = await running.post("/v1/reports", report_body(),
                                             headers={"Authorization": f"Bearer {long_lived}"})
        assert status == 401 and "longest lifetime" in body["message"]
        status, _, _ = await running.post("/v1/reports", report_body(), headers=auth(Role.HQ))
        assert status == 202


async def test_the_gateway_logs_no_token_even_with_the_development_secret(
        kafka_bootstrap: str, database_url: str, namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Serving with the development secret, the gateway's INFO lines carry no token."""
    settings = load_settings(kafka_bootstrap=kafka_bootstrap, database_url=database_url,
                             namespace=namespace, development=True, gateway_port=free_port(),
                             dashboard_port=free_port())
    assert settings.token_secret.get_secret_value() == DEVELOPMENT_SECRET
    stop = asyncio.Event()
    caplog.set_level(logging.INFO)
    task = asyncio.create_task(serve_gateway(settings, stop))
    try:
        await wait_for(lambda: "gateway: websocket" in caplog.text, timeout=30,
                       what="the gateway's start-up line")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert "token=" not in caplog.text and "eyJ" not in caplog.text  # no JWT, no link
