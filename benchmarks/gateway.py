"""Gateway benchmark: fan-out against raw ``websockets.broadcast``, and report → delta latency.

Part 1 (fan-out, no broker): one gateway websocket server in this process, N
clients (1,000 and 5,000) in two client processes. The same run sends K
changes through the gateway's hub (reduce, per-role view, encode, bounded
queues) and K pre-encoded messages of the same size with raw
``websockets.broadcast`` to the same connections. Printed per mode: delivery
latency p50/p99 at a steady rate, and messages/s delivered for a burst.
Clients timestamp arrival with CLOCK_MONOTONIC, which is system-wide on Linux,
so latencies across processes are comparable.

Part 2 (end to end, embedded broker and durable PostgreSQL started here): HTTP
POST to intake (its own process: validation, outbox in PostgreSQL, relay to Kafka)
→ gateway (Kafka consumer, reducer, fan-out) → a websocket client; open loop,
after an unmeasured warm-up; p50/p99 at 100 and 500 reports/s, with the 202's.

    .venv/bin/python benchmarks/gateway.py                 # both parts, ~3 min
    .venv/bin/python benchmarks/gateway.py --clients 1000 --skip-e2e
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import resource
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import broadcast, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.envelope import new_event
from schemas.examples import example
from schemas.region import load_region
from schemas.reports import ReportAccepted
from services.common.auth import Role, issue_token
from services.gateway.cop import COP, RegionIndex
from services.gateway.hub import Hub
from services.gateway.server import Gateway
from services.gateway.views import Audience, Viewer

if TYPE_CHECKING:
    from benchmarks.support import Stack

SECRET = "benchmark-secret-0123456789abcdef0123456789"
STAMP = re.compile(rb"bench:(\w+):(\d+):([0-9.]+)")
REGION = load_region()


def raise_fd_limit(wanted: int) -> None:
    """Allow enough sockets for the clients (each costs one descriptor per side)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def stamped_report(phase: str, seq: int, area: str = "kanda-koen") -> ReportAccepted:
    """A report whose description carries the phase, sequence and send time."""
    base = example("report.accepted")
    body = base.payload.model_dump(mode="json")
    body.update(report_id=str(uuid.uuid4()), area_id=area)
    body["report"] = {**body["report"], "area_id": area,
                      "description": f"bench:{phase}:{seq}:{time.monotonic():.6f}"}
    return new_event(ReportAccepted, body, occurred_at=datetime.now(UTC), source="intake")


# --- client processes -------------------------------------------------------------------


def client_process(url: str, count: int, hq: str, ready: Any, results: Any,
                   phases: dict[str, int]) -> None:
    """Open ``count`` connections; record arrival latency of every stamped message."""
    asyncio.run(_clients(url, count, hq, ready, results, phases))


async def _clients(url: str, count: int, hq: str, ready: Any, results: Any,
                   phases: dict[str, int]) -> None:
    latencies: dict[str, list[float]] = {p: [] for p in phases}
    last: dict[str, float] = {}
    first: dict[str, float] = {}
    done = asyncio.Event()
    expected = sum(phases.values()) * count
    got = 0

    async def one(i: int) -> None:
        nonlocal got
        async with connect(url, compression=None, max_queue=None, open_timeout=60,
                           ping_interval=None) as ws:
            await ws.send(json.dumps({"type": "hello", "token": hq}))
            async for raw in ws:
                data = raw if isinstance(raw, bytes) else raw.encode()
                now = time.monotonic()
                for match in STAMP.finditer(data):
                    phase = match.group(1).decode()
                    latencies[phase].append(now - float(match.group(3)))
                    first.setdefault(phase, now)
                    last[phase] = now
                    got += 1
                    if got >= expected:
                        done.set()
                if done.is_set():
                    return

    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(one(i)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)  # do not overrun the server's accept backlog
    ready.put(count)
    with suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 600)
    for task in tasks:
        task.cancel()
    # Send a sample of latencies (every one would be millions of floats at 5,000 clients).
    sample = {p: v[:: max(1, len(v) // 20_000)] for p, v in latencies.items()}
    counts = {p: len(v) for p, v in latencies.items()}
    results.put((sample, counts, first, last))


# --- part 1: fan-out --------------------------------------------------------------------


async def fan_out(clients: int, steady: int, rate: float, burst: int) -> dict[str, Any]:
    """Gateway fan-out against raw broadcast to the same ``clients`` connections."""
    hub = Hub(COP.empty(RegionIndex.from_region(REGION)), "bench", [("reports", 0)],
              history_size=1000)
    hub.set_marker(("reports", 0), b"benchmrk")
    hub.ready.set()
    gateway = Gateway(hub, secret=SECRET, namespace="bench",
                      area_ids=[d.id for d in REGION.districts])
    hq = issue_token(SECRET, Role.HQ, "bench-hq", timedelta(hours=1))
    phases = {"gw_steady": steady, "raw_steady": steady, "gw_burst": burst,
              "raw_burst": burst}
    async with serve(gateway.handler, "127.0.0.1", 0, compression=None, max_size=65536,
                     ping_interval=None, backlog=4096) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/"
        ctx = mp.get_context("spawn")
        ready, results = ctx.Queue(), ctx.Queue()
        halves = [clients // 2, clients - clients // 2]
        procs = [ctx.Process(target=client_process, args=(url, n, hq, ready, results, phases))
                 for n in halves]
        for p in procs:
            p.start()
        deadline = time.monotonic() + 300
        while len(hub.clients) < clients and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)  # polling a count: clients attach in the server's tasks
        assert len(hub.clients) == clients, f"only {len(hub.clients)} of {clients} attached"
        await asyncio.sleep(1.0)  # let the snapshots drain
        connections = [c.ws for c in hub.clients]
        offset = 0
        # The raw messages are what the gateway sends for the same change (HQ view).
        sample = _delta_bytes(hub, stamped_report("x", 0))

        async def gateway_send(phase: str, seq: int) -> None:
            nonlocal offset
            hub.apply(("reports", 0), offset, stamped_report(phase, seq))
            offset += 1

        async def raw_send(phase: str, seq: int) -> None:
            stamp = f"bench:{phase}:{seq}:{time.monotonic():.6f}".encode()
            broadcast(connections, STAMP.sub(stamp, sample), text=True)

        timings: dict[str, float] = {}
        for phase, send, n, pause in (("gw_steady", gateway_send, steady, 1 / rate),
                                      ("raw_steady", raw_send, steady, 1 / rate),
                                      ("gw_burst", gateway_send, burst, 0.0),
                                      ("raw_burst", raw_send, burst, 0.0)):
            start = time.monotonic()
            for seq in range(n):
                await send(phase, seq)
                await asyncio.sleep(pause)
            timings[phase] = start
            await asyncio.sleep(2.0)
        collected = [results.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(30)
    return _summarise(collected, timings, clients, phases)


def _delta_bytes(hub: Hub, event: ReportAccepted) -> bytes:
    from services.gateway.hub import _delta_message
    from services.gateway.reducer import reduce

    _, deltas = reduce(hub.cop, event)
    data = _delta_message(hub.position_text(), deltas, Viewer(Audience.HQ))
    assert data is not None
    return data


def _summarise(collected: list[Any], timings: dict[str, float], clients: int,
               phases: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase, n in phases.items():
        lat = [x for sample, *_ in collected for x in sample[phase]]
        count = sum(counts[phase] for _, counts, *_ in collected)
        last = max(lasts.get(phase, 0.0) for *_, lasts in collected)
        duration = max(last - timings[phase], 1e-9)
        out[phase] = {"delivered": count, "expected": n * clients,
                      "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
                      "p99_ms": 1000 * percentile(lat, 99) if lat else float("nan"),
                      "msgs_per_s": count / duration}
    return out


# --- part 2: report → delta -------------------------------------------------------------


async def report_to_delta(rates: list[int], seconds: float, *, durable: bool = True,
                          connections: int = 64,
                          warmup: float = 2.0) -> dict[int, dict[str, float]]:
    """POST /v1/reports → websocket delta, at each rate (a namespace per rate)."""
    from benchmarks.support import embedded_stack

    out: dict[int, dict[str, float]] = {}
    # Durable (fsync on), as the system of record runs: intake acknowledges after commit.
    async with embedded_stack(durable) as stack:
        for rate in rates:
            out[rate] = await _one_rate(stack, rate, seconds,
                                        connections=connections, warmup=warmup)
            out[-rate] = await _one_rate(stack, rate, seconds, direct=True,
                                         connections=connections, warmup=warmup)
    return out


async def _one_rate(stack: Stack, rate: int, seconds: float, *,
                    direct: bool = False, connections: int,
                    warmup: float) -> dict[str, float]:
    """One rate; ``direct`` produces report.accepted to Kafka instead of POSTing to intake.

    Open loop: request i leaves at start + i/rate on a free keep-alive connection of
    the pool (``connections`` of them), whatever happened to the ones before it.
    CPU of each process over the measured part is returned as % of one core.
    """
    from benchmarks.support import (
        HttpClient,
        gateway_process,
        intake_process,
        postgres_cpu,
        process_cpu,
    )
    from infra.kafka import clients as kafka_clients
    from infra.settings import load_settings
    from services.common.bus import Publisher

    settings = load_settings(kafka_bootstrap=stack.bootstrap, database_url=stack.dsn,
                             namespace=f"bench{rate}{'k' if direct else ''}",
                             token_secret=SECRET)
    field = issue_token(SECRET, Role.FIELD, "bench-field", timedelta(hours=1), areas=["kanda-koen"])
    hq = issue_token(SECRET, Role.HQ, "bench-hq", timedelta(hours=1))
    total = int(rate * seconds)
    warm = int(rate * warmup)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    acks: list[float] = []
    walls: dict[str, tuple[float, float]] = {}
    arrived: dict[str, float] = {}
    answered: dict[str, float] = {}
    logs = Path(tempfile.mkdtemp(prefix="sonae-bench-logs-"))
    async with intake_process(settings, logs / f"intake{rate}.log") as intake, \
            gateway_process(settings, logs / f"gateway{rate}.log") as gw:
        port = int(intake.url.rsplit(":", 1)[1])

        def cpu() -> dict[str, float]:
            return {"intake": process_cpu(intake.pid), "gateway": process_cpu(gw.pid),
                    "broker": process_cpu(stack.broker_pid),
                    "postgres": postgres_cpu(stack.postgres_pid),
                    "script": process_cpu(os.getpid())}

        idle: asyncio.Queue[HttpClient] = asyncio.Queue()
        for _ in range(0 if direct else connections):
            idle.put_nowait(await HttpClient.connect("127.0.0.1", port))
        headers = {"Authorization": f"Bearer {field}", "Content-Type": "application/json"}
        try:
            async with connect(gw.websocket_url, compression=None, max_queue=None) as ws:
                await ws.send(json.dumps({"type": "hello", "token": hq}))

                async def read() -> None:
                    async for raw in ws:
                        now = time.monotonic()
                        text = raw if isinstance(raw, str) else raw.decode()
                        for m in re.finditer(r'"description":"(b[0-9a-f]+)"', text):
                            if m.group(1) in sent:
                                latencies.append(now - sent.pop(m.group(1)))
                                arrived[m.group(1)] = now
                        if len(latencies) >= total:
                            return

                producer = kafka_clients.producer(settings)
                await producer.start()
                publisher = Publisher(producer, settings.namespace)

                async def post(i: int) -> None:
                    # Warm-up requests ("w…") are sent at the same rate but not measured:
                    # the figures are for the steady state, not for connection set-up,
                    # first statements and the processes' caches filling.
                    measured = i >= warm
                    cid = ("b" if measured else "w") + uuid.uuid4().hex[:20]
                    if direct:
                        event = stamped_report("e2e", i, REGION.districts[i % 6].id)
                        payload = event.payload.model_dump(mode="json")
                        payload["report"]["description"] = cid
                        if measured:
                            sent[cid] = time.monotonic()
                        await publisher.publish(new_event(
                            ReportAccepted, payload, occurred_at=event.occurred_at,
                            source="intake"))
                        return
                    body = {"client_report_id": cid, "category": "flooding", "severity": 3,
                            "area_id": REGION.districts[i % len(REGION.districts)].id,
                            "description": cid}
                    # Stamped before waiting for a free connection: time spent queueing
                    # behind slow answers counts (no coordinated omission).
                    t0 = time.monotonic()
                    if measured:
                        sent[cid] = t0
                        walls[cid] = time.time(), t0
                    client = await idle.get()
                    try:
                        status, answer = await client.request(
                            "POST", "/v1/reports", headers, json.dumps(body).encode())
                    finally:
                        idle.put_nowait(client)
                    if measured:
                        answered[cid] = time.monotonic()
                        acks.append(answered[cid] - t0)
                    if status != 202:
                        raise RuntimeError(f"intake answered {status}: {answer[:200]!r}")

                reader = asyncio.create_task(read())
                posts = []
                start = time.monotonic()
                for i in range(warm + total):
                    delay = start + i / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if i == warm:
                        measured_from = time.monotonic()
                        cpu_from = cpu()
                    posts.append(asyncio.create_task(post(i)))
                await asyncio.gather(*posts)
                achieved = total / (time.monotonic() - measured_from)
                with suppress(TimeoutError):
                    await asyncio.wait_for(reader, 60)
                cpu_to, busy = cpu(), time.monotonic() - measured_from
                await producer.stop()
        finally:
            while not idle.empty():
                idle.get_nowait().close()
    stages = {} if direct else await _stages(stack.dsn, walls, answered, arrived)
    return {"reports": total, "received": len(latencies), "offered_rate": achieved, **stages,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * percentile(latencies, 99),
            "ack_p50_ms": 1000 * statistics.median(acks) if acks else 0.0,
            "ack_p99_ms": 1000 * percentile(acks, 99) if acks else 0.0,
            **{f"cpu_{name}": 100 * (cpu_to[name] - cpu_from[name]) / busy for name in cpu_to}}


async def _stages(dsn: str, walls: dict[str, tuple[float, float]], answered: dict[str, float],
                  arrived: dict[str, float]) -> dict[str, float]:
    """Where the time of a report went, from the outbox's own timestamps.

    ``created_at`` is when intake's statement writing the report began; ``sent_at``
    is when the relay's statement that marked it sent began, right after the
    broker acknowledged it (both PostgreSQL wall clock, same host as the script's).
    """
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "select convert_from(value, 'UTF8')::jsonb #>> '{payload,report,description}' as cid,"
            " extract(epoch from created_at)::float8 as created,"
            " extract(epoch from sent_at)::float8 as sent"
            " from outbox where event_type = 'report.accepted'")
    finally:
        await conn.close()
    spans: dict[str, list[float]] = {"to_statement": [], "to_202": [], "to_acked": [],
                                      "to_delta": []}
    for row in rows:
        cid = row["cid"]
        if cid not in walls or cid not in arrived or cid not in answered or row["sent"] is None:
            continue
        wall0, mono0 = walls[cid]
        created, acked = row["created"] - wall0, row["sent"] - wall0
        spans["to_statement"].append(created)
        spans["to_202"].append(answered[cid] - mono0 - created)
        spans["to_acked"].append(acked - created)
        spans["to_delta"].append(arrived[cid] - mono0 - acked)
    out: dict[str, float] = {}
    for name, values in spans.items():
        if values:
            out[f"{name}_p50_ms"] = 1000 * statistics.median(values)
            out[f"{name}_p99_ms"] = 1000 * percentile(values, 99)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--steady", type=int, default=50, help="changes per steady phase")
    parser.add_argument("--rate", type=float, default=10.0, help="steady changes per second")
    parser.add_argument("--burst", type=int, default=50, help="changes per burst phase")
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of unmeasured load at each rate first (report -> delta)")
    parser.add_argument("--connections", type=int, default=64,
                        help="keep-alive connections to intake (report -> delta)")
    parser.add_argument("--fast-postgres", action="store_true",
                        help="fsync off (the test-suite setting) instead of durable")
    args = parser.parse_args()
    raise_fd_limit(4 * max(args.clients) + 1024)
    if not args.skip_fanout:
        print(f"fan-out: HQ view, report deltas (~{len(_sample_size())} bytes), "
              f"steady {args.rate:g}/s x {args.steady}, burst {args.burst} back to back")
        print(f"{'clients':>8} {'mode':>8} {'p50 ms':>8} {'p99 ms':>8} {'burst msg/s':>12} "
              f"{'delivered':>10} {'ratio':>6}")
        for n in args.clients:
            r = await fan_out(n, args.steady, args.rate, args.burst)
            ratio = r["gw_burst"]["msgs_per_s"] / r["raw_burst"]["msgs_per_s"]
            for mode, steady, burst in (("gateway", "gw_steady", "gw_burst"),
                                        ("raw", "raw_steady", "raw_burst")):
                delivered = r[steady]["delivered"] + r[burst]["delivered"]
                expected = r[steady]["expected"] + r[burst]["expected"]
                print(f"{n:>8} {mode:>8} {r[steady]['p50_ms']:>8.1f} {r[steady]['p99_ms']:>8.1f} "
                      f"{r[burst]['msgs_per_s']:>12,.0f} {delivered:>5}/{expected:<5}"
                      f"{ratio if mode == 'gateway' else 1.0:>6.2f}")
    if not args.skip_e2e:
        print("report -> delta: POST /v1/reports (intake, outbox, relay) -> Kafka -> gateway "
              "-> websocket (HQ view)")
        results = await report_to_delta(args.rates, args.seconds,
                                        durable=not args.fast_postgres,
                                        connections=args.connections,
                                        warmup=args.warmup)
        for rate, r in results.items():
            path = "via intake HTTP " if rate > 0 else "Kafka -> gateway"
            print(f"  {path} {abs(rate):>4}/s offered ({r['offered_rate']:.0f}/s achieved): "
                  f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                  f"{r['received']}/{r['reports']} received"
                  + (f" (HTTP 202 after p50 {r['ack_p50_ms']:.1f} ms, p99 {r['ack_p99_ms']:.1f} ms)"
                     if rate > 0 else ""))
            if "to_delta_p50_ms" in r:
                print("    stages p50/p99 ms: " + ", ".join(
                    f"{label} {r[name + '_p50_ms']:.1f}/{r[name + '_p99_ms']:.1f}"
                    for label, name in (("sent -> intake's statement", "to_statement"),
                                        ("statement -> 202", "to_202"),
                                        ("statement -> broker ack", "to_acked"),
                                        ("broker ack -> delta", "to_delta"))))
            print("    CPU, % of one core: " + ", ".join(
                f"{name} {r['cpu_' + name]:.0f}"
                for name in ("intake", "gateway", "broker", "postgres", "script")))


def _sample_size() -> bytes:
    hub = Hub(COP.empty(RegionIndex.from_region(REGION)), "bench", [("reports", 0)])
    return _delta_bytes(hub, stamped_report("x", 0))


if __name__ == "__main__":
    asyncio.run(main())
