"""Drill replay throughput: a 100k-event log at max speed, beside raw aiokafka produce.

    .venv/bin/python benchmarks/drill_replay.py [--events 100000] [--rounds 2]

Builds a log of valid input events in memory (gauge readings, reports as
submitted and accepted, shelter head counts, warnings), starts an embedded
broker (or uses ``--bootstrap``), and per round measures:

- **raw send()**: starting one aiokafka producer (the replayer's own
  settings: acks=all, linger 5 ms, 256 KiB batches) and sending the very
  records the replay produces (already encoded, keyed and routed) with
  ``send()``, pipelined, until every acknowledgement is in;
- **raw batches**: the same with aiokafka's batch API (``create_batch`` /
  ``send_batch``, one open batch per partition, default partitioner) — the
  limit of the layer underneath, and what the replayer uses at max speed;
- **replay**: :func:`services.drill.runner.replay` at max speed into a fresh
  namespace, without services (so unsynchronised): starting its producer,
  planning (new ids, times, keys), rendering each event and producing it, until
  every record is acknowledged.

Both namespaces' topics are created before the clock starts.

Preparing the log's templates (once per log, before the first send) and reading
and validating the log file are timed and printed separately. Each round uses
new namespaces; the best round is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from infra.embedded.broker import EmbeddedBroker
from infra.embedded.processes import free_port
from infra.kafka import clients
from infra.settings import Settings, load_settings
from infra.topics import ensure_topics
from schemas.envelope import Envelope, derive_id, new_event
from schemas.events import Event
from schemas.hazards import GaugeReading, HazardWarning
from schemas.reports import ReportAccepted, ReportSubmitted
from schemas.shelters import ShelterOccupancyReported
from services.drill.logformat import DrillLog, LogHeader, RecordedFrom, read_log, write_log
from services.drill.replay import IdMap, format_time, plan, prepare, render
from services.drill.runner import ReplayOptions, replay

T0 = datetime(2025, 8, 21, 4, 0, tzinfo=UTC)
AREAS = ("kojimachi", "fujimi", "jimbocho", "kanda-koen", "manseibashi", "izumibashi")
SHELTERS = ("e1310100001201", "e1310100005201", "e1310100006201", "e1310100031201")


def build(count: int) -> DrillLog:
    """``count`` valid input events, a few per second of event time."""
    events: list[Envelope] = []
    i = 0
    while len(events) < count:
        when = T0 + timedelta(milliseconds=250 * i)
        kind = i % 10
        if kind < 4:
            events.append(new_event(GaugeReading, {
                "gauge_id": "kandagawa-ochanomizu", "level_m": 2.0 + (i % 300) / 100,
                "observed_at": when}, occurred_at=when, source="gauge-feed",
                event_id=derive_id("bench", i)))
        elif kind < 8:
            area = AREAS[i % len(AREAS)]
            body = {"client_report_id": f"bench-{i}", "category": "flooding",
                    "severity": 1 + i % 5, "area_id": area,
                    "description": "道路が冠水している。", "reporter": {"team": "防災会"}}
            submitted = new_event(ReportSubmitted, body, occurred_at=when, source="intake",
                                  event_id=derive_id("bench", i, "s"))
            events.append(submitted)
            events.append(new_event(ReportAccepted, {
                "report_id": derive_id("report", "防災会", f"bench-{i}"),
                "submitted_event_id": submitted.event_id, "report": body,
                "outside_region": False, "area_id": area,
            }, occurred_at=when, source="intake", cause=submitted,
                event_id=derive_id("bench", i, "a")))
        elif kind == 8:
            events.append(new_event(ShelterOccupancyReported, {
                "shelter_id": SHELTERS[i % len(SHELTERS)], "occupancy": i % 400,
                "reported_by": {"team": "避難所運営班"}}, occurred_at=when, source="intake",
                event_id=derive_id("bench", i)))
        else:
            events.append(new_event(HazardWarning, {
                "warning_id": f"w-{i % 7}", "kind": "heavy_rain_warning", "name": "大雨警報",
                "hazard": "inland_flood", "alert_level_equivalent": 3,
                "area_ids": [AREAS[i % len(AREAS)]], "issued_at": when,
                "expires_at": when + timedelta(hours=6), "source": "jma"},
                occurred_at=when, source="jma-feed", event_id=derive_id("bench", i)))
        i += 1
    inputs: tuple[Event, ...] = tuple(events[:count])  # type: ignore[arg-type]
    header = LogHeader(region="chiyoda", recorded_from=RecordedFrom(kind="scenario",
                       generator="benchmarks/drill_replay.py"), since=None, until=None,
                       count=len(inputs), inputs=len(inputs), references=0)
    return DrillLog(header, inputs, ())


async def raw_produce(settings: Settings, records: list[tuple[str, bytes, bytes]]) -> float:
    """Seconds to start a producer and produce ``records`` (topic, key, value) pipelined,
    all acknowledged (the replay starts its own producer too)."""
    started = time.perf_counter()
    producer = clients.producer(settings, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        pending = []
        for topic, key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def raw_batches(settings: Settings, records: list[tuple[str, bytes, bytes]]) -> float:
    """Like :func:`raw_produce` with aiokafka's batch API: one open batch per partition
    (default partitioner), handed over with ``send_batch`` when full."""
    started = time.perf_counter()
    producer = clients.producer(settings, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        partitioner = DefaultPartitioner()
        partitions: dict[str, list[int]] = {}
        open_: dict[tuple[str, int], Any] = {}
        futures = []
        for topic, key, value in records:
            if topic not in partitions:
                partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = partitioner(key, partitions[topic], partitions[topic])
            batch = open_.get((topic, partition))
            if batch is None:
                batch = open_[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = open_[(topic, partition)] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for (topic, partition), batch in open_.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def main(args: argparse.Namespace, bootstrap: str) -> None:
    settings = load_settings(kafka_bootstrap=bootstrap, development=True)
    t = time.perf_counter()
    log = build(args.events)
    print(f"built {len(log.inputs):,} events in {time.perf_counter() - t:.1f}s")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        with path.open("wb") as out:
            write_log(log, out)
        t = time.perf_counter()
        read_log(path)
        read_s = time.perf_counter() - t
    t = time.perf_counter()
    templates = prepare(log.inputs)
    prepare_s = time.perf_counter() - t
    raw_rates: list[float] = []
    batch_rates: list[float] = []
    replay_rates: list[float] = []
    for round_ in range(1, args.rounds + 1):
        raw_ns = f"bench-raw-{round_}-{int(time.time())}"
        ns = f"drill.bench-{round_}-{int(time.time())}"
        raw_settings = settings.model_copy(update={"namespace": raw_ns})
        await ensure_topics(raw_settings)
        ids = IdMap(raw_ns)
        stamp = format_time(datetime.now(UTC))
        records = [(s.topic, s.key, render(s.template, ids, s.delta, stamp))
                   for s in plan(log.inputs, templates, namespace=raw_ns, ids=ids,
                                 anchor=datetime.now(UTC), speed=None)
                   if s.template is not None]
        raw_s = await raw_produce(settings, records)
        batch_ns = f"bench-batch-{round_}-{int(time.time())}"
        await ensure_topics(settings.model_copy(update={"namespace": batch_ns}))
        batch_s = await raw_batches(settings, [(t.replace(raw_ns, batch_ns, 1), k, v)
                                               for t, k, v in records])
        # Topics exist before anything is timed: creating them is setting up, not replaying.
        await ensure_topics(settings.model_copy(update={"namespace": ns}))
        started = time.perf_counter()
        result = await replay(settings, log, ns, ReplayOptions(speed=None),
                              services=(False, False), templates=templates)
        replay_s = time.perf_counter() - started
        assert result.sent == len(log.inputs), result.manifest()
        raw_rates.append(len(records) / raw_s)
        batch_rates.append(len(records) / batch_s)
        replay_rates.append(result.sent / replay_s)
        print(f"round {round_}: raw send() {raw_rates[-1]:,.0f} events/s, raw batches "
              f"{batch_rates[-1]:,.0f} events/s, replay {replay_rates[-1]:,.0f} events/s "
              f"({replay_rates[-1] / batch_rates[-1]:.0%} of raw batches)")
    best_raw, best_batch, best_replay = max(raw_rates), max(batch_rates), max(replay_rates)
    print()
    print(f"events                      {len(log.inputs):,}")
    print(f"read + validate log file    {len(log.inputs) / read_s:,.0f} events/s "
          f"({read_s:.1f}s, once per run)")
    print(f"prepare templates           {len(log.inputs) / prepare_s:,.0f} events/s "
          f"({prepare_s:.1f}s, once per log)")
    print(f"raw aiokafka send()         {best_raw:,.0f} events/s (best of {args.rounds}; "
          f"median {statistics.median(raw_rates):,.0f})")
    print(f"raw aiokafka batches        {best_batch:,.0f} events/s (best of {args.rounds}; "
          f"median {statistics.median(batch_rates):,.0f})")
    print(f"drill replay, max speed     {best_replay:,.0f} events/s (best of {args.rounds}; "
          f"median {statistics.median(replay_rates):,.0f})")
    print(f"replay / raw batches        {best_replay / best_batch:.0%}")
    print(f"replay / raw send()         {best_replay / best_raw:.0%}")
    target = "meets" if best_replay >= 20_000 else "misses"
    print(f"target 20,000 events/s      {target}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bootstrap", default=None, help="use this broker instead")
    args = parser.parse_args()
    if args.bootstrap:
        asyncio.run(main(args, args.bootstrap))
        return
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(port=free_port(), log_path=Path(tmp) / "tansu.log")
        broker.start()
        try:
            asyncio.run(main(args, broker.bootstrap))
        finally:
            broker.stop()


if __name__ == "__main__":
    sys.exit(cli())
