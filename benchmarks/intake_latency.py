"""Intake's 202 → Kafka latency and CPU at a steady rate, relay direct vs outbox only.

    .venv/bin/python benchmarks/intake_latency.py [--rates 200 500] [--seconds 10] [--rounds 2]

Starts its own embedded broker and durable PostgreSQL, then for each rate and round,
interleaved, runs intake as its own process twice: with the relay's direct path (the
default ``SONAE_INTAKE_RELAY_QUEUE``) and from the outbox table only
(``SONAE_INTAKE_RELAY_QUEUE=0``). Reports are posted open loop (report *i* at
start + *i*/rate) on 64 keep-alive connections after 2 s of unmeasured warm-up; a
consumer of the reports topic (fetch wait as configured for the embedded broker)
notes when each report's ``report.accepted`` arrives. Printed per run: 202 → on Kafka
p50/p99 (so one consumer hop is included, the same for both), and CPU per report of
the intake process and of PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.recorder import (
    SECRET,
    Stack,
    embedded_stack,
    postgres_cpu,
    process_cpu,
    settings_for,
)
from benchmarks.support import HttpClient, intake_process
from infra.kafka import clients
from infra.topics import ensure_topics
from schemas.topics import qualified
from services.common.auth import Role, issue_token

WARMUP_S = 2.0
CONNECTIONS = 64


def percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def one_run(stack: Stack, namespace: str, rate: int, seconds: float, *,
                  outbox_only: bool, log: Path) -> dict[str, float]:
    settings = settings_for(stack.bootstrap, stack.dsn, namespace)
    await ensure_topics(settings)
    token = issue_token(SECRET, Role.FIELD, "latency-bench", timedelta(hours=1))
    consumer = clients.consumer(settings, qualified("reports", namespace),
                                group_id=f"{namespace}-reader")
    await consumer.start()
    arrived: dict[str, float] = {}
    acked: dict[str, float] = {}

    async def read() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                now = time.perf_counter()
                for record in records:
                    event = json.loads(record.value or b"{}")
                    if event.get("type") == "report.accepted":
                        arrived[event["payload"]["report"]["client_report_id"]] = now

    reader = asyncio.create_task(read())
    extra = {"SONAE_INTAKE_RELAY_QUEUE": "0"} if outbox_only else {}
    try:
        async with intake_process(settings, log, extra) as intake:
            port = int(intake.url.rsplit(":", 1)[1])
            idle: asyncio.Queue[HttpClient] = asyncio.Queue()
            for _ in range(CONNECTIONS):
                idle.put_nowait(await HttpClient.connect("127.0.0.1", port))
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            warm = int(rate * WARMUP_S)

            async def post(i: int) -> None:
                cid = uuid.uuid4().hex
                body = json.dumps({"client_report_id": cid, "category": "flooding",
                                   "severity": 3, "area_id": "kanda-koen",
                                   "description": "latency benchmark"}).encode()
                client = await idle.get()
                try:
                    status, answer = await client.request("POST", "/v1/reports", headers, body)
                finally:
                    idle.put_nowait(client)
                if status != 202:
                    raise RuntimeError(f"intake answered {status}: {answer[:200]!r}")
                if i >= warm:
                    acked[cid] = time.perf_counter()

            posts = []
            start = time.monotonic()
            for i in range(warm + int(rate * seconds)):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if i == warm:
                    cpu0 = process_cpu(intake.pid)
                    pg0 = postgres_cpu(stack.postgres_pid)
                posts.append(asyncio.create_task(post(i)))
            await asyncio.gather(*posts)
            cpu1, pg1 = process_cpu(intake.pid), postgres_cpu(stack.postgres_pid)
            deadline = time.monotonic() + 30
            while (len(arrived.keys() & acked.keys()) < len(acked)  # noqa: ASYNC110 - the reader task fills it
                   and time.monotonic() < deadline):
                await asyncio.sleep(0.1)
            while not idle.empty():
                idle.get_nowait().close()
    finally:
        reader.cancel()
        await consumer.stop()
    delays = sorted(arrived[c] - t for c, t in acked.items() if c in arrived)
    per_report = 1e6 / max(1, len(acked))
    return {"p50": 1000 * statistics.median(delays), "p99": 1000 * percentile(delays, 99),
            "arrived": len(delays), "sent": len(acked),
            "cpu": (cpu1 - cpu0) * per_report, "pg": (pg1 - pg0) * per_report}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[200, 500])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds a run")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print("202 -> report.accepted on Kafka (one consumer hop included); CPU µs per report")
    print(f"{'rate':>5} {'relay':>12} {'p50 ms':>8} {'p99 ms':>8} {'arrived':>11} "
          f"{'intake CPU':>11} {'PG CPU':>8}")
    async with embedded_stack(durable=True) as stack:
        with tempfile.TemporaryDirectory(prefix="sonae-bench-logs-") as logs:
            n = 0
            for _ in range(args.rounds):
                for rate in args.rates:
                    for outbox_only in (False, True):
                        n += 1
                        r = await one_run(stack, f"latency{n}", rate, args.seconds,
                                          outbox_only=outbox_only,
                                          log=Path(logs) / f"intake{n}.log")
                        mode = "outbox only" if outbox_only else "direct"
                        print(f"{rate:>5} {mode:>12} {r['p50']:>8.1f} {r['p99']:>8.1f} "
                              f"{r['arrived']:>5.0f}/{r['sent']:<5.0f} {r['cpu']:>11,.0f} "
                              f"{r['pg']:>8,.0f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
