"""Intake's group commit against the real PostgreSQL: shared transactions, separate answers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from schemas.region import load_region
from services.common.auth import Principal, Role
from services.intake.domain import Decision
from services.intake.service import Intake
from services.intake.store import Recorded
from tests.support import gauge_write, store_for

pytestmark = pytest.mark.integration

REGION = load_region()
KANDA = {"lat": 35.69282, "lon": 139.7658}
FIELD = Principal(subject="kanda-team-1", role=Role.FIELD, token_id="t1",
                  expires_at=datetime.now(UTC) + timedelta(hours=1))


def report(client_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid report inside 神田公園地区."""
    return {"client_report_id": client_id, "category": "fire", "severity": 4,
            "location": KANDA, "description": "煙が見える", **overrides}


async def transactions(pool: asyncpg.Pool, event_ids: list[uuid.UUID]) -> int:
    """How many transactions wrote these outbox rows (xmin: the writing transaction)."""
    async with pool.acquire() as conn:
        count: int = await conn.fetchval(
            "select count(distinct xmin::text) from outbox where event_id = any($1::uuid[])",
            event_ids)
    return count


async def test_concurrent_submissions_share_commits_and_keep_their_answers(
        db_pool: asyncpg.Pool, namespace: str) -> None:
    """Concurrent reports commit together, yet each gets its own 202/200/409/422 answer."""
    intake = Intake(await store_for(db_pool, namespace), REGION)
    first = await intake.submit_report(FIELD, report("taken"))
    assert first.status == 202
    rejected = await intake.submit_report(FIELD, report("fixme", severity=9))
    assert rejected.status == 422

    outcomes = await asyncio.gather(
        *(intake.submit_report(FIELD, report(f"new-{i}")) for i in range(20)),
        intake.submit_report(FIELD, report("taken")),  # identical resend
        intake.submit_report(FIELD, report("taken", severity=2)),  # different body
        intake.submit_report(FIELD, report("fixme")),  # corrected resend of a rejection
        intake.submit_report(FIELD, report("bad", severity=9)),  # a new rejection
        intake.submit_report(FIELD, report("twice")),  # the same new id twice at once
        intake.submit_report(FIELD, report("twice")),
    )
    statuses = [o.status for o in outcomes]
    assert statuses == [202] * 20 + [200, 409, 202, 422, 202, 200]
    assert outcomes[20].body == first.body  # the stored answer, not a new one
    assert outcomes[21].body["report_id"] == first.body["report_id"]
    assert outcomes[25].body == outcomes[24].body

    written = [uuid.UUID(e) for o in outcomes[:20] for e in o.body["event_ids"]]
    # Every write queued before the committer ran: one transaction for all 20.
    assert await transactions(db_pool, written) == 1
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from outbox") == 2 + 1 + 40 + 2 + 1 + 2
        assert await conn.fetchval("select count(*) from intake_requests") == 2 + 20 + 2
        fixed = await conn.fetchrow("select status, accepted_event_id from report_status "
                                    "where client_report_id = 'fixme'")
        assert fixed["status"] == "accepted" and fixed["accepted_event_id"] is not None
        ids = await conn.fetch("select event_id from outbox order by id")
    # Outbox order follows arrival: a report's submitted event precedes its accepted one.
    order = {r["event_id"]: i for i, r in enumerate(ids)}
    for outcome in outcomes[:20]:
        submitted, accepted = (uuid.UUID(e) for e in outcome.body["event_ids"])
        assert order[submitted] < order[accepted]


async def test_a_failing_write_fails_alone(db_pool: asyncpg.Pool, namespace: str) -> None:
    """A write the database refuses fails with its error; the rest of its group commits."""
    store = await store_for(db_pool, namespace)
    taken = gauge_write("k-0")
    await store.record(taken)
    # Its event id is already in the outbox: the unique constraint refuses this write.
    clash = gauge_write("k-clash", event=taken.events[0])
    good = [gauge_write(f"k-{i}") for i in range(1, 11)]
    results = await asyncio.gather(*(store.record(w) for w in [*good[:5], clash, *good[5:]]),
                                   return_exceptions=True)
    assert isinstance(results[5], asyncpg.UniqueViolationError)
    fine = results[:5] + results[6:]
    assert all(isinstance(r, Recorded) and r.decision is Decision.WRITE and r.status_code == 202
               for r in fine)
    async with db_pool.acquire() as conn:
        keys = {r[0] for r in await conn.fetch("select client_id from intake_requests")}
        outbox = await conn.fetchval("select count(*) from outbox")
    # Nothing of the refused write is applied, not even its idempotency record.
    assert keys == {f"k-{i}" for i in range(11)}
    assert outbox == 11
    # ...so the same key can be used again and is a first receipt.
    again = await store.record(gauge_write("k-clash"))
    assert again.decision is Decision.WRITE


async def test_writes_without_idempotency_and_cancelled_callers(
        db_pool: asyncpg.Pool, namespace: str) -> None:
    """Writes without a client id are all written; a caller cancelled while queued is not."""
    store = await store_for(db_pool, namespace)
    gone = asyncio.create_task(store.record(gauge_write("gone")))
    await asyncio.sleep(0)  # it has queued its write; the committer has not run yet
    gone.cancel()
    results = await asyncio.gather(*(store.record(gauge_write(None)) for _ in range(5)))
    assert all(r.decision is Decision.WRITE for r in results)
    with pytest.raises(asyncio.CancelledError):
        await gone
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from outbox") == 5
        assert await conn.fetchval("select count(*) from intake_requests") == 0
