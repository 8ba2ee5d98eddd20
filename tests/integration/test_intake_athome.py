"""Residents at home and welfare checks through intake's HTTP API, against the real
PostgreSQL and broker: the public form without a token, field teams, replacement,
the state a welfare check is checked against, and drill isolation."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from schemas.events import decode_event
from schemas.people import AtHomeReported, WelfareChecked
from schemas.topics import qualified
from services.common.auth import Role
from services.intake.ratelimit import RateLimiter
from tests.support import (
    Running,
    auth,
    make_settings,
    read_topic,
    start_intake,
    token,
    wait_for,
)

pytestmark = pytest.mark.integration

AT_HOME = "/v1/people/at-home"
CHECKS = "/v1/people/welfare-checks"


@pytest.fixture
async def running(kafka_bootstrap: str, database_url: str, namespace: str,
                  db_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    """Intake for one test (the address's bucket large enough for the test)."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    async for r in start_intake(settings, db_pool, app_options={
            "unauthenticated_limiter": RateLimiter(1000, 1000)}):
        yield r


def household(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"client_id": str(uuid.uuid4()), "area_id": "kanda-koen",
                            "size": 2, "needs": ["water", "welfare_check"],
                            "contact": "090-0000-0000", "address": "神田小川町1-1",
                            "note": "高齢の母と二人"}
    body.update(overrides)
    return body


async def athome_events(running: Running) -> list[Any]:
    """Every event on people.athome of the test's namespace, decoded."""
    await wait_for(lambda: _drained(running), what="outbox drained")
    records = await read_topic(running.settings,
                               qualified("people.athome", running.settings.namespace))
    return [decode_event(r.value) for r in records if r.value is not None]


async def _drained(running: Running) -> bool:
    return await running.backlog() == 0


async def test_public_form_is_accepted_without_a_token_replayed_and_replaced(
        running: Running) -> None:
    """No token: via public; a resend replays (200); another body replaces (a new event)."""
    body = household()
    status, ack, _ = await running.post(AT_HOME, body)
    assert status == 202, ack
    assert ack["client_id"] == body["client_id"] and ack["area_id"] == "kanda-koen"
    status, again, _ = await running.post(AT_HOME, body)
    assert (status, again) == (200, ack)
    status, replaced, _ = await running.post(AT_HOME, {**body, "size": 3})
    assert status == 202, replaced
    assert replaced["household_id"] == ack["household_id"]
    assert replaced["event_id"] != ack["event_id"]

    events = await athome_events(running)
    assert sorted(str(e.event_id) for e in events) == sorted(
        [ack["event_id"], replaced["event_id"]])
    assert all(isinstance(e, AtHomeReported) for e in events)
    latest = next(e for e in events if str(e.event_id) == replaced["event_id"])
    assert latest.payload.via == "public" and latest.payload.reported_by is None
    assert latest.payload.size == 3 and str(latest.payload.household_id) == ack["household_id"]
    async with running.pool.acquire() as conn:
        row = await conn.fetchrow("select size, revision, via from athome_households "
                                  "where household_id = $1", uuid.UUID(ack["household_id"]))
    assert dict(row) == {"size": 3, "revision": 2, "via": "public"}


async def test_field_team_report_is_via_field(running: Running) -> None:
    """A field token's report is via field, reported by the token's subject."""
    status, ack, _ = await running.post(AT_HOME, household(client_id="fc-1"),
                                        headers=auth(Role.FIELD, "kanda-team-3"))
    assert status == 202, ack
    [event] = await athome_events(running)
    assert event.payload.via == "field"
    assert event.payload.reported_by.team == "kanda-team-3"


async def test_bad_public_input_is_refused_and_changes_nothing(running: Running) -> None:
    """Unknown area (422 /area_id), exercise (403), a bad token (401), a big body (413)."""
    status, error, _ = await running.post(AT_HOME, household(area_id="atlantis"))
    assert status == 422 and [e["pointer"] for e in error["errors"]] == ["/area_id"]
    status, error, _ = await running.post(AT_HOME, household(exercise=True))
    assert status == 403, error
    status, error, _ = await running.post(AT_HOME, household(),
                                          headers={"Authorization": "Bearer nonsense"})
    assert status == 401, error  # a token that fails is never taken for the public form
    # The public form's bound (16 KiB) is below a token's (64 KiB here).
    big = json.dumps(household(note="x" * 20_000)).encode()
    status, error, _ = await running.post(AT_HOME, None, raw=big)
    assert status == 413, error
    status, error, _ = await running.post(AT_HOME, household(),
                                          headers=auth(Role.SHELTER_STAFF))
    assert status == 403, error
    assert await athome_events(running) == []
    async with running.pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from athome_households") == 0


async def test_public_form_spends_the_address_bucket(kafka_bootstrap: str, database_url: str,
                                                     namespace: str,
                                                     db_pool: asyncpg.Pool) -> None:
    """Requests without a token are limited per client address: 429 with Retry-After."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    async for running in start_intake(settings, db_pool, app_options={
            "unauthenticated_limiter": RateLimiter(2, 0.01)}):
        assert (await running.post(AT_HOME, household()))[0] == 202
        assert (await running.post(AT_HOME, household()))[0] == 202
        status, error, response = await running.post(AT_HOME, household())
        assert status == 429 and error["error"] == "rate_limited"
        assert int(response.headers["Retry-After"]) >= 1
        # A field team's token has its own bucket.
        status, _, _ = await running.post(AT_HOME, household(client_id="fc-2"),
                                          headers=auth(Role.FIELD))
        assert status == 202


async def test_welfare_check_is_checked_against_the_households_reported(
        running: Running) -> None:
    """404 for an unknown household, 422 for the wrong area, 403 outside the team's areas;
    then 202, a replay, and 409 for another body under the same id."""
    status, ack, _ = await running.post(AT_HOME, household())
    assert status == 202
    team = auth(Role.FIELD)  # the tests' team tokens cover kanda-koen, jimbocho, fujimi
    check = {"client_id": "wc-1", "household_id": ack["household_id"],
             "area_id": "kanda-koen", "outcome": "safe", "note": "在宅、元気"}

    status, error, _ = await running.post(CHECKS, {**check, "household_id": str(uuid.uuid4())},
                                          headers=team)
    assert status == 404 and error["error"] == "unknown_household", error
    status, error, _ = await running.post(CHECKS, {**check, "area_id": "jimbocho"},
                                          headers=team)
    assert status == 422 and [e["pointer"] for e in error["errors"]] == ["/area_id"], error
    status, error, _ = await running.post(CHECKS, {**check, "area_id": "izumibashi"},
                                          headers=team)
    assert status == 403, error

    status, done, _ = await running.post(CHECKS, check, headers=team)
    assert status == 202, done
    assert (await running.post(CHECKS, check, headers=team))[:2] == (200, done)
    status, error, _ = await running.post(CHECKS, {**check, "outcome": "needs_help"},
                                          headers=team)
    assert status == 409, error
    status, _, _ = await running.post(CHECKS, check)
    assert status == 401  # no token: only the at-home form is public

    checks = [e for e in await athome_events(running) if isinstance(e, WelfareChecked)]
    assert [str(e.event_id) for e in checks] == [done["event_id"]]
    assert checks[0].payload.checked_by == "kanda-team-1"
    async with running.pool.acquire() as conn:
        assert await conn.fetchval("select last_check from athome_households") == "safe"


async def test_a_drill_never_sees_live_households(kafka_bootstrap: str, database_url: str,
                                                  namespace: str,
                                                  db_pool: asyncpg.Pool) -> None:
    """A household reported in one namespace is unknown to another's welfare checks."""
    live = make_settings(kafka_bootstrap, database_url, namespace)
    async for running in start_intake(live, db_pool):
        status, ack, _ = await running.post(AT_HOME, household())
        assert status == 202
    drill = make_settings(kafka_bootstrap, database_url, namespace + "d")
    async for running in start_intake(drill, db_pool):
        status, error, _ = await running.post(CHECKS, {
            "client_id": "wc-1", "household_id": ack["household_id"], "area_id": "kanda-koen",
            "outcome": "safe"}, headers={"Authorization": f"Bearer {token(Role.HQ)}"})
        assert status == 404, error


async def test_concurrent_resends_write_one_event(running: Running) -> None:
    """The same report sent five times at once: one 202, four 200 replays, one event."""
    body = household()
    answers = await asyncio.gather(*(running.post(AT_HOME, body) for _ in range(5)))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200, 200, 200, 200, 202], answers
    assert len({json.dumps(ack, sort_keys=True) for _, ack, _ in answers}) == 1
    assert len(await athome_events(running)) == 1
