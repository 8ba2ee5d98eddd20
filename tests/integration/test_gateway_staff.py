"""Staff requests over the websocket reach the real intake with the sender's own token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from services.common.auth import Role, issue_token
from services.gateway.server import IntakeReports
from tests.support import (
    REGION,
    SECRET,
    SHELTER,
    TEAM_AREAS,
    Running,
    make_settings,
    start_intake,
)
from tests.support.gateway import gateway, peer

pytestmark = pytest.mark.integration

THERE = next(s.id for s in REGION.sites if s.is_shelter and s.id != SHELTER)
"""Another shelter: a transfer's destination, not the staff token's site."""


@pytest.fixture
async def intake(kafka_bootstrap: str, database_url: str, namespace: str,
                 db_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    """Intake for one test."""
    async for r in start_intake(make_settings(kafka_bootstrap, database_url, namespace),
                                db_pool):
        yield r


def _token(role: Role, name: str, shelters: tuple[str, ...] = ()) -> str:
    return issue_token(SECRET, role, name, timedelta(hours=1), areas=TEAM_AREAS,
                       shelters=shelters)


def _answer(m: dict[str, object]) -> bool:
    return m["type"] in ("ack", "error")


async def test_staff_check_in_list_and_check_out_over_the_socket(
        kafka_bootstrap: str, namespace: str, intake: Running) -> None:
    """A staff `checkin` is acknowledged with intake's code, `households` lists it, a
    `checkout` removes it; intake's refusals come back as errors with its code; a field
    connection's `checkin` is refused (forbidden) before reaching intake; a `transfer`
    moves a household to a site whose list the staff may not read."""
    settings = make_settings(kafka_bootstrap, intake.settings.database_url, namespace,
                             host="127.0.0.1")
    client = IntakeReports(intake.url)
    staff = _token(Role.SHELTER_STAFF, "staff-1", shelters=(SHELTER,))
    field = _token(Role.FIELD, "team-1")
    try:
        async with gateway(settings, intake=client) as gw, \
                peer(gw, token=staff) as s, peer(gw, token=field) as f:
            await s.until(lambda m: m["type"] == "snapshot")
            await s.send({"type": "checkin", "id": "q1", "shelter_id": SHELTER,
                          "body": {"client_id": "c-1", "size": 2, "needs": ["pet"],
                                   "name": "山田"}})
            ack = await s.until(_answer)
            assert (ack["type"], ack["id"], ack["status"]) == ("ack", "q1", 201), ack
            code = ack["result"]["household_code"]
            assert len(code) == 8 and ack["result"]["shelter_id"] == SHELTER

            await s.send({"type": "households", "id": "q2", "shelter_id": SHELTER})
            listing = await s.until(_answer)
            assert [(h["household_code"], h["size"], h["name"])
                    for h in listing["result"]["households"]] == [(code, 2, "山田")]

            await s.send({"type": "checkin", "id": "q3", "shelter_id": SHELTER,
                          "body": {"client_id": "c-2", "size": 2, "household_code": code}})
            refused = await s.until(_answer)
            assert (refused["type"], refused["code"]) == ("error", "household_checked_in")
            await s.send({"type": "checkin", "id": "q4", "shelter_id": SHELTER,
                          "body": {"client_id": "c-3", "size": 0}})
            invalid = await s.until(_answer)
            assert invalid["code"] == "invalid" and invalid["errors"][0]["pointer"] == "/size"

            await s.send({"type": "checkout", "id": "q5", "shelter_id": SHELTER,
                          "household_code": code, "body": {"client_id": "o-1"}})
            left = await s.until(_answer)
            assert (left["type"], left["status"]) == ("ack", 202), left
            await s.send({"type": "households", "id": "q6", "shelter_id": SHELTER})
            assert (await s.until(_answer))["result"]["households"] == []

            await s.send({"type": "checkin", "id": "q8", "shelter_id": SHELTER,
                          "body": {"client_id": "c-4", "size": 1}})
            moved = (await s.until(_answer))["result"]["household_code"]
            await s.send({"type": "transfer", "id": "q9", "shelter_id": SHELTER,
                          "household_code": moved, "body": {"client_id": "t-1", "to": THERE}})
            transferred = await s.until(_answer)
            assert (transferred["type"], transferred["result"]["shelter_id"]) == ("ack", THERE)
            await s.send({"type": "households", "id": "q10", "shelter_id": THERE})
            elsewhere = await s.until(_answer)  # not this token's site: intake says so
            assert (elsewhere["type"], elsewhere["code"]) == ("error", "site_not_permitted")

            await f.until(lambda m: m["type"] == "snapshot")
            await f.send({"type": "checkin", "id": "f1", "shelter_id": SHELTER,
                          "body": {"client_id": "c-9", "size": 1}})
            forbidden = await f.until(_answer)
            assert (forbidden["type"], forbidden["code"]) == ("error", "forbidden")
            await s.send({"type": "checkout", "id": "q7", "shelter_id": "../x",
                          "household_code": code, "body": {"client_id": "o-2"}})
            assert (await s.until(_answer))["code"] == "invalid"
        async with intake.pool.acquire() as conn:
            assert await conn.fetchval("select count(*) from households") == 2
            assert await conn.fetchval("select count(*) from intake_requests") == 4
    finally:
        await client.close()
