"""The gateway against the real broker: snapshots, deltas, resume, backpressure, hardening."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime
from typing import Any

import asyncpg
import jwt
import pytest
from aiokafka.structs import TopicPartition
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as sync_connect

from infra.db.migrate import migrate
from infra.kafka import clients
from infra.kafka.compat import end_offsets
from infra.settings import Settings
from schemas.envelope import Envelope, new_event
from schemas.evacuation import EvacuationCommand
from schemas.topics import qualified
from services.common.auth import Role
from services.gateway.hub import OVERLOAD
from services.gateway.positions import COP_TOPICS
from tests.support import consume_events, produce_events, wait_for
from tests.support.gateway import (
    SECRET,
    fresh,
    gateway,
    gateway_settings,
    peer,
    report,
    token,
)

pytestmark = pytest.mark.integration

HQ = token(Role.HQ)


def report_ids(messages: list[dict[str, object]]) -> list[str]:
    """Ids of reports set by the delta messages, in order."""
    return [c["id"] for m in messages if m["type"] == "delta"  # type: ignore[index]
            for c in m["changes"] if c["kind"] == "report"]  # type: ignore[attr-defined]


async def test_snapshot_carries_the_log_then_deltas_follow(kafka_bootstrap: str,
                                                            namespace: str) -> None:
    """A new client gets the picture so far with a position, then ordered deltas."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    first = report()
    await produce_events(kafka_bootstrap, namespace, [first])
    async with gateway(settings) as gw, peer(gw, token=HQ) as hq:
        welcome = await hq.next()
        assert welcome["type"] == "welcome" and welcome["role"] == "hq"
        snapshot = await hq.next()
        assert snapshot["type"] == "snapshot" and snapshot["position"]
        assert str(first.payload.report_id) in snapshot["state"]["report"]
        later = [report() for _ in range(3)]
        await produce_events(kafka_bootstrap, namespace, later)
        await hq.until(lambda m: len(report_ids(hq.messages)) >= 3)
        assert sorted(report_ids(hq.messages)) == sorted(str(r.payload.report_id) for r in later)


async def test_changes_fetched_together_leave_in_one_write_in_order(kafka_bootstrap: str,
                                                                    namespace: str) -> None:
    """Deltas folded in one turn reach a client as frames of a single socket write."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    async with gateway(settings) as gw, peer(gw, token=HQ) as hq:
        await hq.until(lambda m: m["type"] == "snapshot")
        (client,) = gw.hub.clients
        transport = client.ws.transport
        writes: list[int] = []
        real_write = transport.write

        def counting_write(data: bytes | bytearray | memoryview) -> None:
            writes.append(len(data))
            real_write(data)

        transport.write = counting_write  # type: ignore[method-assign]
        later = [report() for _ in range(20)]
        await produce_events(kafka_bootstrap, namespace, later)
        await hq.until(lambda m: len(report_ids(hq.messages)) >= len(later))
        assert report_ids(hq.messages) == [str(r.payload.report_id) for r in later]
        # One produce batch is fetched in one or two batches; each is written at once.
        assert 1 <= len(writes) <= len(later) // 2, writes


async def test_a_connection_that_fails_to_write_is_dropped_and_others_get_everything(
        kafka_bootstrap: str, namespace: str) -> None:
    """A write error on one client's socket closes that one; the flush goes on for the rest."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    async with gateway(settings) as gw, peer(gw, token=HQ) as broken, \
            peer(gw, token=HQ) as healthy:
        await broken.until(lambda m: m["type"] == "snapshot")
        await healthy.until(lambda m: m["type"] == "snapshot")
        for client in gw.hub.clients:
            if client.ws.remote_address == broken.ws.local_address:

                def failing_write(data: bytes | bytearray | memoryview) -> None:
                    raise OSError("injected write failure")

                client.ws.transport.write = failing_write  # type: ignore[method-assign]
        later = [report() for _ in range(5)]
        await produce_events(kafka_bootstrap, namespace, later)
        await healthy.until(lambda m: len(report_ids(healthy.messages)) >= len(later))
        assert report_ids(healthy.messages) == [str(r.payload.report_id) for r in later]
        with pytest.raises(ConnectionClosed):
            while True:
                await broken.next(timeout=10)
        await wait_for(lambda: len(gw.hub.clients) == 1, what="the broken client detached")


async def test_reconnect_gets_exactly_the_missed_deltas_also_on_another_gateway(
        kafka_bootstrap: str, namespace: str) -> None:
    """Resuming from a position replays only what was missed, here and on a second gateway."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    async with gateway(settings) as gw:
        async with peer(gw, token=HQ) as hq:
            await hq.until(lambda m: m["type"] == "snapshot")
            await produce_events(kafka_bootstrap, namespace, [report()])
            await hq.until(lambda m: m["type"] == "delta")
            position, state = hq.position, hq.state
        missed = [report(area=a) for a in ("kanda-koen", "jimbocho", "fujimi", "izumibashi")]
        await produce_events(kafka_bootstrap, namespace, missed)
        await wait_for(lambda: gw.hub.applied >= 5, what="gateway applied the missed reports")
        wanted = sorted(str(r.payload.report_id) for r in missed)

        async with peer(gw, token=HQ, position=position) as again:
            welcome = await again.next()
            assert welcome["resume"] == "exact"
            again.state = json.loads(json.dumps(state))
            await again.until(lambda m: len(report_ids(again.messages)) >= 4)
            await again.send({"type": "ping", "id": "p1"})
            await again.until(lambda m: m["type"] == "pong")
            assert sorted(report_ids(again.messages)) == wanted  # no gap, no duplicate

        async with gateway(settings) as other, peer(other, token=HQ, position=position) as moved:
            welcome = await moved.next()
            assert welcome["resume"] == "exact"
            moved.state = json.loads(json.dumps(state))
            await moved.until(lambda m: len(report_ids(moved.messages)) >= 4)
            await moved.send({"type": "ping", "id": "p2"})
            await moved.until(lambda m: m["type"] == "pong")
            assert sorted(report_ids(moved.messages)) == wanted
            assert moved.state["report"] == again.state["report"]


async def test_foreign_or_garbled_position_gets_a_snapshot(kafka_bootstrap: str,
                                                           namespace: str) -> None:
    """A position from another log (another namespace's epoch) or garbage yields a snapshot."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    await produce_events(kafka_bootstrap, namespace, [report()])
    other_ns = namespace + "x"
    await produce_events(kafka_bootstrap, other_ns, [report()])
    async with gateway(gateway_settings(kafka_bootstrap, other_ns)) as elsewhere, \
            peer(elsewhere, token=HQ) as p:
        await p.until(lambda m: m["type"] == "snapshot")
        foreign = p.position
    async with gateway(settings) as gw:
        for position in (foreign, "not-a-position"):
            async with peer(gw, token=HQ, position=position) as p:
                assert (await p.next())["resume"] == "snapshot"
                assert (await p.next())["type"] == "snapshot"


def read_until(url: str, hello: dict[str, object], last_id: str,
               ready: threading.Event) -> int:
    """In a thread of its own (a client that is not slowed by the server's loop): count
    messages until the report ``last_id`` arrives; fail if the connection closes first."""
    with sync_connect(url) as ws:
        ws.send(json.dumps(hello))
        count = 0
        while True:
            message = json.loads(ws.recv(timeout=60))
            count += 1
            if message["type"] == "snapshot":
                ready.set()
            if message["type"] == "delta" and any(c["id"] == last_id
                                                   for c in message["changes"]):
                return count


async def test_a_client_that_never_reads_is_closed_1013_and_others_keep_up(
        kafka_bootstrap: str, namespace: str) -> None:
    """A stalled client overflows its bounded queue and gets 1013; a reading one gets all."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    big = [report(description="氾濫" * 1000) for _ in range(2000)]
    last = str(big[-1].payload.report_id)
    async with gateway(settings, queue_size=200) as gw, peer(gw, token=HQ) as slow:
        await slow.until(lambda m: m["type"] == "snapshot")
        ready = threading.Event()
        fast = asyncio.create_task(asyncio.to_thread(
            read_until, gw.websocket_url, {"type": "hello", "token": HQ}, last, ready))
        await wait_for(ready.is_set, what="the reading client's snapshot")
        # slow stops reading here: websockets stops reading the socket after a few
        # frames, so the kernel buffers fill, then the server's queue.
        await produce_events(kafka_bootstrap, namespace, big)
        assert await asyncio.wait_for(fast, 90) >= len(big)
        await wait_for(lambda: gw.hub.overflows >= 1, timeout=30, what="the slow client overflows")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await slow.next(timeout=20)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == OVERLOAD
        assert gw.hub.overflows == 1


async def test_malformed_json_is_answered_and_repeated_garbage_closes_1008(
        kafka_bootstrap: str, namespace: str) -> None:
    """Bad JSON gets an error reply and the connection stays; a stream of it closes with 1008."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    async with gateway(settings) as gw, peer(gw) as public:
        await public.until(lambda m: m["type"] == "snapshot")
        await public.ws.send("{not json")
        error = await public.until(lambda m: m["type"] == "error")
        assert error["code"] == "malformed"
        await public.send({"type": "ping", "id": "still-here"})
        assert (await public.until(lambda m: m["type"] == "pong"))["id"] == "still-here"
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(10):
                await public.ws.send("garbage")
            while True:
                await public.next()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_browser_origins_are_checked(kafka_bootstrap: str, namespace: str) -> None:
    """A page from another origin is refused; the dashboard's own origin is admitted."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    async with gateway(settings) as gw:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(gw.websocket_url, origin="http://evil.example"):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
        async with peer(gw, origin=gw.dashboard_url.rstrip("/")) as ok:  # type: ignore[arg-type]
            assert (await ok.next())["type"] == "welcome"


async def test_hq_command_is_produced_with_the_operator_from_the_token(
        kafka_bootstrap: str, namespace: str) -> None:
    """An HQ approve becomes evacuation.command naming the token's subject; field is refused."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    recommendation = fresh("evacuation.recommended")
    await produce_events(kafka_bootstrap, namespace, [recommendation])
    rec_id = str(recommendation.payload.recommendation_id)  # type: ignore[attr-defined]
    async with gateway(settings) as gw:
        async with peer(gw, token=token(Role.FIELD, "kanda-team", areas=("kanda-koen",))) as field:
            await field.until(lambda m: m["type"] == "snapshot")
            assert "recommendation" not in field.state
            await field.send({"type": "command", "id": "c0", "action": "approve",
                              "recommendation_id": rec_id})
            refused = await field.until(lambda m: m["type"] == "error")
            assert (refused["id"], refused["code"]) == ("c0", "forbidden")
        async with peer(gw, token=HQ) as hq:
            await hq.until(lambda m: m["type"] == "snapshot")
            assert hq.state["recommendation"][rec_id]["status"] == "pending"
            await hq.send({"type": "command", "id": "c1", "action": "reject",
                           "recommendation_id": rec_id})
            invalid = await hq.until(lambda m: m["type"] == "error")
            assert invalid["code"] == "invalid" and invalid["errors"][0]["field"] == "reason"
            await hq.send({"type": "command", "id": "c2", "action": "approve",
                           "recommendation_id": rec_id, "operator": "someone-else"})
            assert (await hq.until(lambda m: m["type"] == "error"))["code"] == "invalid"
            await hq.send({"type": "command", "id": "c3", "action": "approve",
                           "recommendation_id": rec_id})
            ack = await hq.until(lambda m: m["type"] == "ack")
            assert ack["id"] == "c3"
            await hq.until(lambda m: m["type"] == "delta" and any(
                c["id"] == rec_id and c["value"]["status"] == "approved" for c in m["changes"]))
    [command] = await consume_events(kafka_bootstrap, namespace, "evacuation.commands", count=1)
    assert isinstance(command, EvacuationCommand)
    assert str(command.event_id) == ack["event_id"]
    assert command.payload.operator == "hq-duty-officer"
    assert command.payload.operator_role == "hq"
    assert str(command.payload.recommendation_id) == rec_id


async def test_views_keep_personal_data_from_the_public_and_other_areas(
        kafka_bootstrap: str, namespace: str) -> None:
    """Public sees no reports; a field team sees its areas' reports without names."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    async with gateway(settings) as gw, peer(gw) as public, \
            peer(gw, token=token(Role.FIELD, "jimbo-team", areas=("jimbocho",))) as field:
        await public.until(lambda m: m["type"] == "snapshot")
        await field.until(lambda m: m["type"] == "snapshot")
        mine, theirs = report(area="jimbocho"), report(area="kanda-koen")
        order = fresh("evacuation.order_issued")
        await produce_events(kafka_bootstrap, namespace, [theirs, mine, order])
        mine_id = str(mine.payload.report_id)
        await public.until(lambda m: "order" in public.state and public.state["order"])
        await field.until(lambda m: mine_id in field.state.get("report", {})
                          and field.state.get("order"))
        raw = json.dumps(public.messages, ensure_ascii=False)
        assert "佐藤" not in raw and "description" not in raw and "casualties" not in raw
        assert list(field.state["report"]) == [mine_id]
        assert field.state["report"][mine_id]["reporter"] == {
            "team": "神田公園地区 防災会"}


async def test_a_field_token_that_names_its_areas_needs_no_areas_in_the_hello(
        kafka_bootstrap: str, namespace: str) -> None:
    """The token's areas claim is the team's areas; a field token without it (one signed
    before team tokens had to carry areas) is refused, since the team would otherwise see
    no area or every area."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    claimed = token(Role.FIELD, "jimbo-team", areas=("jimbocho",))
    async with gateway(settings) as gw, peer(gw, token=claimed) as field:
        welcome = await field.until(lambda m: m["type"] == "welcome")
        assert welcome["own_areas"] == ["jimbocho"] and welcome["areas"] is None
        await field.until(lambda m: m["type"] == "snapshot")
        mine, theirs = report(area="jimbocho"), report(area="kanda-koen")
        await produce_events(kafka_bootstrap, namespace, [theirs, mine])
        mine_id = str(mine.payload.report_id)
        await field.until(lambda m: mine_id in field.state.get("report", {}))
        assert list(field.state["report"]) == [mine_id]
        now = int(datetime.now(UTC).timestamp())
        arealess = jwt.encode({"iss": "sonae", "sub": "nowhere-team", "role": "field",
                               "iat": now, "exp": now + 600, "jti": "j-arealess"},
                              SECRET, algorithm="HS256")
        async with peer(gw, token=arealess, areas=["kanda-koen"]) as lost:
            refused = await lost.until(lambda m: m["type"] == "error")
            assert refused["code"] == "unauthorized" and "areas" in refused["message"]


async def store_log(settings: Settings, pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    """Store what the recorder would of the COP topics: every record with its topic,
    partition and offset; return the rows."""
    namespace = settings.namespace
    consumer = clients.consumer(settings)
    await consumer.start()
    rows = []
    try:
        tps = [TopicPartition(qualified(n, namespace), p) for n in COP_TOPICS for p in range(4)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await end_offsets(consumer, tps)
        while sum(ends.values()) > len(rows):
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                for r in batch:
                    e = json.loads(r.value)
                    rows.append((e["event_id"], e["type"], e["schema_version"], r.topic,
                                 r.partition, r.offset, e["occurred_at"], e["recorded_at"],
                                 e["exercise"], namespace, r.value.decode()))
    finally:
        await consumer.stop()
    async with pool.acquire() as conn:
        await conn.executemany(
            "insert into events (event_id, type, schema_version, topic, partition, \"offset\", "
            "occurred_at, recorded_at, exercise, namespace, envelope) values ($1::uuid, $2, $3, "
            "$4, $5, $6, $7::text::timestamptz, $8::text::timestamptz, $9, $10, $11::jsonb)",
            rows)
    return rows


async def test_cold_start_from_the_event_store_matches_reading_the_broker(
        kafka_bootstrap: str, namespace: str, db_pool: asyncpg.Pool) -> None:
    """Stored events fold to the same picture and position; stale offsets are not trusted."""
    async with db_pool.acquire() as conn:
        await migrate(conn)
    settings = gateway_settings(kafka_bootstrap, namespace)
    events = [report(area=a) for a in ("kanda-koen", "jimbocho", "fujimi")]
    events += [fresh("evacuation.order_issued"), fresh("shelter.status_changed")]
    await produce_events(kafka_bootstrap, namespace, events)
    rows = await store_log(settings, db_pool)
    async with db_pool.acquire() as conn:
        # One partition's newest stored offset points at a different event: not this log.
        # (The gateway checks each partition's newest stored record against the broker.)
        stale_tp = (rows[0][3], rows[0][4])
        stale = max((r for r in rows if (r[3], r[4]) == stale_tp), key=lambda r: r[5])
        await conn.execute("update events set event_id = gen_random_uuid() where event_id = $1",
                           stale[0])
    async with gateway(settings) as plain, gateway(settings, pool=db_pool) as seeded:
        assert seeded.source.seeded_events == len(rows) - 1 - sum(
            1 for r in rows if (r[3], r[4]) == (stale[3], stale[4]) and r[0] != stale[0])
        assert seeded.hub.position() == plain.hub.position()
        assert seeded.hub.cop.entities == plain.hub.cop.entities


async def test_field_report_over_the_socket_goes_to_intake(kafka_bootstrap: str,
                                                            namespace: str) -> None:
    """A field report is forwarded with the team's token; intake's answer comes back."""
    seen: list[tuple[str, object]] = []

    class Intake:
        async def submit(self, tok: str, body: object) -> tuple[int, object]:
            seen.append((tok, body))
            if isinstance(body, dict) and body.get("severity") == 9:
                return 422, {"error": "invalid", "message": "1 problem",
                             "errors": [{"pointer": "/severity", "message": "too big",
                                         "code": "invalid"}]}
            return 202, {"status": "accepted", "report_id": "r"}

    settings = gateway_settings(kafka_bootstrap, namespace)
    field_token = token(Role.FIELD, "kanda-team", areas=("kanda-koen",))
    async with gateway(settings, reports=Intake()) as gw, \
            peer(gw, token=field_token, areas=["kanda-koen"]) as field, peer(gw) as public:
        await field.until(lambda m: m["type"] == "snapshot")
        await field.send({"type": "report", "id": "r1", "report": {"severity": 3}})
        ack = await field.until(lambda m: m["type"] in ("ack", "error"))
        assert ack == {"type": "ack", "id": "r1", "status": 202,
                       "result": {"status": "accepted", "report_id": "r"}}
        await field.send({"type": "report", "id": "r2", "report": {"severity": 9}})
        error = await field.until(lambda m: m["type"] in ("ack", "error"))
        assert error["code"] == "invalid" and error["errors"][0]["pointer"] == "/severity"
        assert seen[0] == (field_token, {"severity": 3})
        await public.until(lambda m: m["type"] == "snapshot")
        await public.send({"type": "report", "id": "r3", "report": {}})
        assert (await public.until(lambda m: m["type"] == "error"))["code"] == "forbidden"
        assert len(seen) == 2


async def test_exercise_events_never_turn_a_live_portal_into_a_drill(
        kafka_bootstrap: str, namespace: str, db_pool: asyncpg.Pool) -> None:
    """Outside a drill, exercise events reach HQ as exercise only, also after a cold start."""
    async with db_pool.acquire() as conn:
        await migrate(conn)
    settings = gateway_settings(kafka_bootstrap, namespace)
    drills = [exercised("evacuation.order_issued"), exercised("hazard.warning")]
    real = report()
    await produce_events(kafka_bootstrap, namespace, [*drills, real])
    await store_log(settings, db_pool)
    async with gateway(settings, pool=db_pool) as gw:
        assert gw.source.seeded_events == 3  # folded from the store
        async with peer(gw) as public, peer(gw, token=HQ) as hq:
            for client in (public, hq):
                await client.next()
            public_state = (await public.next())["state"]
            hq_state = (await hq.next())["state"]
    assert public_state["meta"] == {"cop": {"exercise": False}}
    assert public_state["order"] == {} and "exercise" not in public_state
    assert all(a["level"] is None for a in public_state["area"].values())
    assert hq_state["order"] == {} and hq_state["warning"] == {}
    assert set(hq_state["exercise"]) == {str(e.event_id) for e in drills}
    assert all(entry["exercise"] for entry in hq_state["exercise"].values())
    assert str(real.payload.report_id) in hq_state["report"]


async def test_a_drill_gateway_shows_the_drill_banner_from_the_start(
        kafka_bootstrap: str, namespace: str) -> None:
    """A drill namespace's picture says exercise before any event: the banner is the namespace's."""
    settings = gateway_settings(kafka_bootstrap, f"drill.{namespace}")
    async with gateway(settings) as gw, peer(gw) as public:
        await public.next()
        snapshot = await public.next()
    assert snapshot["state"]["meta"] == {"cop": {"exercise": True}}


def exercised(event_type: str) -> Envelope:
    """A fresh schema example of ``event_type``, flagged exercise."""
    base = fresh(event_type)
    return new_event(type(base), base.payload.model_dump(mode="json"),
                     occurred_at=base.occurred_at, source=base.source, exercise=True)
