"""Supply requests and generators through intake, against the real PostgreSQL and broker.

A request goes requested → assigned → dispatched → received with its events on
``supplies.requests`` in that order; a refused step writes nothing (no record, no
event, no state change); a drill's and live's same client ids stay apart;
generators are registered, re-registered and reported on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from infra.settings import Settings
from schemas.topics import LIVE
from services.common.auth import Role, issue_token
from tests.support import (
    REGION,
    SECRET,
    SHELTER,
    TEAM_AREAS,
    Running,
    auth,
    consume_events,
    make_settings,
    start_intake,
    wait_for,
)

pytestmark = pytest.mark.integration

intake = contextlib.asynccontextmanager(start_intake)
HQ = auth(Role.HQ, "hq-duty")
STAFF = auth(Role.SHELTER_STAFF, "kanda-koen-staff")
"""Shelter staff of TEAM_AREAS (SHELTER is in kanda-koen)."""
OUTSIDE = next(s.id for s in REGION.sites if s.is_shelter and s.district_id not in TEAM_AREAS)
"""A shelter outside the staff token's areas."""


def staff_of(*shelters: str, name: str = "narrow-staff") -> dict[str, str]:
    """Shelter staff whose token names the sites they run."""
    return {"Authorization": "Bearer " + issue_token(
        SECRET, Role.SHELTER_STAFF, name, timedelta(hours=1), areas=TEAM_AREAS,
        shelters=shelters)}


def request_body(client_id: str = "q-1", **overrides: Any) -> dict[str, Any]:
    """Water and blankets for SHELTER."""
    body: dict[str, Any] = {
        "client_id": client_id, "requester_kind": "shelter", "site_id": SHELTER,
        "lines": [{"item": "water", "quantity": 200}, {"item": "blankets", "quantity": 50}],
        "urgency": "urgent", "note": "断水"}
    body.update(overrides)
    return body


def generator_body(client_id: str = "g-1", **overrides: Any) -> dict[str, Any]:
    """A community generator standing at SHELTER (its area filled by intake)."""
    body: dict[str, Any] = {
        "client_id": client_id, "generator_id": "kanda-gen-1", "owner": "神田公園町会",
        "site_id": SHELTER, "location": {"lat": 35.6929, "lon": 139.7657},
        "fuel": "gasoline", "rated_kva": 2.8, "runtime_full_hours": 8.5}
    body.update(overrides)
    return body


@pytest.fixture
async def running(kafka_bootstrap: str, database_url: str, namespace: str,
                  db_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    """Intake for one test."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    async with intake(settings, db_pool) as r:
        yield r


async def step(running: Running, request_id: str, name: str, client_id: str,
               headers: dict[str, str], **body: Any) -> tuple[int, Any]:
    status, answer, _ = await running.post(f"/v1/supplies/requests/{request_id}/{name}",
                                           {"client_id": client_id, **body}, headers=headers)
    return status, answer


async def state_of(pool: asyncpg.Pool, namespace: str, request_id: str) -> asyncpg.Record:
    row = await pool.fetchrow("select status, assignee, last_event_id from supply_requests "
                              "where namespace = $1 and request_id = $2",
                              namespace, uuid.UUID(request_id))
    assert row is not None
    return row


async def outbox_of(pool: asyncpg.Pool, namespace: str) -> list[str]:
    rows = await pool.fetch("select event_type from outbox where namespace = $1 order by id",
                            namespace)
    return [r["event_type"] for r in rows]


async def test_a_request_goes_from_requested_to_received_with_its_events_in_order(
        running: Running, kafka_bootstrap: str, namespace: str) -> None:
    """201, three steps accepted, the status readable by the site, four events in order."""
    status, made, _ = await running.post("/v1/supplies/requests", request_body(),
                                         headers=STAFF)
    assert status == 201, made
    assert made["request_status"] == "requested" and made["area_id"] == "kanda-koen"
    rid = made["request_id"]
    status, assigned = await step(running, rid, "assign", "s-1", HQ, assignee="神田倉庫")
    assert (status, assigned["request_status"]) == (202, "assigned"), assigned
    assert await step(running, rid, "assign", "s-1", HQ, assignee="神田倉庫") == (200, assigned)
    status, dispatched = await step(running, rid, "dispatch", "s-2", HQ, note="2t truck")
    assert (status, dispatched["request_status"]) == (202, "dispatched")
    status, received = await step(running, rid, "receive", "s-3", STAFF)
    assert (status, received["request_status"]) == (202, "received"), received

    status, listing = await running.get(f"/v1/supplies/requests?site={SHELTER}", STAFF)
    assert status == 200, listing
    [view] = listing["requests"]
    assert view["request_id"] == rid and view["status"] == "received"
    assert view["assignee"] == "神田倉庫" and view["requested_by"] == "kanda-koen-staff"
    status, done = await running.get("/v1/supplies/requests?status=received", HQ)
    assert status == 200 and [r["request_id"] for r in done["requests"]] == [rid]

    events = await consume_events(kafka_bootstrap, namespace, "supplies.requests", count=4)
    assert [e.type for e in events] == ["supply.requested", "supply.assigned",
                                        "supply.dispatched", "supply.received"]
    assert {str(e.payload.request_id) for e in events} == {rid}
    assert [str(e.event_id) for e in events] == [made["event_id"], assigned["event_id"],
                                                 dispatched["event_id"], received["event_id"]]
    assert events[1].payload.by == "hq-duty" and events[3].payload.by == "kanda-koen-staff"


async def test_a_refused_step_writes_nothing(running: Running, namespace: str) -> None:
    """409 naming both statuses, 403, 404: no record, no event, no state change."""
    _, made, _ = await running.post("/v1/supplies/requests", request_body(), headers=STAFF)
    rid = made["request_id"]
    before = await state_of(running.pool, namespace, rid)

    status, refused = await step(running, rid, "receive", "early", STAFF)
    assert status == 409 and refused["error"] == "transition_refused", refused
    assert "requested" in refused["message"] and "received" in refused["message"]
    status, refused = await step(running, rid, "cancel", "other", staff_of(OUTSIDE))
    assert status == 403 and OUTSIDE in refused["message"], refused
    status, refused = await step(running, rid, "dispatch", "x", STAFF)
    assert status == 403, refused  # only HQ dispatches
    status, refused = await step(running, str(uuid.uuid4()), "assign", "y", HQ, assignee="a")
    assert (status, refused["error"]) == (404, "unknown_request")
    status, refused = await step(running, rid, "assign", "z", HQ)
    assert status == 422 and refused["errors"][0]["pointer"] == "/assignee"

    assert await state_of(running.pool, namespace, rid) == before
    assert await outbox_of(running.pool, namespace) == ["supply.requested"]
    records = await running.pool.fetch(
        "select client_id from intake_requests where namespace = $1 and kind = 'supply_step'",
        namespace)
    assert records == []
    # Nothing was recorded, so the refused client id is free once the status allows it.
    assert (await step(running, rid, "assign", "a-1", HQ, assignee="depot"))[0] == 202
    assert (await step(running, rid, "dispatch", "d-1", HQ))[0] == 202
    status, received = await step(running, rid, "receive", "early", STAFF)
    assert status == 202, received
    # A resend of the accepted step is a replay, though the status has moved on.
    assert (await step(running, rid, "assign", "a-1", HQ, assignee="depot"))[0] == 200
    status, refused = await step(running, rid, "cancel", "c-1", HQ)
    assert (status, refused["error"]) == (409, "transition_refused")
    assert await outbox_of(running.pool, namespace) == [
        "supply.requested", "supply.assigned", "supply.dispatched", "supply.received"]


async def test_requests_are_idempotent_and_checked_against_the_site(running: Running) -> None:
    """A resend is 200 with the same body, another body 409; sites outside the token, 403."""
    status, first, _ = await running.post("/v1/supplies/requests", request_body(),
                                          headers=STAFF)
    assert status == 201
    status, again, _ = await running.post("/v1/supplies/requests", request_body(),
                                          headers=STAFF)
    assert (status, again) == (200, first)
    status, other, _ = await running.post("/v1/supplies/requests",
                                          request_body(urgency="critical"), headers=STAFF)
    assert (status, other["error"]) == (409, "conflict")

    status, refused, _ = await running.post(
        "/v1/supplies/requests", request_body("q-2", site_id=OUTSIDE), headers=STAFF)
    assert status == 403, refused
    status, refused, _ = await running.post(
        "/v1/supplies/requests", request_body("q-3"), headers=staff_of(OUTSIDE))
    assert status == 403, refused  # a shelters claim narrows the areas
    status, made, _ = await running.post(
        "/v1/supplies/requests", request_body("q-4", site_id=OUTSIDE), headers=HQ)
    assert status == 201, made
    status, refused, _ = await running.post("/v1/supplies/requests", request_body("q-5"),
                                            headers=auth(Role.FIELD))
    assert status == 403
    evacuation_only = next(s.id for s in REGION.sites if not s.takes_people)
    for body, pointer in ((request_body("q-6", site_id="no-such-site"), "/site_id"),
                          (request_body("q-7", site_id=evacuation_only), "/site_id"),
                          (request_body("q-8", requester_kind="facility"), "/requester_kind"),
                          (request_body("q-9", lines=[]), "/lines")):
        status, refused, _ = await running.post("/v1/supplies/requests", body, headers=HQ)
        assert status == 422 and refused["errors"][0]["pointer"] == pointer, refused

    # Each staff token sees its own sites' requests only; HQ sees all.
    _, mine = await running.get("/v1/supplies/requests", STAFF)
    assert [r["request_id"] for r in mine["requests"]] == [first["request_id"]]
    _, narrow = await running.get("/v1/supplies/requests", staff_of(OUTSIDE))
    assert [r["request_id"] for r in narrow["requests"]] == [made["request_id"]]
    _, everything = await running.get("/v1/supplies/requests", HQ)
    assert len(everything["requests"]) == 2
    status, _ = await running.get("/v1/supplies/requests?status=lost", HQ)
    assert status == 400


async def test_generators_are_registered_replaced_and_reported_on(
        running: Running, kafka_bootstrap: str, namespace: str) -> None:
    """Registration (HQ) fills the area; re-registering replaces; status needs the area."""
    status, ack, _ = await running.post("/v1/generators", generator_body(), headers=HQ)
    assert status == 202 and ack["area_id"] == "kanda-koen", ack
    status, refused, _ = await running.post("/v1/generators", generator_body("g-2"),
                                            headers=STAFF)
    assert status == 403
    status, ack, _ = await running.post(
        "/v1/generators", generator_body("g-3", owner="神田公園自主防災組織"), headers=HQ)
    assert status == 202
    status, refused, _ = await running.post(
        "/v1/generators", generator_body("g-4", area_id="kojimachi"), headers=HQ)
    assert status == 422 and refused["errors"][0]["pointer"] == "/area_id"
    row = await running.pool.fetchrow(
        "select owner, area_id, state from generators where namespace = $1", namespace)
    assert dict(row) == {"owner": "神田公園自主防災組織", "area_id": "kanda-koen", "state": None}

    report = {"client_id": "st-1", "state": "fuel_low", "fuel_hours_left": 1.5}
    status, ack, _ = await running.post("/v1/generators/kanda-gen-1/status", report,
                                        headers=auth(Role.FIELD, "kanda-team-1"))
    assert status == 202 and ack["generator_id"] == "kanda-gen-1", ack
    elsewhere = {"Authorization": "Bearer " + issue_token(
        SECRET, Role.FIELD, "kojimachi-team", timedelta(hours=1), areas=("kojimachi",))}
    status, refused, _ = await running.post("/v1/generators/kanda-gen-1/status",
                                            {**report, "client_id": "st-2"}, headers=elsewhere)
    assert status == 403
    status, refused, _ = await running.post("/v1/generators/no-such-gen/status", report,
                                            headers=HQ)
    assert (status, refused["error"]) == (404, "unknown_generator")
    # A report older than the stored state is recorded as an event, not as the state now.
    status, _, _ = await running.post("/v1/generators/kanda-gen-1/status", {
        "client_id": "st-3", "state": "running", "occurred_at": "2025-08-21T05:00:00Z"},
        headers=HQ)
    assert status == 202
    row = await running.pool.fetchrow(
        "select state, fuel_hours_left from generators where namespace = $1", namespace)
    assert dict(row) == {"state": "fuel_low", "fuel_hours_left": 1.5}

    # Fuel is requested like any other supply, for the generator's site and area.
    status, made, _ = await running.post("/v1/supplies/requests", request_body(
        "fuel-1", requester_kind="generator", site_id="kanda-gen-1",
        lines=[{"item": "fuel", "quantity": 20}]), headers=STAFF)
    assert status == 201 and made["area_id"] == "kanda-koen", made
    status, refused, _ = await running.post("/v1/supplies/requests", request_body(
        "fuel-2", requester_kind="generator", site_id="no-such-gen"), headers=STAFF)
    assert status == 422 and refused["errors"][0]["code"] == "unknown_generator"

    events = await consume_events(kafka_bootstrap, namespace, "generators", count=4)
    assert [e.type for e in events] == ["generator.registered", "generator.registered",
                                        "generator.status_reported",
                                        "generator.status_reported"]
    assert events[0].payload.registered_by == "hq-duty"
    assert events[2].payload.reported_by.team == "kanda-team-1"


async def test_concurrent_commands_are_decided_one_after_the_other(
        running: Running, namespace: str) -> None:
    """Racing first receipts of one request make one; racing steps: one taken, one 409."""
    answers = await asyncio.gather(*(
        running.post("/v1/supplies/requests", request_body("race"), headers=STAFF)
        for _ in range(4)))
    assert sorted(status for status, _, _ in answers) == [200, 200, 200, 201]
    assert len({json.dumps(body, sort_keys=True) for _, body, _ in answers}) == 1
    rid = answers[0][1]["request_id"]
    steps = await asyncio.gather(*(
        step(running, rid, "assign", f"a-{n}", HQ, assignee=f"depot {n}") for n in range(4)))
    assert sorted(status for status, _ in steps) == [202, 409, 409, 409], steps
    [(_, taken)] = [(s, b) for s, b in steps if s == 202]
    assert (await state_of(running.pool, namespace, rid))["last_event_id"] == uuid.UUID(
        taken["event_id"])
    assert await outbox_of(running.pool, namespace) == ["supply.requested", "supply.assigned"]


async def test_a_drill_and_live_keep_the_same_client_ids_apart(
        kafka_bootstrap: str, database_url: str, namespace: str,
        db_schema: str) -> None:
    """The same client ids in a drill and live: two requests, each namespace's own."""
    live = make_settings(kafka_bootstrap, database_url, LIVE)
    drill = make_settings(kafka_bootstrap, database_url, f"drill.{namespace}")
    client_id = f"q-{uuid.uuid4().hex[:8]}"
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=12,
                                     server_settings={"search_path": db_schema})
    try:
        async with intake(drill, pool) as d, intake(live, pool) as lv:
            answers = {}
            for running in (d, lv):
                status, made, _ = await running.post(
                    "/v1/supplies/requests", request_body(client_id), headers=STAFF)
                assert status == 201, made
                answers[running.settings.namespace] = made
            assert answers[LIVE]["request_id"] != answers[drill.namespace]["request_id"]
            # A step in the drill cannot reach live's request, and the reverse.
            status, _ = await step(d, answers[LIVE]["request_id"], "cancel", "c-1", HQ)
            assert status == 404
            status, cancelled = await step(lv, answers[LIVE]["request_id"], "cancel", "c-1",
                                           HQ)
            assert (status, cancelled["request_status"]) == (202, "cancelled")
            status, drill_step = await step(d, answers[drill.namespace]["request_id"],
                                            "assign", "c-1", HQ, assignee="drill depot")
            assert (status, drill_step["request_status"]) == (202, "assigned")
            await wait_for(lambda: _all_sent(pool), timeout=30, what="outboxes published")
            await _same_in_listing(d, drill, answers[drill.namespace]["request_id"])
            await _same_in_listing(lv, live, answers[LIVE]["request_id"])
        rows = await pool.fetch("select namespace, status from supply_requests "
                                "order by namespace")
        assert [(r["namespace"], r["status"]) for r in rows] == [
            (LIVE, "cancelled"), (drill.namespace, "assigned")]
        drill_events = await consume_events(kafka_bootstrap, drill.namespace,
                                            "supplies.requests", count=2)
        assert {str(e.payload.request_id) for e in drill_events} == {
            answers[drill.namespace]["request_id"]}
    finally:
        await pool.close()


async def _same_in_listing(running: Running, settings: Settings, request_id: str) -> None:
    status, listing = await running.get("/v1/supplies/requests", HQ)
    assert status == 200
    assert [r["request_id"] for r in listing["requests"]] == [request_id], settings.namespace


async def _all_sent(pool: asyncpg.Pool) -> bool:
    return not await pool.fetchval("select count(*) from outbox where sent_at is null")
