"""The recorder as a real process under faults: SIGKILL mid-stream, a PostgreSQL
restart mid-stream. Either way every event ends up stored exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from infra.db.migrate import migrate_database
from infra.embedded.postgres import EmbeddedPostgres
from infra.embedded.processes import free_port, spawn, stop_group
from infra.settings import Settings
from infra.topics import ensure_topics
from schemas.events import Event
from tests.support import produce_events, schema_dsn, wait_for
from tests.support.recorder import (
    migrate_pool,
    mixed_events,
    recorder_settings,
)

pytestmark = pytest.mark.integration

_RECORDER = ("from services.recorder.main import main; "
             "from infra.settings import load_settings; main(load_settings())")
_CHUNK = 250


def start_recorder(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """The recorder in its own process group, configured through SONAE_* only."""
    env = {**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        return spawn([sys.executable, "-c", _RECORDER], log=out, env=env,
                     cwd=Path(__file__).resolve().parents[2])


@asynccontextmanager
async def recorder_process(
    settings: Settings, log: Path
) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """Recorder processes started by the test (the list grows on restart); all stopped."""
    procs = [start_recorder(settings, log)]
    try:
        yield procs
    finally:
        for proc in procs:
            await asyncio.to_thread(stop_group, proc, timeout=15)


async def produce_stream(bootstrap: str, namespace: str, events: Sequence[Event]) -> None:
    """Produce in acknowledged chunks, so events keep flowing while the test acts."""
    for start in range(0, len(events), _CHUNK):
        await produce_events(bootstrap, namespace, events[start:start + _CHUNK])


async def count_in(dsn: str) -> int:
    """Stored events, over a fresh connection (the server may have restarted); -1 if down."""
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError):
        return -1
    try:
        count: int = await conn.fetchval("select count(*) from events")
        return count
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return -1
    finally:
        await conn.close()


async def assert_exactly_once(dsn: str, events: Sequence[Event]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("select event_id from events")
        accepted = await conn.fetchval("select count(*) from reports_current "
                                       "where status = 'accepted'")
    finally:
        await conn.close()
    stored = [r["event_id"] for r in rows]
    assert len(stored) == len(set(stored))
    assert set(stored) == {e.event_id for e in events}
    assert accepted == sum(1 for e in events if e.type == "report.accepted")


async def test_sigkill_mid_stream_stores_every_event_exactly_once(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str, tmp_path: Path,
) -> None:
    """A recorder SIGKILLed while thousands of events flow loses and duplicates none."""
    await migrate_pool(db_pool)
    dsn = schema_dsn(database_url, db_schema)
    settings = recorder_settings(kafka_bootstrap, dsn, namespace)
    await ensure_topics(settings)
    warmup, stream = mixed_events(100, "warm"), mixed_events(8000, "kill")
    log = tmp_path / "recorder.log"
    async with recorder_process(settings, log) as procs:
        await produce_events(kafka_bootstrap, namespace, warmup)
        await wait_for(lambda: _at_least(count_in(dsn), len(warmup)), timeout=30,
                       what="the recorder process running")
        producing = asyncio.create_task(produce_stream(kafka_bootstrap, namespace, stream))
        await wait_for(lambda: _at_least(count_in(dsn), len(warmup) + 1000), timeout=30,
                       what="the stream being recorded")
        os.killpg(procs[0].pid, signal.SIGKILL)
        procs[0].wait(5)
        at_kill = await count_in(dsn)
        assert at_kill < len(warmup) + len(stream), "the kill came after the stream ended"
        procs.append(start_recorder(settings, log))
        await producing
        total = len(warmup) + len(stream)
        await wait_for(lambda: _at_least(count_in(dsn), total), timeout=60,
                       what=f"all {total} events after the restart")
        assert procs[1].poll() is None, log.read_text()
    await assert_exactly_once(dsn, [*warmup, *stream])


async def test_postgres_restart_mid_stream_loses_and_duplicates_nothing(
    kafka_bootstrap: str, namespace: str, tmp_path: Path,
) -> None:
    """PostgreSQL stopped and started under a running recorder: it waits, retries the
    same batch, and every event is stored exactly once."""
    postgres = EmbeddedPostgres(data_dir=tmp_path / "pg", port=free_port(), durable=False)
    await asyncio.to_thread(postgres.start)
    try:
        await migrate_database(postgres.url)
        settings = recorder_settings(kafka_bootstrap, postgres.url, namespace)
        await ensure_topics(settings)
        warmup, stream = mixed_events(100, "warm"), mixed_events(6000, "pg")
        log = tmp_path / "recorder.log"
        async with recorder_process(settings, log) as procs:
            await produce_events(kafka_bootstrap, namespace, warmup)
            await wait_for(lambda: _at_least(count_in(postgres.url), len(warmup)), timeout=30,
                           what="the recorder process running")
            producing = asyncio.create_task(
                produce_stream(kafka_bootstrap, namespace, stream))
            await wait_for(lambda: _at_least(count_in(postgres.url), len(warmup) + 500),
                           timeout=30, what="the stream being recorded")
            await asyncio.to_thread(postgres.stop)  # fast shutdown, under load
            await asyncio.to_thread(postgres.start)
            await producing
            total = len(warmup) + len(stream)
            try:
                await wait_for(lambda: _at_least(count_in(postgres.url), total), timeout=60,
                               what=f"all {total} events after the restart")
            except AssertionError as e:
                raise AssertionError(f"{e}; recorder exit={procs[0].poll()}; stored="
                                     f"{await count_in(postgres.url)}; log:\n"
                                     + log.read_text()[-3000:]) from None
            assert procs[0].poll() is None, log.read_text()
        assert "event store unavailable" in log.read_text()
        await assert_exactly_once(postgres.url, [*warmup, *stream])
    finally:
        await asyncio.to_thread(postgres.stop)


async def _at_least(count: object, n: int) -> bool:
    assert asyncio.iscoroutine(count)
    value: int = await count
    return value >= n
