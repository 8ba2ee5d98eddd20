"""The evacuation decision worker: a real faust process on the real broker, against golden output.

Each scenario's input events are produced to the namespace's catalogue topics in
log order, each once the previous one has reached the worker's input log (as a
live feed would arrive), so the worker decides in the same order as the pure
engine did when the expected decisions were written.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from infra.embedded.processes import spawn, stop_group, tail
from infra.kafka import clients, compat
from infra.settings import KafkaProfile, Settings, load_settings
from infra.topics import ensure_topics
from schemas.deadletter import DeadLetter
from schemas.errors import InvalidEvent
from schemas.events import Event, decode_event
from schemas.topics import qualified, route
from services.evacuation.app import OUTPUT_TOPICS, app_id, input_log_topic
from services.evacuation.engine import SOURCE
from tests.golden.evacuation.support import normalise, read_events, read_expected
from tests.support import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "evacuation"


@pytest.fixture
def settings(kafka_bootstrap: str, namespace: str, tmp_path: Path) -> Settings:
    """Embedded-profile settings for the test's own namespace and data directory."""
    return load_settings(kafka_bootstrap=kafka_bootstrap, kafka_profile=KafkaProfile.EMBEDDED,
                         namespace=namespace, data_dir=tmp_path / "data", region="chiyoda",
                         log_level="INFO")


class Worker:
    """``python -m services.evacuation`` as a child process in its own process group."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.env = {**os.environ, **settings.env()}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = spawn([sys.executable, "-m", "services.evacuation"], log=log,
                              env=self.env, cwd=REPO)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None:
            stop_group(self.proc, sig=signal.SIGKILL)
            self.proc = None

    def stop(self) -> int | None:
        """SIGTERM and wait (the supervisor's way); the exit code."""
        code = stop_group(self.proc, timeout=15) if self.proc is not None else None
        self.proc = None
        return code

    def log(self) -> str:
        return tail(self.log_path, 40)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Every worker a test starts, SIGKILLed afterwards whatever happened."""
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.kill()


class Feed:
    """Produces a scenario in log order, each event after the previous one reached the log."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer, worker: Worker) -> None:
        self.settings = settings
        self.producer = producer
        self.worker = worker
        self.logged: set[str] = set()
        self.topic = input_log_topic(settings.namespace)
        self.reader: AIOKafkaConsumer | None = None

    async def _follow(self) -> None:
        reader = clients.consumer(self.settings)
        await reader.start()
        self.reader = reader
        await wait_for(lambda: self._has_topic(reader), timeout=60,
                       what="the worker's input log topic")
        tp = TopicPartition(self.topic, 0)
        reader.assign([tp])
        await reader.seek_to_beginning(tp)

    async def _has_topic(self, reader: AIOKafkaConsumer) -> bool:
        if not self.worker.alive():
            raise AssertionError(f"worker exited:\n{self.worker.log()}")
        return self.topic in await reader.topics()

    async def _read(self) -> bool:
        assert self.reader is not None
        batches = await self.reader.getmany(timeout_ms=200)
        for records in batches.values():
            self.logged.update(str(decode_event(r.value).event_id) for r in records
                               if r.value is not None)
        return True

    async def send(self, events: list[Event]) -> None:
        if self.reader is None:
            await self._follow()
        for event in events:
            routed = route(event, self.settings.namespace)
            await self.producer.send_and_wait(routed.topic, routed.value, key=routed.key)

            async def logged(event_id: str = str(event.event_id)) -> bool:
                await self._read()
                if not self.worker.alive():
                    raise AssertionError(f"worker exited:\n{self.worker.log()}")
                return event_id in self.logged

            await wait_for(logged, timeout=60, interval=0.0, what=f"{event.type} in the log")

    async def close(self) -> None:
        if self.reader is not None:
            await self.reader.stop()


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer, after the namespace's catalogue topics exist."""
    await ensure_topics(settings)
    p = clients.producer(settings)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def decisions(settings: Settings, want: int, worker: Worker) -> list[dict[str, Any]]:
    """The decision service's events on its output topics (deduplicated), once ``want`` are in."""
    consumer = clients.consumer(settings)
    await consumer.start()
    got: dict[str, dict[str, Any]] = {}
    try:
        names = [qualified(t, settings.namespace) for t in OUTPUT_TOPICS]
        await consumer.topics()
        tps = [TopicPartition(n, p) for n in names
               for p in sorted(consumer.partitions_for_topic(n) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def enough() -> bool:
            if not worker.alive():
                raise AssertionError(f"worker exited:\n{worker.log()}")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    try:
                        event = decode_event(record.value)
                    except InvalidEvent:
                        continue  # the test's own poison message
                    if event.source != SOURCE:
                        continue  # the inputs on the shared topics
                    decision = normalise(event)
                    # At-least-once: a redelivered decision must be the same decision.
                    assert got.setdefault(decision["event_id"], decision) == decision
            return len(got) >= want

        await wait_for(enough, timeout=60, interval=0.0, what=f"{want} decisions")
        return list(got.values())
    finally:
        await consumer.stop()


async def log_committed(settings: Settings, worker: Worker) -> bool:
    """Whether the decision agent's committed offset is the end of its input log."""
    if not worker.alive():
        raise AssertionError(f"worker exited:\n{worker.log()}")
    tp = TopicPartition(input_log_topic(settings.namespace), 0)
    admin = clients.admin(settings)
    reader = clients.consumer(settings)
    await asyncio.gather(admin.start(), reader.start())
    try:
        offsets = await admin.list_consumer_group_offsets(app_id(settings.namespace),
                                                          partitions=[tp])
        end = (await compat.end_offsets(reader, [tp]))[tp]
        committed = offsets.get(tp)
        return committed is not None and end > 0 and committed.offset == end
    finally:
        await asyncio.gather(admin.close(), reader.stop())


async def dead_letter(settings: Settings) -> DeadLetter:
    """The first record of the namespace's dead-letter topic."""
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        tps = [TopicPartition(qualified("deadletter", settings.namespace), p) for p in range(4)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def first() -> DeadLetter | None:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    return DeadLetter.model_validate_json(record.value)
            return None

        return await wait_for(first, timeout=30, interval=0.0, what="a dead letter")
    finally:
        await consumer.stop()


def by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["event_id"]: d for d in items}


async def test_a_scenario_through_the_worker_yields_the_golden_decisions(
    settings: Settings, producer: AIOKafkaProducer, workers: list[Worker], tmp_path: Path
) -> None:
    """The landslide scenario fed to a real worker yields exactly the golden decisions."""
    name = "landslide-warning"
    expected = read_expected(GOLDEN / name / "expected.jsonl")
    worker = Worker(settings, tmp_path / "worker.log")
    workers.append(worker)
    worker.start()
    # A poison message first: dead-lettered with its error, and nothing behind it stops.
    await producer.send_and_wait(qualified("hazards.observations", settings.namespace),
                                 b'{"type": "hazard.gauge_reading"}', key=b"broken-feed")
    feed = Feed(settings, producer, worker)
    try:
        await feed.send(read_events(GOLDEN / name / "input.jsonl"))
    finally:
        await feed.close()
    got = await decisions(settings, len(expected), worker)
    assert by_id(got) == by_id(expected)
    # HQ's approvals became versioned orders.
    issued = [d for d in got if d["type"] == "evacuation.order_issued"]
    assert {d["payload"]["area_ids"][0] for d in issued} == {"fujimi", "kojimachi", "jimbocho"}
    letter = await dead_letter(settings)
    assert (letter.service, letter.key) == (SOURCE, "broken-feed")
    assert "schema_version" in letter.error
    # SIGTERM: a clean stop (exit 0) well inside the supervisor's grace (measured ~2 s).
    assert worker.stop() == 0, worker.log()


async def test_a_killed_worker_restarts_with_its_state(
    settings: Settings, producer: AIOKafkaProducer, workers: list[Worker], tmp_path: Path
) -> None:
    """SIGKILL mid-scenario: the restarted worker raises and lifts the orders it issued before."""
    name = "heavy-rain-kandagawa"
    events = read_events(GOLDEN / name / "input.jsonl")
    expected = read_expected(GOLDEN / name / "expected.jsonl")
    # Cut after HQ's level-4 decisions: every later raise and lift needs that state.
    cut = next(i for i, e in enumerate(events) if e.occurred_at.isoformat().startswith(
        "2025-08-21T06:00")) + 1
    first = Worker(settings, tmp_path / "first.log")
    workers.append(first)
    first.start()
    feed = Feed(settings, producer, first)
    try:
        await feed.send(events[:cut])
        before = [d for d in expected if d["occurred_at"] <= "2025-08-21T06:00:00Z"]
        await decisions(settings, len(before), first)
        # Kill only once the worker has committed its whole input log: the restarted
        # worker then starts after it and knows the orders only from the changelog.
        await wait_for(lambda: log_committed(settings, first), timeout=30,
                       what="the committed input log")
        first.kill()
        second = Worker(settings, tmp_path / "second.log")
        workers.append(second)
        second.start()
        feed.worker = second
        await feed.send(events[cut:])
        got = await decisions(settings, len(expected), second)
    finally:
        await feed.close()
    assert by_id(got) == by_id(expected)
    lifted = [d for d in got if d["type"] == "evacuation.order_lifted"]
    assert len(lifted) == 4 and all(d["payload"]["version"] >= 2 for d in lifted)
