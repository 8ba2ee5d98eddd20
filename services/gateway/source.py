"""Where the picture comes from: the event store on a cold start, then Kafka, live.

Start-up (:meth:`Source.start`):

1. create the namespace's topics if missing, assign one consumer to every
   partition of the COP topics, and read the log's end offsets (corrected on
   the embedded broker);
2. read each non-empty partition's first record: its marker (positions.py);
3. cold start from the recorder's ``events`` table: for each partition, the
   highest offset stored and its event id. A partition is trusted only if the
   broker holds the same event at that offset — after a broker was emptied and
   rehydrated the stored offsets belong to the old log, and that partition is
   read from the broker instead. The trusted rows (up to those offsets) are
   folded into the picture, and Kafka is read from the next offset. When the
   store is empty, unreachable or not migrated, every partition is read from
   the broker's beginning (the embedded broker keeps everything);
4. read Kafka until every partition reaches the end offsets of step 1; then the
   hub is *ready* and clients get their first snapshot.

The topics read are :data:`~services.gateway.positions.COP_TOPICS` (those of the
append-only ``TOPIC_CODES`` that the catalogue holds), people and supplies
(``people.athome``, ``supplies.requests``, ``generators``) included.

The projections of migration 0003 are not used: they hold no offsets, and a
position must say exactly which records a picture includes.

Then :meth:`Source.run` reads forever, applying each record in partition order
within each fetched batch. If a partition's offsets go backwards (the broker
lost its log while we ran), the source raises :class:`LogReplaced`; the service
restarts the source and the clients resume with fresh snapshots.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from infra.kafka import clients, compat
from infra.settings import Settings
from infra.topics import ensure_topics
from schemas.errors import InvalidEvent
from schemas.events import Event, decode_event
from schemas.topics import qualified, split_qualified
from services.gateway.cop import COP
from services.gateway.errors import LogReplaced
from services.gateway.hub import Hub
from services.gateway.positions import COP_TOPICS, Partition, marker_of
from services.gateway.reducer import reduce

log = logging.getLogger(__name__)

__all__ = ["POLL_TIMEOUT_MS", "YIELD_EVERY", "Source", "StoreSeed", "fold_store"]

POLL_TIMEOUT_MS: Final = 500
"""How long one fetch waits for records before the loop checks for a stop."""
YIELD_EVERY: Final = 64
"""Changes applied before the source lets other tasks (client writes, readers) run."""
PROBE_TIMEOUT: Final = 15.0
"""Seconds to read one record per partition at start-up before giving up."""

_LATEST_STORED = """
select distinct on (topic, partition) topic, partition, "offset", event_id
from events
where namespace = $1 and topic = any($2::text[])
order by topic, partition, "offset" desc
"""
_STORED = """
select topic, partition, "offset", envelope::text
from events
where namespace = $1 and topic = any($2::text[])
order by seq
"""


@dataclass(frozen=True)
class StoreSeed:
    """A picture folded from the event store, and the offsets it covers."""

    cop: COP
    offsets: Mapping[Partition, int]
    events: int


def _partition(tp: TopicPartition) -> Partition:
    return split_qualified(tp.topic)[1].name, tp.partition


def _decode(value: bytes | str | None) -> Event | None:
    if value is None:
        return None
    try:
        return decode_event(value)
    except InvalidEvent as e:
        log.warning("skipping a record that is not an event: %s", e)
        return None


def _event_id(record: ConsumerRecord[bytes, bytes]) -> str | None:
    try:
        document: Any = json.loads(record.value) if record.value is not None else None
    except ValueError:
        return None
    return str(document.get("event_id")) if isinstance(document, dict) else None


async def read_at(consumer: AIOKafkaConsumer, wanted: Mapping[TopicPartition, int],
                  ends: Mapping[TopicPartition, int], *, timeout: float = PROBE_TIMEOUT
                  ) -> dict[TopicPartition, ConsumerRecord[bytes, bytes]]:
    """The first record at or after each wanted offset (none where the log is shorter).

    ``consumer`` must already be assigned the partitions; this moves its positions
    (the caller seeks afterwards) and pauses the partitions it has read.
    """
    pending = {tp: offset for tp, offset in wanted.items() if offset < ends.get(tp, 0)}
    found: dict[TopicPartition, ConsumerRecord[bytes, bytes]] = {}
    if not pending:
        return found
    consumer.resume(*pending)
    for tp, offset in pending.items():
        consumer.seek(tp, offset)
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not read {sorted(map(str, pending))} at start-up")
        batches = await consumer.getmany(*pending, timeout_ms=200, max_records=len(pending))
        for tp, records in batches.items():
            for record in records:
                if tp in pending and record.offset >= pending[tp]:
                    found[tp] = record
                    del pending[tp]
                    consumer.pause(tp)
                    break
    return found


async def fold_store(pool: asyncpg.Pool, namespace: str, cop: COP,
                     trusted: Mapping[Partition, int]) -> StoreSeed:
    """Fold the stored events of ``trusted`` partitions, up to each given next offset."""
    topics = [qualified(name, namespace) for name in COP_TOPICS]
    count = 0
    async with pool.acquire() as conn, conn.transaction():
        async for row in conn.cursor(_STORED, namespace, topics, prefetch=2000):
            partition = (split_qualified(row["topic"])[1].name, row["partition"])
            if row["offset"] >= trusted.get(partition, 0):
                continue
            event = _decode(row["envelope"])
            if event is not None:
                cop, _ = reduce(cop, event)
                count += 1
    return StoreSeed(cop, dict(trusted), count)


class Source:
    """Reads the COP topics of one namespace into a :class:`Hub`."""

    def __init__(self, settings: Settings, hub: Hub, *, pool: asyncpg.Pool | None = None) -> None:
        self.settings = settings
        self.hub = hub
        self.pool = pool
        self.namespace = settings.namespace
        self.consumer: AIOKafkaConsumer | None = None
        self.partitions: list[TopicPartition] = []
        self.startup_ends: dict[TopicPartition, int] = {}
        self.seeded_events = 0

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        names = [qualified(name, self.namespace) for name in COP_TOPICS]
        deadline = time.monotonic() + PROBE_TIMEOUT
        while True:
            await consumer.topics()  # refreshes the metadata
            found = {name: consumer.partitions_for_topic(name) for name in names}
            if all(found.values()):
                return [TopicPartition(name, p)
                        for name in names for p in sorted(found[name] or ())]
            if time.monotonic() > deadline:
                missing = [n for n, p in found.items() if not p]
                raise TimeoutError(f"topics {missing} have no partitions")
            await asyncio.sleep(0.2)

    async def start(self) -> None:
        """Connect, cold-start the picture, and position the consumer (steps 1–3)."""
        await ensure_topics(self.settings, self.namespace)
        consumer = clients.consumer(self.settings, group_id=None)
        await consumer.start()
        self.consumer = consumer
        tps = await self._partitions(consumer)
        self.partitions = tps
        consumer.assign(tps)
        ends = await compat.end_offsets(consumer, tps, profile=self.settings.kafka_profile)
        starts = await consumer.beginning_offsets(tps)
        self.startup_ends = dict(ends)
        # The same consumer reads the few records start-up needs, then is positioned.
        firsts = await read_at(consumer, starts, ends)
        for tp, record in firsts.items():
            self.hub.set_marker(_partition(tp), marker_of(
                record.offset, record.timestamp, record.key, record.value))
        trusted = await self._trusted_store_offsets(consumer, ends)
        consumer.resume(*tps)
        self.hub.partitions = frozenset(_partition(tp) for tp in tps)
        if trusted and self.pool is not None:
            seed = await fold_store(self.pool, self.namespace, self.hub.cop, trusted)
            self.hub.seed(seed.cop, seed.offsets)
            self.seeded_events = seed.events
            log.info("cold start: folded %d stored events of %d partitions from the event store",
                     seed.events, len(trusted))
        for tp in tps:
            offset = self.hub.offsets.get(_partition(tp), 0)
            if offset > 0:
                consumer.seek(tp, offset)
            else:
                await consumer.seek_to_beginning(tp)

    async def _trusted_store_offsets(self, probe: AIOKafkaConsumer,
                                     ends: Mapping[TopicPartition, int]) -> dict[Partition, int]:
        if self.pool is None:
            return {}
        topics = [qualified(name, self.namespace) for name in COP_TOPICS]
        try:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(_LATEST_STORED, self.namespace, topics)
        except (OSError, asyncpg.PostgresError) as e:
            log.warning("cold start: event store unavailable (%s); reading the broker", e)
            return {}
        latest = {TopicPartition(r["topic"], r["partition"]): (r["offset"], str(r["event_id"]))
                  for r in rows}
        records = await read_at(probe, {tp: offset for tp, (offset, _) in latest.items()}, ends)
        trusted: dict[Partition, int] = {}
        for tp, (offset, event_id) in latest.items():
            record = records.get(tp)
            if record is not None and record.offset == offset and _event_id(record) == event_id:
                trusted[_partition(tp)] = offset + 1
            else:
                log.warning("cold start: stored offsets of %s[%d] are not this broker's log; "
                            "reading it from the broker", tp.topic, tp.partition)
        return trusted

    def caught_up(self) -> bool:
        """Whether every partition has been read up to its end at start-up."""
        return all(self.hub.offsets.get(_partition(tp), 0) >= end
                   for tp, end in self.startup_ends.items())

    async def run(self, stop: asyncio.Event) -> None:
        """Apply records until ``stop`` is set; mark the hub ready once caught up."""
        consumer = self.consumer
        if consumer is None:
            raise RuntimeError("Source.start() must run first")
        names = {tp: _partition(tp) for tp in self.partitions}
        if self.caught_up():
            self.hub.ready.set()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            applied = 0
            for tp in sorted(batches, key=lambda t: (t.topic, t.partition)):
                partition = names[tp]
                for record in batches[tp]:
                    applied += self._apply(partition, record)
                    if applied >= YIELD_EVERY:
                        # Let writers and readers run: a fetched batch can hold
                        # thousands of changes, and no client hears of any while we fold.
                        # Within a slice, each client's changes leave in one write.
                        applied = 0
                        await asyncio.sleep(0)
            if not self.hub.ready.is_set() and self.caught_up():
                log.info("caught up: %d events applied, position %s", self.hub.applied,
                         self.hub.position_text()[:24] + "…")
                self.hub.ready.set()

    def _apply(self, partition: Partition, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Apply one record; return whether it was an event (and so may have changed things)."""
        expected = self.hub.offsets.get(partition, 0)
        if record.offset < expected:
            raise LogReplaced(f"{partition[0]}[{partition[1]}] went back from offset "
                              f"{expected} to {record.offset}")
        if partition not in self.hub.markers:
            self.hub.set_marker(partition, marker_of(record.offset, record.timestamp,
                                                     record.key, record.value))
        event = _decode(record.value)
        self.hub.apply(partition, record.offset, event)
        return event is not None

    async def stop(self) -> None:
        """Close the consumer."""
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
