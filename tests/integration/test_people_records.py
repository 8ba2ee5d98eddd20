"""People and supplies in the recorder against the real broker and PostgreSQL: the
projections HQ reads, `sonae people purge`, and exports that mark personal data."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from infra.topics import ensure_topics
from schemas.envelope import Envelope
from schemas.events import decode_event
from schemas.examples import example
from services.recorder.errors import PurgeBeforeInFuture
from services.recorder.export import PersonalTally, Window, export_window
from services.recorder.purge import purge_personal_data
from tests.support import produce_events, schema_dsn, wait_for
from tests.support.recorder import (
    at,
    migrate_pool,
    recorder_settings,
    running_recorder,
    store_directly,
    stored_count,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 9, 30, tzinfo=UTC)  # after every event of these tests
CUT = 50  # seconds after T0: the purge's --before


def event(event_type: str, seconds: float, **payload: Any) -> Envelope:
    """The example of ``event_type`` at ``seconds`` with a fresh id and ``payload`` changes."""
    base = example(event_type)
    return base.model_copy(update={
        "event_id": uuid.uuid4(), "occurred_at": at(seconds),
        "payload": type(base.payload).model_validate({**base.payload.model_dump(), **payload})})


def people_story() -> list[Envelope]:
    """Households, at-home residents, a supply request and a generator, before and after CUT."""
    staff = {"team": "区立スポーツセンター 避難所運営班", "name": "佐藤"}
    request_id = uuid.uuid4()
    home_early, home_late = uuid.uuid4(), uuid.uuid4()
    return [
        event("shelter.household_checked_in", 0, household_code="AAAA0001", name="Smith",
              contact="090-1111-1111", reported_by=staff),
        event("shelter.household_checked_in", 10, household_code="AAAA0002", size=2,
              needs=["wheelchair"], name="Tanaka", contact=None, language=None),
        event("shelter.household_checked_out", 20, shelter_id="e1310100006201",
              household_code="AAAA0002", transferred_to=None, reported_by=staff),
        event("shelter.household_checked_in", 100, household_code="AAAA0003", size=4,
              name="Suzuki", contact="090-3333-3333"),
        event("people.at_home_reported", 5, household_id=home_early),
        event("people.welfare_checked", 30, household_id=home_early),
        event("people.at_home_reported", 110, household_id=home_late, area_id="fujimi",
              size=1, needs=["food"], note="2階", address="富士見一丁目"),
        event("supply.requested", 0, request_id=request_id,
              requested_by={"team": "区立スポーツセンター 避難所運営班", "name": "高橋"}),
        event("supply.assigned", 60, request_id=request_id),
        event("supply.dispatched", 120, request_id=request_id),
        event("supply.received", 600, request_id=request_id),
        event("generator.registered", 0),
        event("generator.status_reported", 40,
              reported_by={"team": "神田司町二丁目町会", "name": "山田"}),
    ]


async def test_people_and_supplies_events_fill_the_projections_hq_reads(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """Events read from their topics by the recorder give households per shelter, at-home
    counts per area, a request received with its step times, a generator's state."""
    await migrate_pool(db_pool)
    settings = recorder_settings(kafka_bootstrap, schema_dsn(database_url, db_schema), namespace)
    await ensure_topics(settings)
    story = people_story()
    async with running_recorder(settings):
        await produce_events(kafka_bootstrap, namespace, story)
        await produce_events(kafka_bootstrap, namespace, story[:3])  # a redelivery

        async def all_stored() -> bool:
            return await stored_count(db_pool) == len(story)

        await wait_for(all_stored, timeout=30, what="every people and supplies event stored")
        await wait_for(lambda: _supply_status(db_pool), timeout=30, what="the request folded")
    households = {r["household_code"]: r for r in await db_pool.fetch(
        "select namespace, household_code, status, size, needs, name from households_current "
        "where shelter_id = 'e1310100006201'")}
    assert {code: (r["status"], r["size"]) for code, r in households.items()} == {
        "AAAA0001": ("in", 3), "AAAA0002": ("out", 2), "AAAA0003": ("in", 4)}
    assert households["AAAA0002"]["needs"] == ["wheelchair"]
    assert {r["namespace"] for r in households.values()} == {namespace}
    areas = {r["area_id"]: dict(r) for r in await db_pool.fetch(
        "select area_id, households, people, water, medical_power, welfare_check, "
        "welfare_pending, food from at_home_areas where namespace = $1", namespace)}
    assert areas["kanda-koen"] == {"area_id": "kanda-koen", "households": 1, "people": 2,
                                   "water": 1, "medical_power": 1, "welfare_check": 1,
                                   "welfare_pending": 0, "food": 0}
    assert (areas["fujimi"]["people"], areas["fujimi"]["food"]) == (1, 1)
    request = await db_pool.fetchrow(
        "select status, requested_at, assigned_at, dispatched_at, received_at, site_id, "
        "lines from supply_requests_current")
    assert request is not None
    assert request["status"] == "received"
    assert [request[c] for c in ("requested_at", "assigned_at", "dispatched_at",
                                 "received_at")] == [at(0), at(60), at(120), at(600)]
    assert json.loads(request["lines"])[0] == {"item": "water", "quantity": 600,
                                               "note": "2 L ペットボトル"}
    generator = await db_pool.fetchrow(
        "select owner, state, fuel_hours_left, lat, lon from generators_current")
    assert generator is not None
    assert tuple(generator) == ("神田司町二丁目町会", "fuel_low", 0.5, 35.693, 139.768)


async def _supply_status(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval(
        "select status = 'received' from supply_requests_current"))


async def _envelopes(pool: asyncpg.Pool) -> dict[uuid.UUID, dict[str, Any]]:
    return {r["event_id"]: json.loads(r["envelope"]) for r in await pool.fetch(
        "select event_id, envelope::text as envelope from events")}


async def _counts(pool: asyncpg.Pool, namespace: str) -> list[Any]:
    """Everything a purge must keep: the counts and sizes HQ reads."""
    return [
        [tuple(r) for r in await pool.fetch(
            "select shelter_id, household_code, status, size, needs from households_current "
            "order by 1, 2")],
        [tuple(r) for r in await pool.fetch(
            "select * from at_home_areas where namespace = $1 order by area_id", namespace)],
        [tuple(r) for r in await pool.fetch(
            "select status, site_id, lines::text from supply_requests_current")],
    ]


async def purge(pool: asyncpg.Pool, namespace: str, *, dry_run: bool = False) -> Any:
    async with pool.acquire() as conn:
        return await purge_personal_data(conn, namespace=namespace, before=at(CUT), now=NOW,
                                         dry_run=dry_run)


async def test_purge_removes_personal_fields_before_t_keeps_them_after_and_keeps_counts(
    db_pool: asyncpg.Pool, namespace: str,
) -> None:
    """Names, contacts, addresses, notes and reporters' names go for events before T, in the
    store, the projections and intake's sent outbox; later events and every count stay."""
    await migrate_pool(db_pool)
    story = people_story()
    await store_directly(db_pool, namespace, story)
    checked_in = story[0]
    await db_pool.execute(
        "insert into outbox (namespace, topic, key, value, event_id, event_type, sent_at) "
        "values ($1, 'shelters.updates', null, $2, $3, $4, now())",
        namespace, json.dumps(checked_in.model_dump(mode="json")).encode(),
        checked_in.event_id, checked_in.type)
    counts = await _counts(db_pool, namespace)
    before = await _envelopes(db_pool)

    result = await purge(db_pool, namespace)

    assert result.events == {"shelter.household_checked_in": 2,
                             "shelter.household_checked_out": 1,
                             "people.at_home_reported": 1, "people.welfare_checked": 1,
                             "supply.requested": 1, "generator.status_reported": 1}
    assert result.tables == {"households_current (name, contact)": 2,
                             "at_home_current (contact, address, note)": 1,
                             "at_home_current (welfare_note)": 1,
                             "outbox (sent envelopes)": 1}
    after = await _envelopes(db_pool)
    early, early_tanaka, late = (after[story[i].event_id]["payload"] for i in (0, 1, 3))
    assert (early["name"], early["contact"], early["reported_by"]) == (
        None, None, {"team": "区立スポーツセンター 避難所運営班", "name": None})
    assert (early["size"], early["needs"]) == (3, ["infant", "language"])
    assert early_tanaka["name"] is None
    assert (late["name"], late["contact"]) == ("Suzuki", "090-3333-3333")
    home = after[story[4].event_id]["payload"]
    assert (home["contact"], home["address"], home["note"], home["size"]) == (None, None, "", 2)
    assert after[story[6].event_id]["payload"]["address"] == "富士見一丁目"
    assert after[story[7].event_id]["payload"]["requested_by"]["name"] is None
    assert after[story[12].event_id]["payload"]["reported_by"]["name"] is None
    for event_id, envelope in after.items():
        decode_event(json.dumps(envelope))  # every purged event still decodes
        if event_id not in {story[i].event_id for i in (0, 1, 2, 4, 5, 7, 12)}:
            assert envelope == before[event_id]
    assert await _counts(db_pool, namespace) == counts
    names = {r["household_code"]: (r["name"], r["contact"]) for r in await db_pool.fetch(
        "select household_code, name, contact from households_current")}
    assert names == {"AAAA0001": (None, None), "AAAA0002": (None, None),
                     "AAAA0003": ("Suzuki", "090-3333-3333")}
    outbox = json.loads(await db_pool.fetchval("select value from outbox"))
    assert outbox["payload"]["name"] is None and outbox["payload"]["size"] == 3

    again = await purge(db_pool, namespace)
    assert (again.events, again.tables, again.total) == ({}, {}, 0)
    assert await _envelopes(db_pool) == after


async def test_a_dry_run_reports_what_a_purge_would_do_and_changes_nothing(
    db_pool: asyncpg.Pool, namespace: str,
) -> None:
    """The dry run's counts are the real run's, and the database is as it was."""
    await migrate_pool(db_pool)
    await store_directly(db_pool, namespace, people_story())
    before = await _envelopes(db_pool)
    projection = [tuple(r) for r in await db_pool.fetch(
        "select household_code, name, contact from households_current order by 1")]

    dry = await purge(db_pool, namespace, dry_run=True)

    assert dry.dry_run and dry.total == 11
    assert await _envelopes(db_pool) == before
    assert [tuple(r) for r in await db_pool.fetch(
        "select household_code, name, contact from households_current order by 1")] == projection
    real = await purge(db_pool, namespace)
    assert (real.events, real.tables) == (dry.events, dry.tables)


async def test_a_purge_touches_only_its_namespace_and_intake_households_before_t(
    db_pool: asyncpg.Pool, namespace: str,
) -> None:
    """A drill's purge leaves live data alone; intake's households table (migration 0010)
    is purged by its check-in time, keeping size and needs."""
    await migrate_pool(db_pool)
    drill = f"{namespace}d"
    await store_directly(db_pool, namespace, people_story()[:1])
    await store_directly(db_pool, drill, people_story()[:1])
    result = await purge(db_pool, drill)
    assert result.events == {"shelter.household_checked_in": 1}
    live = await db_pool.fetchval(
        "select envelope #>> '{payload,name}' from events where namespace = $1", namespace)
    assert live == "Smith"

    await db_pool.execute(
        "insert into households (namespace, household_code, shelter_id, size, needs, name, "
        "contact, checked_in, checked_in_at) values "
        "($1, 'AAAA0001', 'e1310100006201', 3, '{infant}', 'Smith', '090', true, $2), "
        "($1, 'AAAA0003', 'e1310100006201', 4, '{}', 'Suzuki', '080', true, $3), "
        "($4, 'AAAA0001', 'e1310100006201', 3, '{}', 'Smith', '090', true, $2)",
        namespace, at(0), at(100), drill)
    result = await purge(db_pool, namespace)
    assert result.tables["households (name, contact)"] == 1
    rows = {(r["namespace"], r["household_code"]): (r["name"], r["contact"], r["size"],
                                                     r["needs"])
            for r in await db_pool.fetch("select * from households")}
    assert rows == {(namespace, "AAAA0001"): (None, None, 3, ["infant"]),
                    (namespace, "AAAA0003"): ("Suzuki", "080", 4, []),
                    (drill, "AAAA0001"): ("Smith", "090", 3, [])}


async def test_a_purge_before_a_future_time_is_refused_and_changes_nothing(
    db_pool: asyncpg.Pool, namespace: str,
) -> None:
    """--before after now is refused with an error naming it."""
    await migrate_pool(db_pool)
    await store_directly(db_pool, namespace, people_story()[:1])
    async with db_pool.acquire() as conn:
        with pytest.raises(PurgeBeforeInFuture, match="in the future"):
            await purge_personal_data(conn, namespace=namespace, before=NOW + timedelta(1),
                                      now=NOW)
    assert await db_pool.fetchval("select envelope #>> '{payload,name}' from events") == "Smith"


async def test_an_export_marks_the_events_holding_personal_data(
    db_pool: asyncpg.Pool, namespace: str,
) -> None:
    """The tally counts exported events with personal values per type; without_personal
    blanks them in the file, whose lines still decode."""
    await migrate_pool(db_pool)
    await store_directly(db_pool, namespace, people_story())
    window = Window(namespace=namespace)
    tally, out = PersonalTally(), io.BytesIO()
    async with db_pool.acquire() as conn:
        count = await export_window(conn, window, out, personal=tally)
    assert count == 13
    assert tally.events == {"shelter.household_checked_in": 3,
                            "shelter.household_checked_out": 1,
                            "people.at_home_reported": 2, "people.welfare_checked": 1,
                            "supply.requested": 1, "generator.status_reported": 1}
    manifest = tally.manifest(window, exported=count, file="x.jsonl")
    assert manifest["personal_fields"]["shelter.household_checked_in"] == [
        "/payload/contact", "/payload/name", "/payload/reported_by/name"]
    assert manifest["personal_data_removed"] is False
    assert b"Suzuki" in out.getvalue()

    blank, out = PersonalTally(), io.BytesIO()
    async with db_pool.acquire() as conn:
        await export_window(conn, window, out, personal=blank, without_personal=True)
    lines = [decode_event(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 13 and blank.removed and blank.events == tally.events
    for word in (b"Suzuki", b"Smith", "富士見".encode(), "山田".encode()):
        assert word not in out.getvalue()


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """``python -m sonae.cli ARGS`` as a real process: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sonae.cli", *args, cwd=ROOT, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_people_purge_and_export_on_the_command_line(
    database_url: str, db_schema: str, db_pool: asyncpg.Pool, namespace: str, tmp_path: Path,
) -> None:
    """`sonae people purge` refuses a future --before, dry-runs, purges, then finds nothing,
    and defaults to the retention setting; `sonae events export -o` writes the
    personal-data manifest beside the file."""
    await migrate_pool(db_pool)
    await store_directly(db_pool, namespace, people_story())
    env = {"SONAE_DATABASE_URL": schema_dsn(database_url, db_schema),
           "SONAE_NAMESPACE": namespace}
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()

    code, _, err = await run_cli("people", "purge", "--before", future, env=env)
    assert code == 2 and "--before" in err and "in the future" in err

    code, _, err = await run_cli("people", "purge", env=env)
    assert code == 2 and "SONAE_PEOPLE_RETENTION_DAYS" in err

    output = tmp_path / "window.jsonl"
    code, _, err = await run_cli("events", "export", "-o", str(output), env=env)
    assert code == 0, err
    assert "9 exported events hold personal data" in err
    manifest = json.loads((tmp_path / "window.jsonl.personal.json").read_text("utf-8"))
    assert manifest["events"] == 13
    assert manifest["events_with_personal_data"]["shelter.household_checked_in"] == 3

    cut = at(CUT).isoformat()
    code, out, err = await run_cli("people", "purge", "--before", cut, "--dry-run", env=env)
    assert code == 0, err
    assert "would purge" in out and "events shelter.household_checked_in: 2 rows" in out
    assert await db_pool.fetchval(
        "select count(*) from households_current where name is not null") == 3

    code, out, err = await run_cli("people", "purge", "--before", cut, env=env)
    assert code == 0, err
    assert "events shelter.household_checked_in: 2 rows" in out and "total: 11 rows" in out
    assert await db_pool.fetchval(
        "select count(*) from households_current where name is not null") == 1

    code, out, err = await run_cli("people", "purge", "--before", cut, env=env)
    assert code == 0, err
    assert "total: 0 rows" in out

    # Without --before: now minus the retention setting, past every event here.
    code, out, err = await run_cli("people", "purge",
                                   env={**env, "SONAE_PEOPLE_RETENTION_DAYS": "30"})
    assert code == 0, err
    assert "events shelter.household_checked_in: 1 rows" in out
    assert await db_pool.fetchval(
        "select count(*) from households_current where name is not null") == 0
