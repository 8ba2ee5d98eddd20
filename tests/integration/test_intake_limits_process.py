"""Intake as a real process: its SONAE_* limit settings reach the server it runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from infra.embedded.processes import free_port
from services.common.auth import Role
from tests.support import SECRET, prepare_schema, seconds_until_cut_off, token, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ("from infra.settings import load_settings; from services.intake.main import main; "
         "main(load_settings())")
CAP_FIXTURE = ROOT / "tests" / "fixtures" / "cap" / "sonae_chiyoda_heavy_rain.xml"


async def test_the_limit_settings_reach_the_process(
        kafka_bootstrap: str, database_url: str, namespace: str, db_schema: str,
        db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    """Started with small limits, the process refuses by them: the circle limit (413), the
    address's bucket for invalid tokens (429), the connection cap (503) and the header
    timeout (closed)."""
    await prepare_schema(db_pool)
    port = free_port()
    separator = "&" if "?" in database_url else "?"
    env = {
        "SONAE_DATABASE_URL": f"{database_url}{separator}search_path={db_schema}",
        "SONAE_KAFKA_BOOTSTRAP": kafka_bootstrap, "SONAE_NAMESPACE": namespace,
        "SONAE_TOKEN_SECRET": SECRET, "SONAE_HOST": "127.0.0.1",
        "SONAE_INTAKE_PORT": str(port),
        "SONAE_INTAKE_CAP_MAX_GEOCODES": "1", "SONAE_INTAKE_CAP_MAX_INFOS": "2",
        "SONAE_INTAKE_UNAUTHENTICATED_RATE_BURST": "3",
        "SONAE_INTAKE_UNAUTHENTICATED_RATE_PER_SECOND": "0.01",
        "SONAE_INTAKE_MAX_CONNECTIONS": "4",
        "SONAE_INTAKE_HEADER_TIMEOUT_SECONDS": "2",
    }
    log = tmp_path / "intake.log"
    process = _start(env, log)
    url = f"http://127.0.0.1:{port}"
    hq = {"Authorization": "Bearer " + token(Role.HQ, "hq-duty")}
    try:
        async with aiohttp.ClientSession() as session:
            async def up() -> bool:
                # A valid token's request: readiness polls never spend the address's bucket.
                assert process.poll() is None, log.read_text()
                try:
                    async with session.get(url + "/v1/reports/none", headers=hq) as response:
                        return response.status == 404
                except aiohttp.ClientError:
                    return False

            await wait_for(up, timeout=30, what="intake to answer")

            async with session.post(url + "/v1/cap", data=CAP_FIXTURE.read_bytes(), headers={
                    **hq, "Content-Type": "application/cap+xml"}) as response:
                body = await response.json()
            assert response.status == 413, body
            assert "SONAE_INTAKE_CAP_MAX_INFOS" in body["message"]

            bad = {"Authorization": "Bearer nonsense"}
            statuses = []
            for _ in range(4):
                async with session.get(url + "/v1/reports/none", headers=bad) as response:
                    statuses.append(response.status)
            assert statuses == [401, 401, 401, 429]

        # The session above is closed: open four connections, the fifth is over the cap.
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        for _, w in held:
            w.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]

        async with aiohttp.ClientSession() as session:
            async def served() -> bool:
                try:
                    async with session.get(url + "/v1/reports/none", headers=hq) as response:
                        return response.status == 404
                except aiohttp.ClientError:
                    return False  # the held connections are not all closed yet

            await wait_for(served, timeout=20, what="served again under the cap")
        elapsed = await seconds_until_cut_off("127.0.0.1", port)
        assert 1.5 <= elapsed < 8, elapsed
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 15)


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-c", ENTRY], cwd=ROOT, stdout=out,
                                stderr=out, env={**os.environ, **env})
