"""Recorder and intake throughput beside the raw layers underneath them, in one run.

Starts its own embedded broker and PostgreSQL (durable: fsync on, as the system
of record runs), then measures, ``--repeat`` times each, interleaved:

- **raw produce**: aiokafka, ``acks=all``, pipelined (send everything, then await
  every acknowledgement), the service producer configuration, N pre-encoded events
  to the catalogue topics with their real keys;
- **raw COPY**: asyncpg ``copy_records_to_table`` of N event rows into the same
  ``events`` table (same indexes), in transactions of the recorder's largest batch;
- **recorder**: N events produced first, then the recorder started as its own
  process (``services.recorder.main``) drains them into the store, projections
  included. Its rate is taken from the database's own clock: batches are stamped
  with their transaction start (``stored_at``), so process start-up and group
  join are not counted: rate = (N − last batch) / (last stamp − first stamp);
- **intake** (``--intake-seconds``, 0 to skip): ``POST /v1/reports`` on intake
  running as its own process (``services.intake.main``, unthrottled: validation,
  idempotency and outbox in PostgreSQL, relay to Kafka), driven closed loop by a
  client process with ``--concurrency`` keep-alive connections for the given
  time: acknowledged reports/s, p50/p99 acknowledgement latency, CPU per report;
- **bare aiohttp**, the same client against an aiohttp server that reads the body
  and answers 202, nothing else: the HTTP layer's ceiling on this machine.

The event mix (per 100): 30 report submissions with their 30 acceptances, 30
gauge readings, 5 shelter states, 3 order versions, 2 broadcast outcomes. Run:

    .venv/bin/python benchmarks/recorder.py                  # 50k events, ~3-4 min
    .venv/bin/python benchmarks/recorder.py --events 20000 --repeat 1 --intake-seconds 0
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import Stack, embedded_stack, postgres_cpu, process_cpu
from infra.embedded.processes import spawn, stop_group
from infra.kafka import clients
from infra.settings import Settings, load_settings
from infra.topics import ensure_topics
from schemas.envelope import derive_id, new_event
from schemas.evacuation import OrderIssued, OrderLifted, OrderUpdated
from schemas.events import Event
from schemas.examples import example
from schemas.hazards import GaugeReading
from schemas.reports import ReportAccepted, ReportSubmitted
from schemas.shelters import ShelterStatusChanged
from schemas.topics import route
from services.recorder.consumer import RecorderConfig
from services.recorder.domain import EVENT_COLUMNS, EventRow, event_row

ROOT = Path(__file__).resolve().parents[1]
SECRET = "benchmark-secret-0123456789abcdef0123456789"
BATCH = RecorderConfig().max_records  # the recorder's largest transaction
T0 = datetime(2025, 8, 21, 5, 0, tzinfo=UTC)




@dataclass
class Rate:
    """A throughput, and the CPU it took per 1,000 items (client side, PostgreSQL side)."""

    per_s: float
    client_ms: float = 0.0
    postgres_ms: float = 0.0

# --- the event mix -------------------------------------------------------------------


def make_events(n: int, tag: str) -> list[Event]:
    """``n`` events of the documented mix, fresh ids (``tag`` keeps runs apart)."""
    submitted, accepted = example("report.submitted"), example("report.accepted")
    status, broadcast = example("shelter.status_changed"), example("broadcast.delivered")
    issued, updated, lifted = (example("evacuation.order_issued"),
                               example("evacuation.order_updated"),
                               example("evacuation.order_lifted"))
    assert isinstance(submitted, ReportSubmitted) and isinstance(accepted, ReportAccepted)
    areas = ("kanda-koen", "kojimachi", "fujimi", "banchou", "manseibashi", "izumibashi")
    out: list[Event] = []
    i = 0
    while len(out) < n:
        at = T0 + timedelta(seconds=i)
        slot = i % 100
        if slot < 30:
            body = submitted.payload.model_copy(update={
                "client_report_id": f"{tag}-{i}", "area_id": areas[i % len(areas)]})
            sub = new_event(ReportSubmitted, body, occurred_at=at, source="intake")
            out.append(sub)
            out.append(new_event(ReportAccepted, accepted.payload.model_copy(update={
                "report_id": derive_id("report", "bench", body.client_report_id),
                "submitted_event_id": sub.event_id, "report": body,
                "area_id": body.area_id}), occurred_at=at, source="intake", cause=sub))
        elif slot < 60:
            out.append(new_event(GaugeReading, {
                "gauge_id": f"gauge-{i % 8}", "level_m": 1.0 + (i % 300) / 100,
                "observed_at": at}, occurred_at=at, source="gauge-feed"))
        elif slot < 65:
            out.append(new_event(ShelterStatusChanged, status.payload.model_copy(update={
                "shelter_id": f"s{i % 40:04d}", "version": i + 1}),
                occurred_at=at, source="shelter-tracker"))
        elif slot < 66:
            change = {"order_id": derive_id("bench-order", tag, i)}
            for cls, base in ((OrderIssued, issued), (OrderUpdated, updated),
                              (OrderLifted, lifted)):
                out.append(new_event(cls, base.payload.model_copy(update=change),  # type: ignore[arg-type]
                                     occurred_at=at, source="evacuation-decision"))
        elif slot < 68:
            out.append(broadcast.model_copy(update={"event_id": uuid.uuid4()}))
        i += 1
    return out[:n]


# --- the stack -----------------------------------------------------------------------


def settings_for(bootstrap: str, dsn: str, namespace: str) -> Settings:
    return load_settings(kafka_bootstrap=bootstrap, database_url=dsn, namespace=namespace,
                         token_secret=SECRET)


# --- measurements --------------------------------------------------------------------


async def produce(settings: Settings, events: Sequence[Event]) -> float:
    """Pipelined produce of pre-encoded events; msgs/s from first send to last ack."""
    routed = [route(e, settings.namespace) for e in events]
    producer = clients.producer(settings)
    await producer.start()
    try:
        start = time.perf_counter()
        futures = [await producer.send(r.topic, r.value, key=r.key) for r in routed]
        await asyncio.gather(*futures)
        return len(routed) / (time.perf_counter() - start)
    finally:
        await producer.stop()


async def raw_copy(stack: Stack, events: Sequence[Event], namespace: str) -> Rate:
    """COPY of pre-built rows into ``events`` in recorder-sized transactions; rows/s."""
    rows: list[EventRow] = []
    for offset, event in enumerate(events):
        r = route(event, namespace)
        rows.append(event_row(event, topic=r.topic, partition=offset % 4, offset=offset,
                              key=r.key.decode(), envelope=r.value.decode()))
    conn = await asyncpg.connect(stack.dsn)
    try:
        cpu0, pg0 = process_cpu(os.getpid()), postgres_cpu(stack.postgres_pid)
        start = time.perf_counter()
        for i in range(0, len(rows), BATCH):
            async with conn.transaction():
                await conn.copy_records_to_table("events", records=rows[i:i + BATCH],
                                                 columns=EVENT_COLUMNS)
        elapsed = time.perf_counter() - start
        cpu1, pg1 = process_cpu(os.getpid()), postgres_cpu(stack.postgres_pid)
    finally:
        await conn.close()
    per_k = 1000 * 1000 / len(rows)
    return Rate(len(rows) / elapsed, (cpu1 - cpu0) * per_k, (pg1 - pg0) * per_k)


async def insert_strategies(stack: Stack, n: int, tag: str) -> dict[str, float]:
    """rows/s of the ways to append a batch idempotently (the choice in recorder/store.py)."""
    from services.recorder import store

    columns = ", ".join(store._column(c) for c in EVENT_COLUMNS)
    types = ", ".join(f"{store._column(c)} {t}" for c, t in zip(EVENT_COLUMNS, store._EVENT_TYPES,
                                                                 strict=True))
    placeholders = ", ".join(f"${i + 1}" for i in range(len(EVENT_COLUMNS)))

    async def plain(conn: asyncpg.Connection, rows: list[EventRow]) -> None:
        await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)

    async def temp_table(conn: asyncpg.Connection, rows: list[EventRow]) -> None:
        await conn.execute(f"create temp table if not exists incoming (ordinal int, {types}) "
                           "on commit delete rows")
        await conn.copy_records_to_table(
            "incoming", records=[(i, *r) for i, r in enumerate(rows)])
        await conn.fetch(f"insert into events ({columns}) select {columns} from incoming "
                         "order by ordinal on conflict (event_id) do nothing returning event_id")

    async def unnest(conn: asyncpg.Connection, rows: list[EventRow]) -> None:
        await conn.fetch(store._INSERT_NEW_EVENTS, *[list(c) for c in zip(*rows, strict=True)])

    async def executemany(conn: asyncpg.Connection, rows: list[EventRow]) -> None:
        await conn.executemany(f"insert into events ({columns}) values ({placeholders}) "
                               "on conflict (event_id) do nothing", rows)

    out: dict[str, float] = {}
    conn = await asyncpg.connect(stack.dsn)
    try:
        for name, write in (("COPY (no conflict handling)", plain),
                            ("COPY to temp + INSERT…SELECT ON CONFLICT", temp_table),
                            ("INSERT…unnest ON CONFLICT", unnest),
                            ("executemany INSERT ON CONFLICT", executemany)):
            namespace = f"{tag}{len(out)}"
            rows = []
            for offset, event in enumerate(make_events(n, namespace)):
                r = route(event, namespace)
                rows.append(event_row(event, topic=r.topic, partition=0, offset=offset,
                                      key=r.key.decode(), envelope=r.value.decode()))
            start = time.perf_counter()
            for i in range(0, len(rows), BATCH):
                async with conn.transaction():
                    await write(conn, rows[i:i + BATCH])
            out[name] = len(rows) / (time.perf_counter() - start)
    finally:
        await conn.close()
    return out


async def recorder(settings: Settings, stack: Stack, events: Sequence[Event],
                   log: Path) -> Rate:
    """The recorder process draining pre-produced events; events/s by the DB clock."""
    await ensure_topics(settings)
    await produce(settings, events)
    code = ("from services.recorder.main import main; "
            "from infra.settings import load_settings; main(load_settings())")
    with log.open("ab") as out:
        proc = spawn([sys.executable, "-c", code], log=out, cwd=ROOT,
                     env={**os.environ, **settings.env()})
    conn = await asyncpg.connect(settings.database_url)

    async def stored() -> int:
        count: int = await conn.fetchval(
            "select count(*) from events where namespace = $1", settings.namespace)
        return count

    try:
        deadline = time.monotonic() + 600
        first = 0
        while first == 0 or first < len(events):
            if proc.poll() is not None:
                raise RuntimeError(f"the recorder exited; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError("the recorder did not drain the events in 10 minutes")
            first = await stored()
            if first == 0:
                await asyncio.sleep(0.02)
            else:
                break
        # CPU from the first stored batch on: start-up and group join are not counted.
        cpu0, pg0 = process_cpu(proc.pid), postgres_cpu(stack.postgres_pid)
        while (count := await stored()) < len(events):
            if proc.poll() is not None:
                raise RuntimeError(f"the recorder exited; see {log}")
            # Each count scans the namespace's rows in PostgreSQL, which the recorder
            # needs: poll rarely (the rate comes from the batches' own stamps).
            await asyncio.sleep(0.5)
        cpu1, pg1 = process_cpu(proc.pid), postgres_cpu(stack.postgres_pid)
        batches = await conn.fetch(
            "select stored_at, count(*) as n from events where namespace = $1 "
            "group by stored_at order by stored_at", settings.namespace)
    finally:
        await conn.close()
        await asyncio.to_thread(stop_group, proc, timeout=15)
    if len(batches) < 2:
        raise RuntimeError("one batch only: use more --events")
    span: float = (batches[-1]["stored_at"] - batches[0]["stored_at"]).total_seconds()
    drained: int = len(events) - batches[-1]["n"]
    per_k = 1000 * 1000 / max(1, count - first)
    return Rate(drained / span, (cpu1 - cpu0) * per_k, (pg1 - pg0) * per_k)


# --- intake --------------------------------------------------------------------------


def _intake_client(port: int, token: str, concurrency: int, seconds: float,
                   queue: Any) -> None:
    """Child process: closed-loop POSTs for ``seconds``; puts (latencies, errors, cpu)."""
    import json

    from benchmarks.support import HttpClient

    async def run() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        stop_at = time.monotonic() + seconds
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        async def worker(w: int) -> None:
            nonlocal errors
            client = await HttpClient.connect("127.0.0.1", port)
            try:
                n = 0
                while time.monotonic() < stop_at:
                    body = {"client_report_id": f"w{w}-{n}-{uuid.uuid4().hex[:8]}",
                            "category": "flooding", "severity": 3, "area_id": "kanda-koen",
                            "reporter": {"team": "bench"}, "description": "benchmark"}
                    n += 1
                    start = time.perf_counter()
                    status, _ = await client.request("POST", "/v1/reports", headers,
                                                     json.dumps(body).encode())
                    if status == 202:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors += 1
            finally:
                client.close()

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return latencies, errors

    cpu0 = time.process_time()
    latencies, errors = asyncio.run(run())
    queue.put((latencies, errors, time.process_time() - cpu0))


@dataclass
class IntakeFigures:
    reports_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    drained_s: float
    cpu_ms: tuple[float, float, float]
    """CPU ms per 1,000 reports: intake process, PostgreSQL, load client."""


async def intake(stack: Stack, namespace: str, log: Path, *, concurrency: int,
                 seconds: float, bare: bool = False) -> IntakeFigures:
    """Sustained POST /v1/reports against intake running as its own process.

    ``bare``: against :func:`benchmarks.support.null_http_process` instead — aiohttp
    reading the body and answering 202, nothing else: the most any aiohttp service
    can answer on this machine with this client.
    """
    from benchmarks.support import intake_process, null_http_process
    from services.common.auth import Role, issue_token

    settings = settings_for(stack.bootstrap, stack.dsn, namespace)
    await ensure_topics(settings)
    token = issue_token(SECRET, Role.FIELD, "bench-field", timedelta(hours=1), areas=["kanda-koen"])
    context = mp.get_context("spawn")
    results = context.Queue()
    server = null_http_process() if bare else intake_process(settings, log)
    async with server as running:
        port = int(running.url.rsplit(":", 1)[1])
        client = context.Process(target=_intake_client, args=(
            port, token, concurrency, seconds, results))
        cpu0, pg0 = process_cpu(running.pid), postgres_cpu(stack.postgres_pid)
        client.start()
        latencies, errors, client_cpu = await asyncio.to_thread(results.get, True,
                                                                seconds + 120)
        cpu1, pg1 = process_cpu(running.pid), postgres_cpu(stack.postgres_pid)
        await asyncio.to_thread(client.join, 30)
        # Sustained means the relay kept up: time until every event reached Kafka.
        conn = await asyncpg.connect(stack.dsn)
        try:
            drain_start = time.monotonic()
            while not bare and await conn.fetchval(  # noqa: ASYNC110 - another process's state
                    "select count(*) from outbox where sent_at is null"):
                await asyncio.sleep(0.1)
            drained = time.monotonic() - drain_start
        finally:
            await conn.close()
    ordered = sorted(latencies)
    per_k = 1000 * 1000 / max(1, len(ordered))
    return IntakeFigures(
        reports_per_s=len(ordered) / seconds,
        p50_ms=1000 * statistics.median(ordered),
        p99_ms=1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        errors=errors, drained_s=drained,
        cpu_ms=((cpu1 - cpu0) * per_k, (pg1 - pg0) * per_k, client_cpu * per_k))


# --- report --------------------------------------------------------------------------


@dataclass
class Results:
    produce: list[float] = field(default_factory=list)
    copy: list[Rate] = field(default_factory=list)
    recorder: list[Rate] = field(default_factory=list)
    intake: IntakeFigures | None = None
    bare_http: IntakeFigures | None = None
    inserts: dict[str, list[float]] = field(default_factory=dict)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{nproc} cores (`nproc` = {nproc}, {model}), {memory} GiB RAM, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
            f"load average at the end {load}")


def report(results: Results, args: argparse.Namespace) -> str:
    def med(values: Sequence[float]) -> float:
        return statistics.median(values)

    def spread(values: Sequence[float]) -> str:
        return " / ".join(f"{v:,.0f}" for v in values)

    def cpu(rates: list[Rate]) -> str:
        return (f"{med([r.client_ms for r in rates]):.0f} + "
                f"{med([r.postgres_ms for r in rates]):.0f}")

    produce = med(results.produce)
    copy = med([r.per_s for r in results.copy])
    rec = med([r.per_s for r in results.recorder])
    lines = [
        f"events per run: {args.events:,}; runs: {args.repeat} (median, then each run); "
        "CPU ms per 1,000 events: client process + PostgreSQL (all backends)",
        "",
        "| layer | rate (median) | runs | CPU ms / 1k | ratio |",
        "|---|---:|---:|---:|---:|",
        f"| raw aiokafka produce, acks=all, pipelined | {produce:,.0f} msg/s | "
        f"{spread(results.produce)} | | |",
        f"| raw asyncpg COPY into `events` | {copy:,.0f} rows/s | "
        f"{spread([r.per_s for r in results.copy])} | {cpu(results.copy)} | |",
        f"| recorder, end to end (fetch, decode, store, projections, commit) | "
        f"{rec:,.0f} events/s | {spread([r.per_s for r in results.recorder])} | "
        f"{cpu(results.recorder)} | **{rec / copy:.0%}** of raw COPY |",
    ]
    if results.intake is not None:
        i = results.intake
        lines.append(
            f"| intake `POST /v1/reports`, {args.concurrency} connections, "
            f"{args.intake_seconds:.0f} s | {i.reports_per_s:,.0f} reports/s "
            f"(p50 {i.p50_ms:.1f} ms, p99 {i.p99_ms:.1f} ms) "
            f"| 1 | {i.cpu_ms[0]:.0f} + {i.cpu_ms[1]:.0f} (load client {i.cpu_ms[2]:.0f}) "
            f"| **{i.reports_per_s / produce:.1%}** of raw produce |")
        if results.bare_http is not None:
            b = results.bare_http
            lines.append(
                f"| bare aiohttp `POST` (read the body, answer 202, nothing else), same client "
                f"| {b.reports_per_s:,.0f} requests/s (p50 {b.p50_ms:.1f} ms, "
                f"p99 {b.p99_ms:.1f} ms) | 1 | {b.cpu_ms[0]:.0f} (load client {b.cpu_ms[2]:.0f}) "
                f"| {b.reports_per_s / produce:.1%} of raw produce: the ceiling of any "
                f"aiohttp service here; intake = {i.reports_per_s / b.reports_per_s:.1%} of it |")
        lines.append("")
        lines.append(f"intake: {i.errors} non-202 answers; the relay emptied the outbox "
                     f"{i.drained_s:.1f} s after the last request")
    if results.inserts:
        lines += ["", f"appending a batch idempotently ({BATCH}-row transactions, median):", "",
                  "| strategy | rows/s |", "|---|---:|"]
        lines += [f"| {name} | {med(v):,.0f} |" for name, v in results.inserts.items()]
    lines += ["", f"machine: {machine()}"]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--intake-seconds", type=float, default=20.0,
                        help="sustained intake load; 0 skips intake")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="intake client connections (concurrent requests share commits)")
    parser.add_argument("--compare-inserts", action="store_true",
                        help="also time COPY, temp-table, unnest and executemany appends")
    parser.add_argument("--fast-postgres", action="store_true",
                        help="fsync off (the test-suite setting) instead of durable")
    args = parser.parse_args()
    results = Results()

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    async with embedded_stack(durable=not args.fast_postgres) as stack:
        with tempfile.TemporaryDirectory(prefix="sonae-bench-logs-") as logs:
            for run in range(args.repeat):
                tag = f"r{run}"
                raw = settings_for(stack.bootstrap, stack.dsn, f"rawproduce{run}")
                await ensure_topics(raw)
                results.produce.append(await produce(raw, make_events(args.events, tag + "p")))
                progress(f"run {run + 1}: raw produce {results.produce[-1]:,.0f} msg/s")
                results.copy.append(
                    await raw_copy(stack, make_events(args.events, tag + "c"), f"rawcopy{run}"))
                progress(f"run {run + 1}: raw COPY {results.copy[-1]}")
                results.recorder.append(await recorder(
                    settings_for(stack.bootstrap, stack.dsn, f"recorder{run}"), stack,
                    make_events(args.events, tag + "r"), Path(logs) / f"recorder{run}.log"))
                progress(f"run {run + 1}: recorder {results.recorder[-1]}")
                if args.compare_inserts:
                    timed = await insert_strategies(stack, args.events, f"insert{run}x")
                    for name, rate in timed.items():
                        results.inserts.setdefault(name, []).append(rate)
                    progress(f"run {run + 1}: inserts {timed}")
            if args.intake_seconds > 0:
                results.intake = await intake(stack, "intakebench",
                                              Path(logs) / "intake.log",
                                              concurrency=args.concurrency,
                                              seconds=args.intake_seconds)
                progress(f"intake {results.intake.reports_per_s:,.0f} reports/s")
                results.bare_http = await intake(stack, "barehttp", Path(logs) / "bare.log",
                                                 concurrency=args.concurrency,
                                                 seconds=args.intake_seconds, bare=True)
                progress(f"bare aiohttp {results.bare_http.reports_per_s:,.0f} requests/s")
    print(report(results, args))


if __name__ == "__main__":
    asyncio.run(main())
