"""End to end through `sonae up`: HTTP input reaches every service and the event store."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg

from infra.settings import load_settings
from schemas.region import load_region
from services.common.auth import Role, issue_token
from tests.support import wait_for
from tests.support.stack import UpProcess


async def test_inputs_flow_through_every_service_to_the_store(tmp_path: Path) -> None:
    """A shelter count and a report posted to intake become state, alerts and stored events."""
    secret = load_settings().token_secret.get_secret_value()
    staff = issue_token(secret, Role.SHELTER_STAFF, "fujimi-shelter-desk", timedelta(hours=1),
                        areas=["fujimi"])
    field = issue_token(secret, Role.FIELD, "kanda-team-1", timedelta(hours=1),
                        areas=["kanda-koen"])
    shelter = next(s for s in load_region().sites
                   if "shelter" in {str(k) for k in s.kinds} and s.capacity)
    up = UpProcess(tmp_path / "stack")
    try:
        state = up.wait_ready()
        intake = f"http://127.0.0.1:{up.env['SONAE_INTAKE_PORT']}"
        async with aiohttp.ClientSession() as http:
            async def healthy() -> bool:
                try:
                    async with http.get(f"{intake}/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            # "up" means the processes started; intake answers once it has bound its port.
            await wait_for(healthy, timeout=60, what="intake to answer /healthz")

            async def post(path: str, token: str, body: dict[str, object]) -> dict[str, object]:
                async with http.post(f"{intake}{path}", json=body,
                                     headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status == 202, await r.text()
                    answer: dict[str, object] = await r.json()
                    return answer

            await post(f"/v1/shelters/{shelter.id}/status", staff, {"action": "open"})
            crowded = int(shelter.capacity * 0.85)
            await post(f"/v1/shelters/{shelter.id}/status", staff,
                       {"action": "occupancy", "occupancy": crowded})
            accepted = await post("/v1/reports", field, {
                "client_report_id": str(uuid.uuid4()), "category": "flooding", "severity": 4,
                "location": {"lat": 35.6975, "lon": 139.7705},
                "description": "神田川沿いの道路が冠水", "reporter": {"team": "kanda-team-1"}})
            async with http.get(f"{intake}/v1/reports/{accepted['report_id']}",
                                headers={"Authorization": f"Bearer {field}"}) as r:
                assert r.status == 200
                assert (await r.json())["status"] == "accepted"

        conn = await asyncpg.connect(str(state["database_url"]))
        try:
            # intake → outbox → relay → shelter tracker → shelters.state → recorder → PostgreSQL
            await wait_for(lambda: conn.fetchval(
                "select status from shelters_current where shelter_id = $1", shelter.id),
                timeout=60, what="the shelter's derived state in the store")
            status = await wait_for(lambda: conn.fetchval(
                "select status from shelters_current where shelter_id = $1 "
                "and status = 'crowded'", shelter.id), timeout=60, what="crowded")
            assert status == "crowded"
            alerts = await wait_for(lambda: conn.fetchval(
                "select count(*) from events where type = 'shelter.capacity_alert' "
                "and envelope->'payload'->>'shelter_id' = $1", shelter.id),
                timeout=60, what="the crowding alert")
            assert alerts == 1
            stored = await wait_for(lambda: conn.fetchval(
                "select count(*) from events where type = 'report.accepted' "
                "and envelope->'payload'->>'report_id' = $1", str(accepted["report_id"])),
                timeout=60, what="the accepted report in the event store")
            assert stored == 1
        finally:
            await conn.close()
    finally:
        up.stop()
