"""Closing a shelter checks its households out in intake's transaction (real PostgreSQL
and broker): the close and the check-outs are written together or not at all."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from schemas.topics import qualified
from services.common.auth import Role, issue_token
from tests.support import (
    REGION,
    SECRET,
    SHELTER,
    TEAM_AREAS,
    Running,
    make_settings,
    read_topic,
    start_intake,
    wait_for,
)

pytestmark = pytest.mark.integration

THERE = next(s for s in REGION.shelters_in("jimbocho") if s.id != SHELTER)
"""Another shelter of the staff token's areas."""
CODES = ("7K3M9QXD", "8P4N2RWE")
CLOSE = {"action": "close", "stage": "closed", "reason": "no longer needed"}


@pytest.fixture
async def running(kafka_bootstrap: str, database_url: str, namespace: str,
                  db_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    """Intake for one test."""
    async for r in start_intake(make_settings(kafka_bootstrap, database_url, namespace),
                                db_pool):
        yield r


def staff(name: str = "staff-1") -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(
        SECRET, Role.SHELTER_STAFF, name, timedelta(hours=1), areas=TEAM_AREAS)}


async def check_in(running: Running, code: str, client_id: str,
                   site: str = SHELTER) -> tuple[int, Any]:
    status, body, _ = await running.post(
        f"/v1/shelters/{site}/households",
        {"client_id": client_id, "size": 2, "household_code": code}, headers=staff())
    return status, body


async def close(running: Running, key: str, body: dict[str, Any] | None = None
                ) -> tuple[int, Any]:
    status, answer, _ = await running.post(
        f"/v1/shelters/{SHELTER}/status", body or CLOSE,
        headers={**staff("closer"), "Idempotency-Key": key})
    return status, answer


async def outbox(running: Running) -> list[asyncpg.Record]:
    """The outbox rows of the close and of check-outs, with their transaction ids."""
    async with running.pool.acquire() as conn:
        return list(await conn.fetch(
            "select event_id, event_type, xmin::text as tx from outbox "
            "where event_type in ('shelter.closed', 'shelter.household_checked_out') "
            "order by id"))


async def rows(running: Running) -> dict[str, bool]:
    async with running.pool.acquire() as conn:
        return {r["household_code"]: r["checked_in"] for r in await conn.fetch(
            "select household_code, checked_in from households")}


async def _drained(running: Running) -> bool:
    return await running.backlog() == 0


async def test_closing_checks_the_households_out_once(running: Running) -> None:
    """Two households in; the close writes itself and two check-outs in one transaction;
    the rows are out, one checks in elsewhere, and a resend writes nothing."""
    for n, code in enumerate(CODES):
        assert (await check_in(running, code, f"in-{n}"))[0] == 201

    status, ack = await close(running, "close-1")
    assert status == 202, ack
    written = await outbox(running)
    assert [r["event_type"] for r in written] == ["shelter.closed",
                                                  "shelter.household_checked_out",
                                                  "shelter.household_checked_out"]
    assert len({r["tx"] for r in written}) == 1  # one transaction
    assert [str(r["event_id"]) for r in written] == ack["event_ids"]
    assert ack["event_id"] == ack["event_ids"][0]
    assert await rows(running) == dict.fromkeys(CODES, False)

    status, again = await close(running, "close-1")
    assert (status, again) == (200, ack)
    status, body = await close(running, "close-1", {**CLOSE, "reason": "other"})
    assert (status, body["error"]) == (409, "conflict")
    assert len(await outbox(running)) == 3

    status, body = await check_in(running, CODES[0], "in-there", THERE.id)
    assert status == 201, body
    assert (await rows(running))[CODES[0]] is True

    await wait_for(lambda: _drained(running), what="outbox drained")
    records = await read_topic(running.settings,
                               qualified("shelters.updates", running.settings.namespace))
    events = [json.loads(r.value) for r in records if r.value]
    closed = [e for e in events if e["type"] == "shelter.closed"]
    outs = [e for e in events if e["type"] == "shelter.household_checked_out"]
    assert len(closed) == 1
    assert sorted(e["payload"]["household_code"] for e in outs) == sorted(CODES)
    for e in outs:
        assert e["occurred_at"] == closed[0]["occurred_at"]
        assert e["causation_id"] == closed[0]["event_id"]
        assert e["payload"]["reported_by"]["team"] == "closer"
        assert e["payload"]["shelter_id"] == SHELTER


async def test_a_close_that_fails_writes_nothing(running: Running) -> None:
    """The households' rows refuse the update: no close, no check-out, no record; once
    they accept it, the same close is written whole."""
    assert (await check_in(running, CODES[0], "in-0"))[0] == 201
    async with running.pool.acquire() as conn:
        await conn.execute("""
            create function refuse_update() returns trigger language plpgsql as
            $$ begin raise exception 'refused by the test'; end $$;
            create trigger refuse before update on households
                for each row execute function refuse_update();""")
    status, _ = await close(running, "close-1")
    assert status >= 500
    assert await outbox(running) == []
    assert await rows(running) == {CODES[0]: True}
    async with running.pool.acquire() as conn:
        assert await conn.fetchval(
            "select count(*) from intake_requests where client_id = 'close-1'") == 0
        await conn.execute("drop trigger refuse on households")
    status, ack = await close(running, "close-1")
    assert status == 202, ack
    assert [r["event_type"] for r in await outbox(running)] == [
        "shelter.closed", "shelter.household_checked_out"]
    assert await rows(running) == {CODES[0]: False}


async def test_a_closing_stage_checks_nobody_out(running: Running) -> None:
    """Stage closing (evacuees still leaving) goes the usual way: the households stay in."""
    assert (await check_in(running, CODES[0], "in-0"))[0] == 201
    status, ack = await close(running, "closing-1", {**CLOSE, "stage": "closing"})
    assert status == 202, ack
    assert [r["event_type"] for r in await outbox(running)] == ["shelter.closed"]
    assert await rows(running) == {CODES[0]: True}


async def test_a_check_out_racing_the_close_is_written_once(running: Running) -> None:
    """A household's own check-out and the close, sent together: one of them checks it
    out (the other writes no check-out for it: 404, or a close without it)."""
    for n, code in enumerate(CODES):
        assert (await check_in(running, code, f"in-{n}"))[0] == 201
    (status, body, _), (closed, ack) = await asyncio.gather(
        running.post(f"/v1/shelters/{SHELTER}/households/{CODES[0]}/checkout",
                     {"client_id": "out-0"}, headers=staff()),
        close(running, "close-1"))
    assert closed == 202, ack
    assert status in (202, 404), body
    written = [r["event_type"] for r in await outbox(running)]
    assert written.count("shelter.household_checked_out") == 2  # one per household
    assert len(ack["event_ids"]) == (2 if status == 202 else 3)
    assert await rows(running) == dict.fromkeys(CODES, False)


async def test_a_close_without_a_key_checks_out_too(running: Running) -> None:
    """No Idempotency-Key: no record, and the close still writes the check-outs."""
    assert (await check_in(running, CODES[0], "in-0"))[0] == 201
    status, ack, _ = await running.post(f"/v1/shelters/{SHELTER}/status", CLOSE,
                                        headers=staff("closer"))
    assert status == 202, ack
    assert [r["event_type"] for r in await outbox(running)] == [
        "shelter.closed", "shelter.household_checked_out"]
    assert await rows(running) == {CODES[0]: False}
    async with running.pool.acquire() as conn:
        assert await conn.fetchval(
            "select count(*) from intake_requests where kind = 'shelter'") == 0
