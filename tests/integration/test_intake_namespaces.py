"""Drill isolation in the database: a drill's intake and the live one share tables, not data.

Against the real PostgreSQL and broker, in one schema (as a drill and the live
stack share one database): the same client ids submitted to a drill-namespace
intake and to the live intake are each answered as first receipts, stored under
their own namespace and published only to their own namespace's topics; a
drill's relay never publishes a live row.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from infra.settings import Settings
from infra.topics import ensure_topics
from schemas.topics import LIVE
from services.intake.domain import Decision
from services.intake.store import Store
from tests.support import (
    REGION,
    Running,
    auth,
    event_ids_on,
    gauge_write,
    make_settings,
    report_body,
    start_intake,
    wait_for,
)

pytestmark = pytest.mark.integration

intake = contextlib.asynccontextmanager(start_intake)
GAUGE = REGION.gauges[0].id


@pytest.fixture
async def pool(database_url: str, db_schema: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's schema big enough for two intakes (each relay holds two)."""
    created = await asyncpg.create_pool(database_url, min_size=1, max_size=12,
                                        server_settings={"search_path": db_schema})
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
def live(kafka_bootstrap: str, database_url: str) -> Settings:
    """Settings of the live namespace (plain topic names)."""
    return make_settings(kafka_bootstrap, database_url, LIVE)


@pytest.fixture
def drill(kafka_bootstrap: str, database_url: str, namespace: str) -> Settings:
    """Settings of a drill namespace."""
    return make_settings(kafka_bootstrap, database_url, f"drill.{namespace}")


async def submit_both(running: Running, client_id: str) -> tuple[int, int, dict[str, Any]]:
    """A report and a gauge reading under ``client_id``: both statuses, the report's answer."""
    status, body, _ = await running.post("/v1/reports", report_body(client_id),
                                         headers=auth("field"))
    gauge = {"observation": "gauge_reading", "gauge_id": GAUGE, "level_m": 1.2,
             "observed_at": "2025-08-21T05:00:00Z"}
    hazard_status, hazard, _ = await running.post(
        "/v1/hazards/observations", gauge,
        headers={**auth("sensor", "gauges"), "Idempotency-Key": client_id})
    assert hazard_status in (200, 202), hazard
    return status, hazard_status, body


@contextlib.asynccontextmanager
async def both(live: Settings, drill: Settings,
               pool: asyncpg.Pool) -> AsyncIterator[tuple[Running, Running]]:
    """A live intake and a drill intake on one pool (one schema), each with its relay."""
    async with intake(drill, pool) as d, intake(live, pool) as lv:
        yield lv, d


async def test_same_client_ids_are_answered_stored_and_published_per_namespace(
        live: Settings, drill: Settings, pool: asyncpg.Pool) -> None:
    """A drill's client ids are new to live: each intake answers, stores and publishes its own."""
    client_id = f"r-{uuid.uuid4().hex[:8]}"
    async with both(live, drill, pool) as (lv, d):
        *drill_statuses, drill_ack = await submit_both(d, client_id)
        *live_statuses, live_ack = await submit_both(lv, client_id)
        assert drill_statuses == live_statuses == [202, 202]
        assert drill_ack["report_id"] != live_ack["report_id"]
        assert not set(drill_ack["event_ids"]) & set(live_ack["event_ids"])
        # A resend is a replay in its own namespace only.
        assert (await submit_both(lv, client_id))[:2] == (200, 200)
        assert (await submit_both(d, client_id))[:2] == (200, 200)
        # Each namespace reads its own outcome of the client id.
        for running, ack in ((lv, live_ack), (d, drill_ack)):
            status, view = await running.get(f"/v1/reports/{client_id}", auth("field"))
            assert status == 200 and view["report_id"] == ack["report_id"]
        await wait_for(lambda: _all_sent(pool), timeout=30, what="both outboxes published")
        assert await lv.backlog() == 0 and await d.backlog() == 0

    rows = await pool.fetch("select namespace, kind from intake_requests where client_id = $1",
                               client_id)
    assert sorted((r["namespace"], r["kind"]) for r in rows) == sorted(
        (ns, kind) for ns in (LIVE, drill.namespace) for kind in ("report", "hazard"))
    outcomes = await pool.fetch(
        "select namespace, report_id::text from report_status where client_report_id = $1",
        client_id)
    assert {(r["namespace"], r["report_id"]) for r in outcomes} == {
        (LIVE, live_ack["report_id"]), (drill.namespace, drill_ack["report_id"])}
    published = {ns: (await event_ids_on(s, "reports")) + (await event_ids_on(
        s, "hazards.observations")) for ns, s in ((LIVE, live), (drill.namespace, drill))}
    live_ids = set(await _outbox_ids(pool, LIVE))
    drill_ids = set(await _outbox_ids(pool, drill.namespace))
    assert live_ids and drill_ids and not live_ids & drill_ids
    assert live_ids <= set(published[LIVE]) and not drill_ids & set(published[LIVE])
    assert drill_ids <= set(published[drill.namespace])
    assert not live_ids & set(published[drill.namespace])


async def test_a_drill_relay_never_publishes_live_rows(
        live: Settings, drill: Settings, pool: asyncpg.Pool) -> None:
    """With only the drill's intake (and relay) running, live rows wait for the live relay."""
    client_id = f"r-{uuid.uuid4().hex[:8]}"
    await ensure_topics(live)
    live_before = await event_ids_on(live, "hazards.observations")
    async with intake(drill, pool) as d:
        # A live input written by a live store whose relay is not running.
        live_store = Store(pool, LIVE)
        written = await live_store.record(gauge_write(client_id))
        assert written.decision is Decision.WRITE
        assert (await submit_both(d, client_id))[:2] == (202, 202)
        # The live row is older than the drill's: a relay that took it would have
        # published it before the drill's rows.
        await wait_for(lambda: _drained(d), timeout=30, what="the drill's outbox published")
        assert await _unsent(pool, LIVE) == 1
        assert await live_store.backlog() == 1
    assert await event_ids_on(live, "hazards.observations") == live_before


async def _drained(running: Running) -> bool:
    return await running.backlog() == 0


async def _unsent(pool: asyncpg.Pool, namespace: str) -> int:
    count: int = await pool.fetchval(
        "select count(*) from outbox where namespace = $1 and sent_at is null", namespace)
    return count


async def _all_sent(pool: asyncpg.Pool) -> bool:
    return not await pool.fetchval("select count(*) from outbox where sent_at is null")


async def _outbox_ids(pool: asyncpg.Pool, namespace: str) -> list[str]:
    return [r["event_id"] for r in await pool.fetch(
        "select event_id::text from outbox where namespace = $1", namespace)]
