"""What CPython's cyclic garbage collector costs a service that decodes event batches.

    .venv/bin/python benchmarks/gc_thresholds.py [--events 5000] [--batches 10] [--rounds 3]

Pure CPU, no broker or database: the recorder's own decoding step
(:func:`services.recorder.consumer.prepare_batch`, i.e. validating every record
into a pydantic event and building its event-store row) over batches of the
benchmark's event mix, keeping the last two batches alive as the recorder's
reader and writer do. Measured per collector setting, start-up objects frozen
(``gc.freeze``) as :func:`services.common.runtime.tune_gc` does, with the time
spent inside the collector per generation from ``gc.callbacks``:

- CPython's defaults (700, 10, 10) without a freeze — what a service got before;
- the defaults with the freeze;
- larger young-generation thresholds, including the one services use
  (:data:`services.common.runtime.GC_THRESHOLDS`);
- the collector switched off, the floor (not an option for a long-running
  process: cyclic garbage would never be freed).

Rounds are interleaved and the median is printed.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka.structs import ConsumerRecord, TopicPartition

from benchmarks.recorder import make_events
from schemas.topics import route
from services.common.runtime import GC_THRESHOLDS
from services.recorder.consumer import Batch, prepare_batch

Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


def records(n: int) -> Records:
    """``n`` events of the mix as the consumer hands them over, grouped by partition."""
    out: Records = {}
    for event in make_events(n, "gc"):
        r = route(event, "gcbench")
        tp = TopicPartition(r.topic, 0)
        batch = out.setdefault(tp, [])
        batch.append(ConsumerRecord(r.topic, 0, len(batch), 0, 0, r.key, r.value, None,
                                    len(r.key), len(r.value), []))
    return out


class CollectorClock:
    """Time spent inside the collector, per generation, via ``gc.callbacks``."""

    def __init__(self) -> None:
        self.per_generation: dict[int, list[float]] = {}
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.per_generation.setdefault(info["generation"], []).append(
                time.perf_counter() - self._started)


def measure(fetched: Records, setting: tuple[int, int, int] | None, batches: int,
            events: int) -> tuple[float, dict[int, tuple[int, float]]]:
    """µs per event for ``batches`` decodes, and (collections, µs per event) per generation."""
    clock = CollectorClock()
    if setting is None:
        gc.disable()
    else:
        gc.enable()
        gc.set_threshold(*setting)
    gc.callbacks.append(clock)
    alive: list[Batch] = []
    try:
        start = time.perf_counter()
        for _ in range(batches):
            alive.append(prepare_batch(fetched))
            if len(alive) > 2:  # the reader's batch and the writer's
                alive.pop(0)
        elapsed = time.perf_counter() - start
    finally:
        gc.callbacks.remove(clock)
        gc.enable()
    per_event = 1e6 / (batches * events)
    return elapsed * per_event, {g: (len(t), sum(t) * per_event)
                                 for g, t in sorted(clock.per_generation.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="events per batch")
    parser.add_argument("--batches", type=int, default=10, help="batches per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    fetched = records(args.events)
    settings: list[tuple[str, tuple[int, int, int] | None, bool]] = [
        ("defaults 700/10/10, no freeze", (700, 10, 10), False),
        ("defaults 700/10/10, frozen", (700, 10, 10), True),
        ("10000/10/10, frozen", (10_000, 10, 10), True),
        (f"{'/'.join(map(str, GC_THRESHOLDS))}, frozen (services)", GC_THRESHOLDS, True),
        ("collector off (floor)", None, True),
    ]
    results: dict[str, list[tuple[float, dict[int, tuple[int, float]]]]] = {}
    for round_no in range(args.rounds):
        for name, setting, frozen in settings:
            gc.collect()
            if frozen:
                gc.freeze()
            try:
                results.setdefault(name, []).append(
                    measure(fetched, setting, args.batches, args.events))
            finally:
                gc.unfreeze()
        print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"decode of {args.events:,}-event batches x {args.batches}, median of "
          f"{args.rounds} rounds; µs per event (collections, µs per event in the collector "
          "per generation)")
    floor = statistics.median(r[0] for r in results["collector off (floor)"])
    for name, runs in results.items():
        total = statistics.median(r[0] for r in runs)
        middle = sorted(runs, key=lambda r: r[0])[len(runs) // 2][1]
        detail = ", ".join(f"gen{g}: {n}x {us:.1f}" for g, (n, us) in middle.items()) or "-"
        print(f"  {name:42} {total:6.1f} µs/event  x{total / floor:4.2f} of the floor   "
              f"{detail}")


if __name__ == "__main__":
    main()
