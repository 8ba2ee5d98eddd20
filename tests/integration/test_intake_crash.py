"""Intake as a real process: acknowledged reports survive SIGKILL and a broker outage."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from infra.embedded.processes import free_port
from infra.topics import describe_topics, ensure_topics
from schemas.topics import CATALOGUE, qualified
from services.common.auth import Role
from tests.support import (
    SECRET,
    auth,
    make_settings,
    prepare_schema,
    read_topic,
    report_body,
    wait_for,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ("from infra.settings import load_settings; from services.intake.main import main; "
         "main(load_settings())")


class IntakeProcess:
    """One intake process (started and killed by the test)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.port = int(env["SONAE_INTAKE_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, kafka_bootstrap: str) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", ENTRY], cwd=ROOT, stdout=log, stderr=log,
                env={**os.environ, **self.env, "SONAE_KAFKA_BOOTSTRAP": kafka_bootstrap})

    async def ready(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async def healthy() -> dict[str, Any] | None:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            try:
                async with session.get(self.url + "/healthz") as response:
                    return dict(await response.json()) if response.status == 200 else None
            except aiohttp.ClientError:
                return None

        return await wait_for(healthy, timeout=30, what="intake to answer /healthz")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(15)


@pytest.fixture
def intake_env(kafka_bootstrap: str, database_url: str, namespace: str, db_schema: str,
               tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """SONAE_* for an intake process in the test's namespace and schema."""
    separator = "&" if "?" in database_url else "?"
    env = {
        "SONAE_DATABASE_URL": f"{database_url}{separator}search_path={db_schema}",
        "SONAE_NAMESPACE": namespace,
        "SONAE_TOKEN_SECRET": SECRET,
        "SONAE_HOST": "127.0.0.1",
        "SONAE_INTAKE_PORT": str(free_port()),
        "SONAE_LOG_LEVEL": "INFO",
    }
    yield env, tmp_path / "intake.log"


async def _post_reports(session: aiohttp.ClientSession, url: str, prefix: str, n: int
                        ) -> list[dict[str, Any]]:
    # Ten reports per team keep every token inside its rate limit.
    headers = [{"Content-Type": "application/json", **auth(Role.FIELD, f"team-{t}")}
               for t in range((n + 9) // 10)]

    async def one(i: int) -> dict[str, Any]:
        async with session.post(url + "/v1/reports", headers=headers[i // 10],
                                data=json.dumps(report_body(f"{prefix}-{i}"))) as response:
            assert response.status == 202, await response.text()
            return dict(await response.json())

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _unsent(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval("select count(*) from outbox where sent_at is null")
        return count


async def _drained(pool: asyncpg.Pool) -> bool:
    return await _unsent(pool) == 0


async def test_broker_down_accepts_and_sigkill_loses_nothing(
        kafka_bootstrap: str, database_url: str, namespace: str, db_pool: asyncpg.Pool,
        intake_env: tuple[dict[str, str], Path]) -> None:
    """With the broker down intake still answers 202; killed with SIGKILL before publishing
    and restarted against a broker without its topics (as after a restart of the
    memory-only broker), it creates them and publishes every acknowledged event once."""
    env, log = intake_env
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    await prepare_schema(db_pool)  # no topics: the namespace is empty on the broker
    intake = IntakeProcess(env, log)
    async with aiohttp.ClientSession() as session:
        try:
            intake.start(f"127.0.0.1:{free_port()}")  # nothing listens there: broker "down"
            health = await intake.ready(session)
            assert health == {"status": "healthy"}
            acks = await _post_reports(session, intake.url, "down", 20)
            assert await _unsent(db_pool) == 40  # durable, not yet published
            intake.kill()

            intake.start(kafka_bootstrap)
            await intake.ready(session)
            await wait_for(lambda: _drained(db_pool), timeout=30, what="outbox drained")
            assert intake.terminate() == 0  # SIGTERM: a clean, bounded stop
        finally:
            intake.kill()
    records = await read_topic(settings, qualified("reports", namespace))
    published = [json.loads(r.value)["event_id"] for r in records if r.value]
    acknowledged = [event_id for ack in acks for event_id in ack["event_ids"]]
    assert sorted(published) == sorted(acknowledged)  # every one, each exactly once
    described = {t.name: t for t in await describe_topics(settings, namespace)}
    assert described[qualified("reports", namespace)].partitions == CATALOGUE["reports"].partitions


async def test_sigkill_while_publishing_loses_and_doubles_nothing(
        kafka_bootstrap: str, database_url: str, namespace: str, db_pool: asyncpg.Pool,
        intake_env: tuple[dict[str, str], Path]) -> None:
    """SIGKILL right after the last 202, while the relay publishes: after a restart every
    acknowledged event is on the topic and the outbox holds each event once."""
    env, log = intake_env
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    await prepare_schema(db_pool)
    await ensure_topics(settings, namespace)
    intake = IntakeProcess(env, log)
    async with aiohttp.ClientSession() as session:
        try:
            intake.start(kafka_bootstrap)
            await intake.ready(session)
            acks = await _post_reports(session, intake.url, "busy", 150)
            intake.kill()
            intake.start(kafka_bootstrap)
            await intake.ready(session)
            await wait_for(lambda: _drained(db_pool), timeout=30, what="outbox drained")
        finally:
            intake.kill()
    acknowledged = {event_id for ack in acks for event_id in ack["event_ids"]}
    async with db_pool.acquire() as conn:
        rows = await conn.fetch("select event_id::text from outbox")
    assert len(rows) == len({r[0] for r in rows}) == len(acknowledged) == 300
    records = await read_topic(settings, qualified("reports", namespace))
    published = [json.loads(r.value)["event_id"] for r in records if r.value]
    assert set(published) == acknowledged  # nothing lost; duplicates only from re-publishing
    assert len(published) >= len(acknowledged)


async def test_the_process_takes_its_limits_from_settings(
        db_pool: asyncpg.Pool, kafka_bootstrap: str,
        intake_env: tuple[dict[str, str], Path]) -> None:
    """SONAE_INTAKE_RATE_BURST / _RATE_PER_SECOND / _MAX_JSON_BYTES reach the running API."""
    env, log = intake_env
    await prepare_schema(db_pool)
    env = {**env, "SONAE_INTAKE_RATE_BURST": "2", "SONAE_INTAKE_RATE_PER_SECOND": "0.01",
           "SONAE_INTAKE_MAX_JSON_BYTES": "1024"}
    intake = IntakeProcess(env, log)
    headers = {"Content-Type": "application/json", **auth(Role.FIELD, "limited-team")}
    async with aiohttp.ClientSession() as session:
        try:
            intake.start(kafka_bootstrap)
            await intake.ready(session)
            big = {**report_body("limits-big"), "description": "x" * 1500}
            async with session.post(intake.url + "/v1/reports", headers=headers,
                                    data=json.dumps(big)) as response:
                assert response.status == 413, await response.text()
            async with session.post(intake.url + "/v1/reports", headers=headers,
                                    data=json.dumps(report_body("limits-1"))) as response:
                assert response.status == 202, await response.text()
            async with session.post(intake.url + "/v1/reports", headers=headers,
                                    data=json.dumps(report_body("limits-2"))) as response:
                assert response.status == 429, await response.text()
                assert int(response.headers["Retry-After"]) > 1
        finally:
            intake.kill()
