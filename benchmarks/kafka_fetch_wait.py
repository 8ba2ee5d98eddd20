"""Which fetch_max_wait_ms for the embedded broker: hop latency against idle CPU.

Tansu holds every fetch for its full ``fetch_max_wait_ms``, so the setting is
both the latency of a hop and the rate at which an idle consumer polls. For each
candidate wait this prints:

- aiokafka hop: producer ``send_and_wait`` -> aiokafka consumer, p50/p99;
- faust hop: producer -> faust agent (forwards) -> aiokafka consumer, p50/p99,
  i.e. one faust hop plus one aiokafka hop;
- idle CPU (% of one core) of that faust worker process and of the broker while
  the worker sits idle with its partitions assigned.

Records are sent one at a time with a random gap, so each lands at a random
point of a consumer's fetch wait, as live events do. Run:

    .venv/bin/python benchmarks/kafka_fetch_wait.py [--waits 10,20,50,1500]

It starts its own embedded broker; ``--bootstrap`` uses a running one instead.
The faust worker is this script re-run with ``--faust-worker``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import NewTopic
from aiokafka.structs import TopicPartition
from faust.types import StreamT

from infra.embedded.broker import EmbeddedBroker
from infra.embedded.processes import free_port, spawn, stop_group
from infra.kafka import clients
from infra.kafka.compat import TansuCompat, make_app
from infra.settings import KafkaProfile, Settings, load_settings

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    wait_ms: int
    aiokafka: list[float]
    faust: list[float]
    worker_cpu: float
    broker_cpu: float


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


async def make_topics(settings: Settings, *names: str) -> None:
    admin = clients.admin(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1)
                                   for n in names])
    finally:
        await admin.close()


async def hops(settings: Settings, send_topic: str, read_topic: str, wait_ms: int,
               count: int, warmup_deadline: float = 0.0) -> list[float]:
    """Latency (ms) of ``count`` records sent to ``send_topic`` and read from ``read_topic``."""
    consumer = clients.consumer(settings, fetch_max_wait_ms=wait_ms)
    producer = clients.producer(settings, linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        tp = TopicPartition(read_topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        if warmup_deadline:
            # The faust worker is ready once a record comes back through it.
            end = time.monotonic() + warmup_deadline
            while True:
                await producer.send_and_wait(send_topic, b"warmup")
                if await consumer.getmany(tp, timeout_ms=2000):
                    break
                if time.monotonic() > end:
                    raise SystemExit("the faust worker did not forward within the deadline")
        latencies: list[float] = []
        for i in range(count):
            await asyncio.sleep(random.uniform(0, 0.05))  # land anywhere in a fetch wait
            payload = f"{i}".encode()
            started = time.perf_counter()
            await producer.send_and_wait(send_topic, payload)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=5000)
                if any(r.value == payload for r in batch.get(tp, [])):
                    break
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies
    finally:
        await producer.stop()
        await consumer.stop()


@contextmanager
def faust_worker(settings: Settings, wait_ms: int, topic_in: str, topic_out: str,
                 workdir: Path) -> Iterator[int]:
    env = {**os.environ, **settings.env(), "BENCH_FETCH_WAIT_MS": str(wait_ms),
           "BENCH_TOPIC_IN": topic_in, "BENCH_TOPIC_OUT": topic_out,
           "BENCH_DATADIR": str(workdir / f"faust-{wait_ms}")}
    with open(workdir / f"worker-{wait_ms}.log", "ab") as log:
        proc = spawn([sys.executable, __file__, "--faust-worker"], log=log, env=env)
    try:
        yield proc.pid
    finally:
        stop_group(proc, timeout=10)


async def measure(settings: Settings, wait_ms: int, count: int, idle_s: float,
                  broker_pid: int | None, workdir: Path) -> Figures:
    ns = f"bench{wait_ms}-{os.getpid()}-{random.randrange(1 << 30):x}"
    plain, f_in, f_out = f"{ns}.plain", f"{ns}.in", f"{ns}.out"
    await make_topics(settings, plain, f_in, f_out)
    aiokafka_hops = await hops(settings, plain, plain, wait_ms, count)
    with faust_worker(settings, wait_ms, f_in, f_out, workdir) as pid:
        faust_hops = await hops(settings, f_in, f_out, wait_ms, count, warmup_deadline=60)
        # Idle: nothing is produced; the worker keeps polling its assigned partitions.
        worker0 = cpu_seconds(pid)
        broker0 = cpu_seconds(broker_pid) if broker_pid else 0.0
        started = time.monotonic()
        await asyncio.sleep(idle_s)
        elapsed = time.monotonic() - started
        worker_cpu = 100 * (cpu_seconds(pid) - worker0) / elapsed
        broker_cpu = 100 * (cpu_seconds(broker_pid) - broker0) / elapsed if broker_pid else 0.0
    return Figures(wait_ms, aiokafka_hops, faust_hops, worker_cpu, broker_cpu)


def run_faust_worker() -> None:
    """Child mode: a faust worker whose agent forwards BENCH_TOPIC_IN to BENCH_TOPIC_OUT."""
    settings = load_settings(development=True)
    app = make_app(
        f"bench-{os.environ['BENCH_TOPIC_IN']}",
        settings,
        compat=TansuCompat(fetch_max_wait_ms=int(os.environ["BENCH_FETCH_WAIT_MS"])),
        datadir=os.environ["BENCH_DATADIR"],
        topic_partitions=1,
    )
    source = app.topic(os.environ["BENCH_TOPIC_IN"], value_serializer="raw")
    sink = app.topic(os.environ["BENCH_TOPIC_OUT"], value_serializer="raw")

    @app.agent(source)
    async def forward(stream: StreamT[bytes]) -> None:
        async for value in stream:
            await sink.send(value=value)

    sys.argv = [sys.argv[0], "worker", "--without-web", "-l", "warn"]
    app.main()


async def main(args: argparse.Namespace) -> None:
    waits = [int(w) for w in args.waits.split(",")]
    broker: EmbeddedBroker | None = None
    workdir = Path(tempfile.mkdtemp(prefix="sonae-bench-"))
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
        else:
            broker = EmbeddedBroker(port=free_port(), log_path=workdir / "tansu.log")
            broker.start()
            bootstrap = broker.bootstrap
        settings = load_settings(kafka_bootstrap=bootstrap, kafka_profile=KafkaProfile.EMBEDDED,
                                 development=True)
        try:
            print(f"{'wait ms':>8} {'aiokafka p50/p99 ms':>20} {'faust p50/p99 ms':>18} "
                  f"{'idle worker %':>14} {'idle broker %':>14}")
            for wait in waits:
                count = args.hops if wait <= 100 else max(10, args.hops // 10)
                f = await measure(settings, wait, count, args.idle,
                                  broker.pid if broker else None, workdir)
                print(f"{f.wait_ms:>8} "
                      f"{pct(f.aiokafka, .5):>9.1f} / {pct(f.aiokafka, .99):>7.1f} "
                      f"{pct(f.faust, .5):>8.1f} / {pct(f.faust, .99):>7.1f} "
                      f"{f.worker_cpu:>14.1f} {f.broker_cpu:>14.1f}"
                      f"   (n={len(f.aiokafka)}, mean faust {statistics.fmean(f.faust):.1f})",
                      flush=True)
        finally:
            if broker is not None:
                broker.stop()
    finally:
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if "--faust-worker" in sys.argv:
        run_faust_worker()
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--waits", default="10,20,50,1500")
        parser.add_argument("--hops", type=int, default=200)
        parser.add_argument("--idle", type=float, default=10.0, help="idle CPU window, s")
        parser.add_argument("--bootstrap", default="", help="use a running broker")
        parser.add_argument("--keep", action="store_true", help="keep the worker logs")
        asyncio.run(main(parser.parse_args()))
