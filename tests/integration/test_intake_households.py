"""Households over HTTP against the real PostgreSQL and broker: state checked, events once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from schemas.topics import qualified
from services.common.auth import Principal, Role, issue_token, verify_token
from services.intake.errors import UnknownHousehold
from services.intake.service import Intake
from services.intake.store import Store
from tests.support import (
    REGION,
    SECRET,
    SHELTER,
    TEAM_AREAS,
    Running,
    auth,
    make_settings,
    read_topic,
    start_intake,
    wait_for,
)

pytestmark = pytest.mark.integration

HERE = REGION.site(SHELTER)
"""A shelter in 神田公園地区, one of the staff token's areas."""
THERE = next(s for s in REGION.shelters_in("jimbocho") if s.id != SHELTER)
"""Another shelter of the staff token's areas."""
FAR = next(s for s in REGION.sites if s.is_shelter and s.district_id not in TEAM_AREAS)
"""A shelter outside the staff token's areas."""
CODE = "7K3M9QXD"


@pytest.fixture
async def running(kafka_bootstrap: str, database_url: str, namespace: str,
                  db_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    """Intake for one test."""
    async for r in start_intake(make_settings(kafka_bootstrap, database_url, namespace),
                                db_pool):
        yield r


def staff(name: str = "staff-1", shelters: tuple[str, ...] = ()) -> dict[str, str]:
    """A shelter_staff Authorization header (the tests' areas, optionally a shelters claim)."""
    return {"Authorization": "Bearer " + issue_token(
        SECRET, Role.SHELTER_STAFF, name, timedelta(hours=1), areas=TEAM_AREAS,
        shelters=shelters)}


def checkin(client_id: str = "c-1", **overrides: Any) -> dict[str, Any]:
    """A check-in body: a family of three with an infant."""
    return {"client_id": client_id, "size": 3, "needs": ["infant"], "name": "山田",
            "contact": "090-1234-5678", **overrides}


def households(site: str = SHELTER) -> str:
    return f"/v1/shelters/{site}/households"


async def household_events(running: Running) -> list[dict[str, Any]]:
    """The household events on shelters.updates (once the outbox is drained)."""
    await wait_for(lambda: _drained(running), what="outbox drained")
    records = await read_topic(running.settings,
                               qualified("shelters.updates", running.settings.namespace))
    events = [json.loads(r.value) | {"_key": r.key.decode() if r.key else None}
              for r in records if r.value]
    return sorted((e for e in events if e["type"].startswith("shelter.household_")),
                  key=lambda e: (e["occurred_at"], e["type"]))


async def _drained(running: Running) -> bool:
    return await running.backlog() == 0


async def counts(running: Running) -> tuple[int, int, int]:
    """(outbox rows, idempotency records, households rows) of the test's schema."""
    async with running.pool.acquire() as conn:
        return (await conn.fetchval("select count(*) from outbox"),
                await conn.fetchval("select count(*) from intake_requests"),
                await conn.fetchval("select count(*) from households"))


async def test_check_in_and_out_once_each(running: Running) -> None:
    """A check-in is 201 with its code, a resend 200, a check-out 202; one event each."""
    status, ack, _ = await running.post(households(), checkin(), headers=staff())
    assert status == 201, ack
    code = ack["household_code"]
    assert (ack["shelter_id"], ack["client_id"]) == (SHELTER, "c-1")
    status, again, _ = await running.post(households(), checkin(), headers=staff())
    assert (status, again) == (200, ack)
    status, body, _ = await running.post(households(), checkin(size=4), headers=staff())
    assert (status, body["error"]) == (409, "conflict")

    out = f"{households()}/{code.lower()}/checkout"
    status, left, _ = await running.post(out, {"client_id": "c-2"}, headers=staff())
    assert status == 202 and left["household_code"] == code, left
    status, body, _ = await running.post(out, {"client_id": "c-3"}, headers=staff())
    assert (status, body["error"]) == (404, "unknown_household")
    status, again, _ = await running.post(out, {"client_id": "c-2"}, headers=staff())
    assert (status, again) == (200, left)  # a resend after the fact is still a replay

    events = await household_events(running)
    assert [e["type"] for e in events] == ["shelter.household_checked_in",
                                           "shelter.household_checked_out"]
    assert [e["event_id"] for e in events] == [ack["event_id"], left["event_id"]]
    assert all(e["_key"] == SHELTER and e["payload"]["household_code"] == code
               for e in events)
    assert events[0]["payload"]["name"] == "山田"
    assert events[0]["payload"]["reported_by"]["team"] == "staff-1"


async def test_a_code_checked_in_is_refused_a_second_check_in(running: Running) -> None:
    """409 household_checked_in for a code that is in (here or at another shelter)."""
    status, _, _ = await running.post(households(), checkin(household_code=CODE),
                                      headers=staff())
    assert status == 201
    for site, client_id in ((SHELTER, "c-2"), (THERE.id, "c-3")):
        status, body, _ = await running.post(households(site),
                                             checkin(client_id, household_code=CODE),
                                             headers=staff())
        assert (status, body["error"]) == (409, "household_checked_in"), body
        assert SHELTER not in body["message"] or site == SHELTER


async def test_a_transfer_moves_the_household_once(running: Running) -> None:
    """One request: checked out at the source naming the destination, checked in there
    naming the source with the same household; the source knows it no more."""
    status, ack, _ = await running.post(
        households(), checkin(household_code=CODE, needs=["infant", "language"],
                              language="vi"), headers=staff())
    assert status == 201, ack
    move = f"{households()}/{CODE}/transfer"
    status, moved, _ = await running.post(move, {"client_id": "t-1", "to": FAR.id},
                                          headers=staff())
    assert status == 202, moved
    assert moved["shelter_id"] == FAR.id and len(moved["event_ids"]) == 2
    status, again, _ = await running.post(move, {"client_id": "t-1", "to": FAR.id},
                                          headers=staff())
    assert (status, again) == (200, moved)

    status, body, _ = await running.post(f"{households()}/{CODE}/checkout",
                                         {"client_id": "o-1"}, headers=staff())
    assert (status, body["error"]) == (404, "unknown_household")
    # The destination is outside the staff's areas: HQ checks it out there.
    status, _, _ = await running.post(f"{households(FAR.id)}/{CODE}/checkout",
                                      {"client_id": "o-2"}, headers=auth(Role.HQ, "hq"))
    assert status == 202

    events = await household_events(running)
    by_id = {e["event_id"]: e for e in events}
    out, into = (by_id[str(i)] for i in moved["event_ids"])
    assert (out["type"], out["_key"], out["payload"]["transferred_to"]) == (
        "shelter.household_checked_out", SHELTER, FAR.id)
    assert (into["type"], into["_key"], into["payload"]["transferred_from"]) == (
        "shelter.household_checked_in", FAR.id, SHELTER)
    first = by_id[ack["event_id"]]["payload"]
    carried = ("size", "needs", "language", "name", "contact")
    assert {k: into["payload"][k] for k in carried} == {k: first[k] for k in carried}
    assert into["causation_id"] == out["event_id"]
    assert len(events) == 4  # in, out + in (the transfer), out at the destination


async def test_refused_commands_change_nothing(running: Running) -> None:
    """Every refusal (404, 409, 422, 403) leaves outbox, records and households as they were."""
    status, _, _ = await running.post(households(), checkin(household_code=CODE),
                                      headers=staff())
    assert status == 201
    before = await counts(running)
    refused = [
        (households(), checkin("r-1", household_code=CODE), staff(), 409),
        (f"{households()}/0000AAAA/checkout", {"client_id": "r-2"}, staff(), 404),
        (f"{households()}/{CODE}/transfer", {"client_id": "r-3", "to": SHELTER}, staff(), 422),
        (f"{households()}/{CODE}/transfer", {"client_id": "r-4", "to": "nowhere"}, staff(),
         422),
        (f"{households(THERE.id)}/{CODE}/transfer", {"client_id": "r-5", "to": FAR.id},
         staff(), 404),
        (f"{households()}/{CODE}/checkout", {"client_id": "r-6", "occurred_at":
                                             "2000-01-01T00:00:00Z"}, staff(), 422),
        (f"{households()}/{CODE}/checkout", {"client_id": "r-7"},
         staff(shelters=(THERE.id,)), 403),
        (households(FAR.id), checkin("r-8"), staff(), 403),
        (households(), checkin("r-9"), auth(Role.FIELD), 403),
        (households("nowhere"), checkin("r-10"), staff(), 404),
    ]
    for path, body, headers, expected in refused:
        status, answer, _ = await running.post(path, body, headers=headers)
        assert status == expected, (path, body, answer)
    assert await counts(running) == before
    # The refused transfers left the household where it was: it checks out here.
    status, _, _ = await running.post(f"{households()}/{CODE}/checkout",
                                      {"client_id": "ok-1"}, headers=staff())
    assert status == 202


async def test_site_permissions(running: Running) -> None:
    """A shelters claim narrows staff to its sites; without it, the sites of their areas;
    a transfer needs only the source permitted; HQ acts anywhere."""
    status, body, _ = await running.post(households(), checkin(),
                                         headers=staff("staff-2", shelters=(THERE.id,)))
    assert (status, body["error"]) == (403, "site_not_permitted")
    status, _, _ = await running.post(households(THERE.id), checkin(household_code=CODE),
                                      headers=staff("staff-2", shelters=(THERE.id,)))
    assert status == 201
    status, _, _ = await running.post(f"{households(THERE.id)}/{CODE}/transfer",
                                      {"client_id": "t-1", "to": FAR.id},
                                      headers=staff("staff-2", shelters=(THERE.id,)))
    assert status == 202
    status, _, _ = await running.post(households(FAR.id), checkin("c-9"),
                                      headers=auth(Role.HQ, "hq"))
    assert status == 201


async def test_concurrent_resends_and_rivals_are_decided_once(running: Running) -> None:
    """The same check-in sent twice at once is one 201 and one 200; two check-ins of one code
    under different ids at once are one 201 and one 409; one event each time."""
    same = await asyncio.gather(*(running.post(households(), checkin("c-1"), headers=staff())
                                  for _ in range(2)))
    assert sorted(s for s, _, _ in same) == [200, 201]
    rivals = await asyncio.gather(*(
        running.post(households(), checkin(f"r-{i}", household_code=CODE), headers=staff())
        for i in range(2)))
    assert sorted(s for s, _, _ in rivals) == [201, 409]
    events = await household_events(running)
    assert len(events) == 2


async def test_a_drill_never_sees_live_households(running: Running) -> None:
    """The households table is per namespace: a live household is unknown to a drill's
    intake, and the same code checks in there too."""
    status, _, _ = await running.post(households(), checkin(household_code=CODE),
                                      headers=staff())
    assert status == 201
    drill = Intake(Store(running.pool, running.settings.namespace + "drill"), REGION)
    principal: Principal = verify_token(SECRET, staff()["Authorization"].split()[1])
    with pytest.raises(UnknownHousehold):
        await drill.households.check_out(principal, SHELTER, CODE, {"client_id": "o-1"})
    answer = await drill.households.check_in(principal, SHELTER,
                                             checkin(household_code=CODE))
    assert answer.status == 201
    async with running.pool.acquire() as conn:
        rows = await conn.fetch("select namespace, checked_in from households "
                                "where household_code = $1 order by namespace", CODE)
    assert [(r["namespace"], r["checked_in"]) for r in rows] == [
        (running.settings.namespace, True), (running.settings.namespace + "drill", True)]


async def test_the_list_holds_the_households_checked_in_now(running: Running) -> None:
    """GET …/households: the households in there now with their personal fields, never
    cached; gone after a check-out or a transfer; staff of another site 403, HQ 200."""
    for client_id, code in (("c-1", CODE), ("c-2", "2B4C6D8F"), ("c-3", "3G5H7J9K")):
        status, _, _ = await running.post(households(), checkin(client_id, household_code=code),
                                          headers=staff())
        assert status == 201
    status, _, _ = await running.post(f"{households()}/2B4C6D8F/checkout",
                                      {"client_id": "o-1"}, headers=staff())
    assert status == 202
    status, _, _ = await running.post(f"{households()}/3G5H7J9K/transfer",
                                      {"client_id": "t-1", "to": THERE.id}, headers=staff())
    assert status == 202

    async with running.session.get(running.url + households(), headers=staff()) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        listing = await response.json()
    assert listing["shelter_id"] == SHELTER
    [only] = listing["households"]
    assert {k: only[k] for k in ("household_code", "size", "needs", "name", "contact")} == {
        "household_code": CODE, "size": 3, "needs": ["infant"], "name": "山田",
        "contact": "090-1234-5678"}
    assert only["checked_in_at"]
    status, there = await running.get(households(THERE.id), headers=auth(Role.HQ, "hq"))
    assert status == 200
    assert [h["household_code"] for h in there["households"]] == ["3G5H7J9K"]

    status, body = await running.get(households(),
                                     headers=staff("staff-2", shelters=(THERE.id,)))
    assert (status, body["error"]) == (403, "site_not_permitted")
    status, body = await running.get(households(), headers=auth(Role.FIELD, "team-1"))
    assert (status, body["error"]) == (403, "forbidden")
    status, body = await running.get(households("no-such-site"), headers=auth(Role.HQ, "hq"))
    assert (status, body["error"]) == (404, "not_found")
