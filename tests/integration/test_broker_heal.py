"""The embedded broker's death heals itself: no person restarts anything.

A real `sonae up`; its broker is SIGKILLed. A report acknowledged while the broker is
dead ends up in the picture a websocket client receives once it reconnects (a fresh
snapshot: the rehydrated log is a new epoch), and `sonae status` is healthy again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from websockets.asyncio.client import connect

from infra.embedded.processes import process_alive
from infra.settings import load_settings
from services.common.auth import Role, issue_token
from tests.support import wait_for
from tests.support.stack import UpProcess, run_sonae

pytestmark = pytest.mark.integration


def _report(text: str) -> dict[str, object]:
    return {"client_report_id": str(uuid.uuid4()), "category": "flooding", "severity": 3,
            "location": {"lat": 35.6975, "lon": 139.7705}, "description": text,
            "reporter": {"team": "kanda-team-1"}}


async def _post_until_acknowledged(http: aiohttp.ClientSession, url: str, token: str,
                                   body: dict[str, object]) -> tuple[str, float]:
    """Send ``body`` with its id again and again until intake answers 202, as a field
    client does; returns the report id and the time of the acknowledgement."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            async with http.post(url, json=body,
                                 headers={"Authorization": f"Bearer {token}"}) as r:
                if r.status == 202:
                    answer: dict[str, Any] = await r.json()
                    return str(answer["report_id"]), time.monotonic()
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.1)  # a client's resend interval, not a wait for a condition
    raise AssertionError("intake never acknowledged the report")


def _replaced(up: UpProcess, key: str, old_pid: int) -> int | None:
    """The pid ``stack.json`` names under ``key`` once it is a live process other than
    ``old_pid``."""
    pid = json.loads((up.data_dir / "stack.json").read_text()).get(key)
    return int(pid) if pid and int(pid) != old_pid and process_alive(int(pid)) else None


async def _picture_with(ws_url: str, token: str, report_ids: list[str],
                        timeout: float) -> dict[str, Any]:
    """Connect (again whenever the gateway goes away) until the report is in the picture;
    returns the welcome of the connection that showed it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with connect(ws_url, open_timeout=5) as ws:
                await ws.send(json.dumps({"type": "hello", "token": token}))
                welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
                state: dict[str, dict[str, Any]] = {}
                while time.monotonic() < deadline:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 20))
                    if message["type"] == "snapshot":
                        state = message["state"]
                    elif message["type"] == "delta":
                        for change in message["changes"]:
                            state.setdefault(change["kind"], {})[change["id"]] = change["value"]
                    if all(r in state.get("report", {}) for r in report_ids):
                        return {"welcome": welcome, "via": message["type"]}
        except (OSError, TimeoutError, Exception) as exc:  # gateway held or restarting
            if isinstance(exc, AssertionError):
                raise
        await asyncio.sleep(0.2)
    raise AssertionError(f"reports {report_ids} never reached a websocket client's picture")


async def test_broker_sigkill_heals_and_an_acknowledged_report_reaches_the_picture(
        tmp_path: Path) -> None:
    secret = load_settings(development=True).token_secret.get_secret_value()
    field = issue_token(secret, Role.FIELD, "kanda-team-1", timedelta(hours=1),
                        areas=["kanda-koen"])
    hq = issue_token(secret, Role.HQ, "hq-duty-officer", timedelta(hours=1))
    up = UpProcess(tmp_path / "stack")
    try:
        state = up.wait_ready()
        intake = f"http://127.0.0.1:{up.env['SONAE_INTAKE_PORT']}/v1/reports"
        ws_url = f"ws://127.0.0.1:{up.env['SONAE_GATEWAY_PORT']}/"
        old_broker = int(str(state["embedded_kafka_pid"]))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            before, _ = await _post_until_acknowledged(http, intake, field, _report("before"))
            await _picture_with(ws_url, hq, [before], 60)

            os.kill(old_broker, signal.SIGKILL)
            killed = time.monotonic()
            during, acked = await _post_until_acknowledged(http, intake, field,
                                                           _report("during the outage"))
            at_ack = json.loads((up.data_dir / "stack.json").read_text())
            assert at_ack["embedded_kafka_pid"] == old_broker, "acknowledged after the heal"

            await wait_for(lambda: _replaced(up, "embedded_kafka_pid", old_broker),
                           timeout=60, what="a new broker process")
            assert not process_alive(old_broker)

            # Both: the one the old log held and the one acknowledged while it was gone.
            shown = await _picture_with(ws_url, hq, [before, during], 120)
            # The log was republished: a reconnecting client is in another epoch.
            assert shown["welcome"]["resume"] == "snapshot"
            assert acked - killed < 60

        def healthy() -> bool:
            return run_sonae("status", "--data-dir", str(up.data_dir)).returncode == 0
        await wait_for(lambda: asyncio.to_thread(healthy), timeout=90,
                       what="sonae status healthy again")
        output = up.output()
        assert "exited with status -9; holding the services and restarting it" in output
        assert "healed" in output
    finally:
        up.stop()


async def test_postgres_sigkill_heals_and_reports_are_stored_again(tmp_path: Path) -> None:
    """The embedded PostgreSQL is SIGKILLed: `sonae up` starts it again on its data, a
    report stored before is still there, one sent after is acknowledged and stored."""
    secret = load_settings(development=True).token_secret.get_secret_value()
    field = issue_token(secret, Role.FIELD, "kanda-team-1", timedelta(hours=1),
                        areas=["kanda-koen"])
    up = UpProcess(tmp_path / "stack")
    try:
        state = up.wait_ready()
        intake = f"http://127.0.0.1:{up.env['SONAE_INTAKE_PORT']}/v1/reports"
        old_postgres = int(str(state["embedded_postgres_pid"]))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            before, _ = await _post_until_acknowledged(http, intake, field, _report("before"))
            os.kill(old_postgres, signal.SIGKILL)
            after, _ = await _post_until_acknowledged(http, intake, field, _report("after"))

        # The acknowledgement may come before the heal: a backend that outlives its
        # killed postmaster for a moment can still commit (to the WAL the restarted
        # server recovers), so the new server is waited for, not assumed.
        await wait_for(lambda: _replaced(up, "embedded_postgres_pid", old_postgres),
                       timeout=60, what="a new PostgreSQL process")
        assert not process_alive(old_postgres)
        conn = await asyncpg.connect(str(state["database_url"]))
        try:
            async def stored() -> bool:
                found = await conn.fetchval(
                    "select count(distinct envelope->'payload'->>'report_id') from events "
                    "where type = 'report.accepted' "
                    "and envelope->'payload'->>'report_id' = any($1::text[])", [before, after])
                return bool(found == 2)
            await wait_for(stored, timeout=90, what="both reports in the event store")
        finally:
            await conn.close()

        def healthy() -> bool:
            return run_sonae("status", "--data-dir", str(up.data_dir)).returncode == 0
        await wait_for(lambda: asyncio.to_thread(healthy), timeout=90,
                       what="sonae status healthy again")
        assert "embedded PostgreSQL" in up.output() and "healed" in up.output()
    finally:
        up.stop()
