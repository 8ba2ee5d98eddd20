"""The embedded-broker compatibility layer: each Tansu quirk shown, and each fix shown working.

The quirk assertions pin Tansu's current behaviour on purpose: if a Tansu upgrade
fixes one, its test fails and tells us which part of infra.kafka.compat can go.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from infra.embedded.processes import spawn, stop_group, tail
from infra.kafka import clients, compat
from infra.kafka.errors import UnsupportedOnEmbeddedBroker
from infra.settings import KafkaProfile, Settings, load_settings
from tests.support import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    """Embedded-profile settings pointing at the session's broker."""
    return load_settings(kafka_bootstrap=kafka_bootstrap, kafka_profile=KafkaProfile.EMBEDDED)


async def create_topics(settings: Settings, topics: Mapping[str, int]) -> None:
    admin = clients.admin(settings)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()]
        )
    finally:
        await admin.close()


async def send_batch(producer: AIOKafkaProducer, topic: str, partition: int,
                     values: list[bytes]) -> None:
    """Produce ``values`` as exactly one record batch (the unit Tansu's ListOffsets counts)."""
    batch = producer.create_batch()
    for value in values:
        assert batch.append(key=None, value=value, timestamp=None) is not None
    batch.close()
    await (await producer.send_batch(batch, topic, partition=partition))


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer from the factory."""
    p = clients.producer(settings)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def reader(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A started group-less consumer from the factory, for assign()."""
    c = clients.consumer(settings)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


# --- end offsets ----------------------------------------------------------------


async def test_list_offsets_is_short_by_a_batch_and_end_offsets_is_exact(
    settings: Settings, namespace: str, producer: AIOKafkaProducer, reader: AIOKafkaConsumer
) -> None:
    """Tansu's ListOffsets answers the newest batch's first offset + 1; end_offsets is exact."""
    topic = f"{namespace}.ends"
    await create_topics(settings, {topic: 4})
    for b in range(3):  # partition 0: 3 batches of 100
        await send_batch(producer, topic, 0, [f"{b}-{i}".encode() for i in range(100)])
    await send_batch(producer, topic, 1, [b"only"])  # partition 1: one record
    for b in range(5):  # partition 3: 5 batches of 7; partition 2 stays empty
        await send_batch(producer, topic, 3, [f"{b}-{i}".encode() for i in range(7)])
    tps = [TopicPartition(topic, p) for p in range(4)]

    raw = await reader.end_offsets(tps)
    assert [raw[tp] for tp in tps] == [201, 1, 0, 29]  # the quirk, pinned

    exact = await compat.end_offsets(reader, tps)
    assert [exact[tp] for tp in tps] == [300, 1, 0, 35]
    # The apache profile trusts ListOffsets (correct on Apache Kafka).
    assert await compat.end_offsets(reader, tps, profile=KafkaProfile.APACHE) == raw
    assert reader.assignment() == set()  # the caller's consumer was not repositioned


# --- explicit positioning instead of "latest" -------------------------------------


async def test_latest_reset_replays_old_records_and_position_at_end_does_not(
    settings: Settings, namespace: str, producer: AIOKafkaProducer
) -> None:
    """A new group reset to 'latest' rereads old records; position_at_end sees only new ones."""
    topic = f"{namespace}.latest"
    await create_topics(settings, {topic: 1})
    await send_batch(producer, topic, 0, [f"old-{i}".encode() for i in range(50)])
    tp = TopicPartition(topic, 0)

    latest = clients.consumer(settings, topic, group_id=f"{namespace}.latest",
                              auto_offset_reset="latest")
    positioned = clients.consumer(settings, topic, group_id=f"{namespace}.positioned")
    await asyncio.gather(latest.start(), positioned.start())
    try:
        await wait_for(lambda: latest.assignment() and positioned.assignment(),
                       timeout=10, what="both groups to be assigned")
        # The quirk: the reset lands on the newest batch's first offset + 1, not 50.
        assert await latest.position(tp) == 1
        assert await compat.position_at_end(positioned, [tp]) == {tp: 50}

        new = [f"new-{i}".encode() for i in range(5)]
        for value in new:
            await producer.send_and_wait(topic, value, partition=0)
        got: list[bytes] = []

        async def received_all_new() -> bool:
            batch = await positioned.getmany(tp, timeout_ms=200)
            got.extend(r.value for r in batch.get(tp, []))
            return len(got) >= len(new)

        await wait_for(received_all_new, timeout=10, what="the new records")
        assert got == new
        replayed = await latest.getmany(tp, timeout_ms=2000, max_records=100)
        assert replayed[tp][0].value == b"old-1"  # 49 of the 50 old records come back
    finally:
        await asyncio.gather(latest.stop(), positioned.stop())


# --- fetch wait -----------------------------------------------------------------


async def hop_latencies(settings: Settings, topic: str, count: int,
                        **consumer_overrides: Any) -> list[float]:
    """Seconds from send_and_wait to receipt for ``count`` records sent one at a time.

    Each record is sent a quarter second after the previous one arrived, so the
    consumer's next fetch is already waiting at the broker: sent at once, the record
    races that fetch, and a fetch that finds it returns at once whatever its wait.
    """
    tp = TopicPartition(topic, 0)
    consumer = clients.consumer(settings, **consumer_overrides)
    producer = clients.producer(settings)
    await asyncio.gather(consumer.start(), producer.start())
    try:
        consumer.assign([tp])
        await compat.position_at_end(consumer, [tp])
        latencies = []
        for i in range(count):
            value = f"{consumer_overrides}-{i}".encode()
            await asyncio.sleep(0.25)
            started = time.perf_counter()
            await producer.send_and_wait(topic, value, partition=0)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=3000)
                if any(r.value == value for r in batch.get(tp, [])):
                    break
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())


async def test_fetch_wait_sets_the_hop_latency(settings: Settings, namespace: str) -> None:
    """A hop costs about the consumer's fetch wait: the layer's is far below faust's 1500 ms."""
    topic = f"{namespace}.hops"
    await create_topics(settings, {topic: 1})
    layer = await hop_latencies(settings, topic, 9)
    faust_default = await hop_latencies(settings, topic, 5, fetch_max_wait_ms=1500)
    assert statistics.median(layer) < 0.2, layer
    assert statistics.median(faust_default) > 0.3, faust_default


# --- group join -----------------------------------------------------------------


async def join_seconds(settings: Settings, topic: str, group_id: str, session_ms: int,
                       heartbeat_ms: int) -> float:
    consumer = clients.consumer(settings, topic, group_id=group_id,
                                session_timeout_ms=session_ms, heartbeat_interval_ms=heartbeat_ms)
    started = time.monotonic()
    await consumer.start()
    try:
        await wait_for(consumer.assignment, timeout=15, interval=0.02,
                       what=f"assignment with a {session_ms} ms session")
        return time.monotonic() - started
    finally:
        await consumer.stop()


async def test_group_join_takes_half_the_session_timeout(
    settings: Settings, namespace: str
) -> None:
    """Tansu holds a join for half the session: ~1 s with the layer's 2 s, ~5 s with 10 s."""
    topic = f"{namespace}.join"
    await create_topics(settings, {topic: 1})
    layer, ten_seconds = await asyncio.gather(
        join_seconds(settings, topic, f"{namespace}.fast", compat.SESSION_TIMEOUT_MS,
                     compat.HEARTBEAT_INTERVAL_MS),
        join_seconds(settings, topic, f"{namespace}.slow", 10_000, 3_000),
    )
    assert layer < 2.0, layer
    assert ten_seconds > 4.0, ten_seconds


# --- no idempotent producer -----------------------------------------------------


async def test_idempotent_producer_is_refused(settings: Settings) -> None:
    """Tansu refuses InitProducerId, so the layer never builds an idempotent producer."""
    raw = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True)
    try:
        with pytest.raises(KafkaError):
            await asyncio.wait_for(raw.start(), timeout=15)
    finally:
        await raw.stop()
    assert clients.producer_config(settings)["enable_idempotence"] is False
    with pytest.raises(UnsupportedOnEmbeddedBroker):
        clients.producer(settings, enable_idempotence=True)
    with pytest.raises(UnsupportedOnEmbeddedBroker):
        clients.producer(settings, transactional_id="x")
    with pytest.raises(UnsupportedOnEmbeddedBroker):
        compat.make_app("refused", settings, processing_guarantee="exactly_once")


def test_layer_is_off_in_the_apache_profile(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Against Apache Kafka the clients and faust apps keep their own settings."""
    apache = load_settings(kafka_bootstrap=kafka_bootstrap, kafka_profile=KafkaProfile.APACHE,
                           data_dir=tmp_path)
    assert compat.compat_for(apache) is None
    config = clients.consumer_config(apache, group_id="g")
    assert not {"session_timeout_ms", "heartbeat_interval_ms", "fetch_max_wait_ms"} & set(config)
    assert clients.producer_config(apache)["enable_idempotence"] is True
    options = compat.faust_settings(apache)
    assert options["broker"] == [f"kafka://{kafka_bootstrap}"]
    assert "broker_session_timeout" not in options
    app = compat.make_app("apache-app", apache)
    assert app.conf.broker_consumer[0].scheme == "kafka"
    assert app.tansu_compat is None


# --- faust table recovery -------------------------------------------------------

UPDATE_RECORDS = 500
KEYS_PER_RECORD = 10  # 5,000 updates; several per record so the newest batch holds many


class CounterWorker:
    """The tests.integration.faust_apps.counter worker as a child process."""

    def __init__(self, settings: Settings, namespace: str, workdir: Path, *,
                 fetch_wait_ms: int, end_offsets: str) -> None:
        self.app_id = f"{namespace}-counter"
        self.updates, self.pings, self.pongs = (f"{namespace}.{t}"
                                                for t in ("updates", "pings", "pongs"))
        self.changelog = f"{self.app_id}-values-changelog"
        self.reports = workdir / "reports"
        self.reports.mkdir(parents=True)
        self.log_path = workdir / "worker.log"
        self.env = {
            **os.environ, **settings.env(),
            "COUNTER_APP_ID": self.app_id, "COUNTER_UPDATES": self.updates,
            "COUNTER_PINGS": self.pings, "COUNTER_PONGS": self.pongs,
            "COUNTER_REPORTS": str(self.reports), "COUNTER_DATADIR": str(workdir / "faust"),
            "COUNTER_FETCH_WAIT_MS": str(fetch_wait_ms), "COUNTER_END_OFFSETS": end_offsets,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = spawn(
                [sys.executable, "-m", "faust", "-A", "tests.integration.faust_apps.counter",
                 "worker", "--without-web", "-l", "warn"],
                log=log, env=self.env, cwd=REPO,
            )

    def kill(self) -> None:
        """SIGKILL the worker (and its process group), as a crash would."""
        if self.proc is not None:
            stop_group(self.proc, sig=signal.SIGKILL)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout=5)
            self.proc = None

    async def report(self, name: str, timeout: float) -> dict[str, int]:
        """Wait for the worker's report for probe ``name`` and return the table."""
        path = self.reports / f"{name}.json"

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited:\n{tail(self.log_path, 30)}")
            return path.exists()

        try:
            await wait_for(ready, timeout=timeout, what=f"report {name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker log ---\n{tail(self.log_path, 30)}") from None
        values: dict[str, int] = json.loads(path.read_text())["values"]
        return values


@pytest.fixture
def counter_workers() -> Iterator[list[CounterWorker]]:
    """Collects the counter workers a test makes and stops them afterwards."""
    workers: list[CounterWorker] = []
    try:
        yield workers
    finally:
        for worker in workers:
            worker.kill()


async def restart_and_report(settings: Settings, worker: CounterWorker,
                             producer: AIOKafkaProducer) -> tuple[dict[str, int], int, int]:
    """Fill the table, SIGKILL and restart the worker.

    Returns the restored table and the changelog's ListOffsets end and true end.
    """
    await create_topics(settings, {worker.updates: 1, worker.pings: 1, worker.pongs: 1})
    worker.start()
    changelog = TopicPartition(worker.changelog, 0)
    updates = TopicPartition(worker.updates, 0)
    reader = clients.consumer(settings)
    admin = clients.admin(settings)
    await asyncio.gather(reader.start(), admin.start())
    try:
        records = keys = 0

        async def send_updates(count: int) -> None:
            nonlocal records, keys
            for _ in range(count):
                pairs = {f"k{keys + i:05d}": keys + i for i in range(KEYS_PER_RECORD)}
                await producer.send(worker.updates, json.dumps({"set": pairs}).encode(),
                                    partition=0)
                records, keys = records + 1, keys + KEYS_PER_RECORD
            records += 1  # the probe
            await producer.send_and_wait(worker.updates, json.dumps({"probe": str(keys)})
                                         .encode(), partition=0)
            assert len(await worker.report(str(keys), timeout=40)) == keys

        async def changelog_complete() -> bool:
            return (await compat.end_offsets(reader, [changelog]))[changelog] == keys

        async def input_committed() -> bool:
            offsets = await admin.list_consumer_group_offsets(worker.app_id, partitions=[updates])
            meta = offsets.get(updates)
            return meta is not None and meta.offset == records

        await send_updates(UPDATE_RECORDS)
        for _ in range(5):
            # Kill only once the changelog holds every update and the input offsets are
            # committed: then whatever the restarted worker lacks, recovery lost.
            await wait_for(changelog_complete, timeout=10, what="the complete changelog")
            await wait_for(input_committed, timeout=10, what="the committed input offset")
            raw_end = (await reader.end_offsets([changelog]))[changelog]
            true_end = (await compat.end_offsets(reader, [changelog]))[changelog]
            if raw_end < true_end:
                break
            # The newest changelog batch holds a single record, which ListOffsets does
            # count; one more burst of updates makes a batch the quirk cuts short.
            await send_updates(1)
        else:
            raise AssertionError("the changelog never ended in a batch of several records")
    finally:
        await asyncio.gather(reader.stop(), admin.close())

    worker.kill()
    worker.start()
    await producer.send_and_wait(worker.updates, b'{"probe": "after"}', partition=0)
    return await worker.report("after", timeout=40), raw_end, true_end


async def faust_hop_latencies(settings: Settings, worker: CounterWorker,
                              producer: AIOKafkaProducer, count: int) -> list[float]:
    """Seconds from sending a ping to reading the worker's pong (a faust + an aiokafka hop)."""
    tp = TopicPartition(worker.pongs, 0)
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        consumer.assign([tp])
        await compat.position_at_end(consumer, [tp])
        latencies = []
        for i in range(count):
            value = f"ping-{i}".encode()
            started = time.perf_counter()
            await producer.send_and_wait(worker.pings, value, partition=0)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=5000)
                if any(r.value == value for r in batch.get(tp, [])):
                    break
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        await consumer.stop()


async def test_faust_table_is_restored_exactly_after_a_kill(
    settings: Settings, namespace: str, tmp_path: Path, producer: AIOKafkaProducer,
    counter_workers: list[CounterWorker],
) -> None:
    """With the layer a SIGKILLed faust worker restores all 5,000 table updates, and hops fast."""
    worker = CounterWorker(settings, namespace, tmp_path, fetch_wait_ms=compat.FETCH_MAX_WAIT_MS,
                           end_offsets="highwater")
    counter_workers.append(worker)
    restored, raw_end, true_end = await restart_and_report(settings, worker, producer)
    assert raw_end < true_end  # the changelog ends in a batch that ListOffsets cuts short
    assert true_end >= 5000
    assert restored == {f"k{i:05d}": i for i in range(true_end)}
    hops = await faust_hop_latencies(settings, worker, producer, 5)
    assert statistics.median(hops) < 0.2, hops


async def test_faust_without_the_layer_loses_the_newest_batch_and_hops_slowly(
    settings: Settings, namespace: str, tmp_path: Path, producer: AIOKafkaProducer,
    counter_workers: list[CounterWorker],
) -> None:
    """faust's own end offsets (ListOffsets) restore only up to the newest batch's first record."""
    worker = CounterWorker(settings, namespace, tmp_path, fetch_wait_ms=1500,
                           end_offsets="list_offsets")
    counter_workers.append(worker)
    restored, raw_end, true_end = await restart_and_report(settings, worker, producer)
    # Recovery reads changelog offsets [0, raw_end), each one distinct key: the rest of
    # the newest batch is lost.
    assert len(restored) == raw_end < true_end
    assert restored == {f"k{i:05d}": i for i in range(raw_end)}
    hops = await faust_hop_latencies(settings, worker, producer, 3)
    assert statistics.median(hops) > 0.3, hops
