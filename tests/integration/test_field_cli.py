"""The field CLI: an input is kept locally until intake acknowledges it, never lost or doubled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from infra.embedded.processes import free_port
from schemas.topics import qualified
from services.common.auth import Role
from services.field_client.cli import household_qr_text
from tests.support import (
    SHELTER,
    Running,
    make_settings,
    read_topic,
    start_intake,
    token,
    wait_for,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def running(kafka_bootstrap: str, database_url: str, namespace: str,
                  db_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    """Intake for one test."""
    async for r in start_intake(make_settings(kafka_bootstrap, database_url, namespace),
                                db_pool):
        yield r


async def sonae(outbox: Path, url: str, *args: str, role: Role = Role.FIELD
                ) -> tuple[int, str]:
    """Run `sonae ARGS` as a real process; return its exit status and combined output."""
    env = {**os.environ, "SONAE_FIELD_OUTBOX": str(outbox), "SONAE_INTAKE_URL": url,
           "SONAE_TOKEN": token(role, "kanda-team-1")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sonae.cli", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


REPORT = ("report", "--category", "fire", "--severity", "4", "--lat", "35.69282",
          "--lon", "139.7658", "--text", "神田司町で火災")


def entries(outbox: Path) -> list[dict[str, object]]:
    """The CLI's outbox file."""
    return [json.loads(line) for line in outbox.read_text().splitlines() if line.strip()]


async def reports_on_topic(running: Running) -> list[dict[str, object]]:
    """The report events published so far (once the outbox is drained)."""
    await wait_for(lambda: _drained(running), what="outbox drained")
    records = await read_topic(running.settings,
                               qualified("reports", running.settings.namespace))
    return [json.loads(r.value) for r in records if r.value]


async def _drained(running: Running) -> bool:
    return await running.backlog() == 0


async def test_report_is_acknowledged_once(running: Running, tmp_path: Path) -> None:
    """`sonae report` queues, sends and records the acknowledgement; one report on the topic."""
    outbox = tmp_path / "outbox.jsonl"
    status, out = await sonae(outbox, running.url, *REPORT)
    assert status == 0, out
    assert "acknowledged report" in out
    [entry] = entries(outbox)
    assert entry["status"] == "acknowledged"
    status, out = await sonae(outbox, running.url, "report", "--pending")
    assert (status, out.strip()) == (0, "nothing pending")
    events = await reports_on_topic(running)
    assert sorted(e["type"] for e in events) == ["report.accepted", "report.submitted"]

    status, out = await sonae(outbox, running.url, "shelter-status", SHELTER, "open",
                              "--capacity", "200", role=Role.SHELTER_STAFF)
    assert status == 0, out


async def test_unreachable_intake_keeps_the_report_pending(running: Running,
                                                           tmp_path: Path) -> None:
    """With intake unreachable the report stays pending and is listed; a flush delivers it."""
    outbox = tmp_path / "outbox.jsonl"
    dead = f"http://127.0.0.1:{free_port()}"
    status, out = await sonae(outbox, dead, *REPORT, "--attempts", "1")
    assert status == 75, out
    [entry] = entries(outbox)
    assert entry["status"] == "pending"
    status, out = await sonae(outbox, dead, "report", "--pending")
    assert status == 0 and str(entry["id"]) in out

    status, out = await sonae(outbox, running.url, "report", "--flush")
    assert status == 0, out
    assert f"acknowledged report {entry['id']}" in out
    assert entries(outbox)[0]["status"] == "acknowledged"
    events = await reports_on_topic(running)
    assert {e["payload"]["client_report_id"] for e in events if e["type"] ==  # type: ignore[index]
            "report.submitted"} == {entry["id"]}


@contextlib.asynccontextmanager
async def reply_dropping_proxy(target_port: int) -> AsyncIterator[str]:
    """A TCP proxy that forwards requests but cuts the connection when the reply starts."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)

        async def pump() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        pumping = asyncio.create_task(pump())
        try:
            await up_reader.read(1)  # intake has answered, so it has committed
        finally:
            pumping.cancel()
            writer.close()
            up_writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_lost_reply_resend_is_200_not_a_second_report(running: Running,
                                                            tmp_path: Path) -> None:
    """When replies are lost the CLI resends the same id; intake answers 200 and no
    second report is ever created."""
    outbox = tmp_path / "outbox.jsonl"
    port = int(running.url.rsplit(":", 1)[1])
    async with reply_dropping_proxy(port) as flaky:
        status, out = await sonae(outbox, flaky, *REPORT, "--attempts", "2")
    assert status == 75, out
    [entry] = entries(outbox)
    assert entry["status"] == "pending" and entry["attempts"] == 2

    status, out = await sonae(outbox, running.url, "report", "--flush")
    assert status == 0, out
    assert "(intake already had it)" in out  # a 200, not a second 202
    events = await reports_on_topic(running)
    assert sorted(e["type"] for e in events) == ["report.accepted", "report.submitted"]
    async with running.pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from report_status") == 1


# --- households ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def forwarder(port: int, target_port: int) -> AsyncIterator[None]:
    """Listen on ``port`` (where intake was unreachable) and forward to intake: intake is
    back at the address the client was given."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            finally:
                sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def household_events(running: Running) -> list[dict[str, object]]:
    """The household events on shelters.updates (once the outbox is drained)."""
    await wait_for(lambda: _drained(running), what="outbox drained")
    records = await read_topic(running.settings,
                               qualified("shelters.updates", running.settings.namespace))
    return [e for e in (json.loads(r.value) for r in records if r.value)
            if str(e["type"]).startswith("shelter.household_")]


async def test_a_check_in_made_offline_arrives_once_when_intake_is_back(
        running: Running, tmp_path: Path) -> None:
    """With intake down the code is printed and the check-in (and a check-out after it)
    kept; when intake is back at the same address, each is delivered once, in order."""
    outbox = tmp_path / "outbox.jsonl"
    port = free_port()
    down = f"http://127.0.0.1:{port}"
    status, out = await sonae(outbox, down, "checkin", SHELTER, "--size", "3",
                              "--need", "infant", "--name", "山田", "--attempts", "1",
                              role=Role.SHELTER_STAFF)
    assert status == 75, out
    code = out.split("household code: ", 1)[1].split()[0]
    assert f"household code: {code}\n{household_qr_text(code)}" in out  # its QR under it
    [entry] = entries(outbox)
    assert entry["status"] == "pending" and entry["body"]["household_code"] == code  # type: ignore[index]
    status, out = await sonae(outbox, down, "checkout", SHELTER, code.lower(),
                              "--attempts", "1", role=Role.SHELTER_STAFF)
    assert status == 75, out

    async with forwarder(port, int(running.url.rsplit(":", 1)[1])):
        status, out = await sonae(outbox, down, "report", "--flush", role=Role.SHELTER_STAFF)
        assert status == 0, out
        assert f"acknowledged checkin {entry['id']} {code}" in out
        status, out = await sonae(outbox, down, "report", "--flush", role=Role.SHELTER_STAFF)
        assert status == 0 and "acknowledged" not in out, out  # nothing left to send
    assert [e["status"] for e in entries(outbox)] == ["acknowledged", "acknowledged"]

    events = await household_events(running)
    assert [e["type"] for e in events] == ["shelter.household_checked_in",
                                           "shelter.household_checked_out"]
    assert {e["payload"]["household_code"] for e in events} == {code}  # type: ignore[index]
    async with running.pool.acquire() as conn:
        assert await conn.fetchval("select checked_in from households where "
                                   "household_code = $1", code) is False


@contextlib.asynccontextmanager
async def fake_intake(statuses: dict[str, int]) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP server answering each path's last segment with a fixed status; yields its URL
    and the paths it was sent, in order."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        status = statuses[request.path.rsplit("/", 1)[1]]
        return web.json_response({"status": "x", "message": "test", "event_id": "e"},
                                 status=status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_a_check_out_waits_for_its_pending_check_in(tmp_path: Path) -> None:
    """While a household's check-in is still pending, its check-out is not sent (it would be
    refused for good); another household's command goes on."""
    outbox = tmp_path / "outbox.jsonl"
    dead = f"http://127.0.0.1:{free_port()}"
    for args in (("checkin", SHELTER, "--size", "2", "--code", "7K3M9QXD"),
                 ("checkout", SHELTER, "7K3M9QXD"), ("checkout", SHELTER, "0000AAAA")):
        status, out = await sonae(outbox, dead, *args, "--attempts", "1",
                                  role=Role.SHELTER_STAFF)
        assert status == 75, out
    async with fake_intake({"households": 503, "checkout": 202}) as (url, seen):
        status, out = await sonae(outbox, url, "report", "--flush", "--attempts", "1",
                                  role=Role.SHELTER_STAFF)
    assert status == 75, out
    assert seen == [f"/v1/shelters/{SHELTER}/households",
                    f"/v1/shelters/{SHELTER}/households/0000AAAA/checkout"]
    assert [e["status"] for e in entries(outbox)] == ["pending", "pending", "acknowledged"]


async def test_at_home_household_is_kept_until_acknowledged_and_appears_once(
        running: Running, tmp_path: Path) -> None:
    """`sonae at-home` offline stays pending; a flush delivers it once, via field."""
    outbox = tmp_path / "outbox.jsonl"
    dead = f"http://127.0.0.1:{free_port()}"
    args = ("at-home", "kanda-koen", "4", "--need", "water", "--need", "medical_power",
            "--contact", "03-1111-2222")
    status, out = await sonae(outbox, dead, *args, "--attempts", "1")
    assert status == 75, out
    [entry] = entries(outbox)
    assert entry["status"] == "pending" and entry["kind"] == "at_home"
    status, out = await sonae(outbox, running.url, "report", "--flush")
    assert status == 0, out
    status, out = await sonae(outbox, running.url, "report", "--flush")
    assert (status, out.strip()) == (0, "")  # nothing left to send
    await wait_for(lambda: _drained(running), what="outbox drained")
    records = await read_topic(running.settings,
                               qualified("people.athome", running.settings.namespace))
    [event] = [json.loads(r.value) for r in records if r.value]
    assert event["type"] == "people.at_home_reported"
    assert event["payload"]["via"] == "field" and event["payload"]["size"] == 4
    assert event["payload"]["reported_by"]["team"] == "kanda-team-1"
    # An area the region does not have: refused for good, naming the field.
    status, out = await sonae(outbox, running.url, "at-home", "atlantis", "2")
    assert status == 1 and "/area_id" in out, out
