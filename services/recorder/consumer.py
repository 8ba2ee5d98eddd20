"""The recorder's Kafka side: read a batch, decode it, store it, then commit its offsets.

Two tasks in one task group form a short pipeline, so that decoding (CPU in this
process) overlaps with writing (CPU in PostgreSQL) on a multi-core machine:

- the *reader* fetches records with ``getmany`` (bounded by ``max_records`` and
  ``poll_timeout_ms``) and decodes each one into an event-store row; a record
  that is not an event is set aside for the dead-letter topic, so it never
  blocks its partition;
- the *writer* stores each batch in one transaction, retrying with bounded
  exponential backoff while the database is unreachable (the batch is neither
  skipped nor committed meanwhile), publishes the set-aside records as dead
  letters, and only then commits the batch's offsets.

A crash at any point before the commit replays the batch; the replay appends
nothing because ``event_id`` is unique. On SIGTERM the reader stops fetching and
the writer finishes what it holds, commits, and returns; if the database is
down at that moment, the writer gives up on its batch without committing it.

What is recorded: every event topic of the namespace, and the ``deadletter``
topic into ``dead_letters`` (the broker keeps nothing on disk, so the database
is where a dead letter survives). ``intake.raw`` is not read: it carries raw
machine input, and intake turns every raw record into an event or a dead
letter, both of which are recorded.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition
from pydantic import ValidationError

from schemas.common import Problem
from schemas.errors import InvalidEvent
from schemas.events import EVENT_ADAPTER, Event, decode_event, encode_event
from schemas.topics import CATALOGUE, LIVE, qualified
from services.common.bus import Publisher
from services.common.retry import sleep_until
from services.recorder.domain import (
    DeadLetterRow,
    Recorded,
    catalogue_name_of,
    dead_letter_row,
    event_row,
    key_text,
)
from services.recorder.errors import BatchRejected, NotAnEvent, StoreUnavailable
from services.recorder.store import EventStore

log = logging.getLogger(__name__)

__all__ = [
    "SERVICE",
    "Batch",
    "Recorder",
    "RecorderConfig",
    "group_id",
    "prepare_batch",
    "prepare_batch_async",
    "recorded_topics",
]

SERVICE = "recorder"
"""The ``source``/``service`` name the recorder signs dead letters with."""

# Not events: raw machine input that intake validates (its outcomes are recorded).
_NOT_RECORDED = frozenset({"intake.raw"})

Record: TypeAlias = ConsumerRecord[bytes, bytes]
T = TypeVar("T")


def recorded_topics(namespace: str = LIVE) -> list[str]:
    """The qualified topics the recorder reads: every catalogue topic but ``intake.raw``."""
    return [qualified(name, namespace) for name in CATALOGUE if name not in _NOT_RECORDED]


def group_id(namespace: str = LIVE) -> str:
    """The recorder's consumer group: one per namespace, so a drill is recorded apart."""
    return f"{SERVICE}.{namespace}" if namespace else SERVICE


@dataclass(frozen=True)
class RecorderConfig:
    """Batching and retry bounds."""

    max_records: int = 5000
    """Largest batch (one transaction): big enough to amortise the per-batch round trips
    and the commit, small enough that a replay after a crash is cheap."""
    poll_timeout_ms: int = 200
    """How long one fetch may wait for records; also how soon a stop is noticed."""
    read_ahead: int = 1
    """Decoded batches that may wait for the writer."""
    retry_initial: float = 0.1
    """First backoff after a database error, in seconds; doubles each time..."""
    retry_max: float = 5.0
    """...up to this."""


@dataclass
class Batch:
    """One fetch, decoded: what to store, what to dead-letter, and the offsets to commit."""

    events: list[Recorded] = field(default_factory=list)
    sources: list[Record] = field(default_factory=list)
    """The record each of ``events`` came from (same order)."""
    letters: list[DeadLetterRow] = field(default_factory=list)
    rejects: list[tuple[Record, str, tuple[Problem, ...]]] = field(default_factory=list)
    """Records that are not events, with the error and field problems."""
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    """Next offset per partition, committed once the batch is stored."""
    size: int = 0


def _problems(error: InvalidEvent) -> tuple[Problem, ...]:
    problems: list[Problem] = []
    for p in error.problems[:100]:
        try:
            problems.append(Problem(code="invalid", field=p.field[:200] or None,
                                    message=p.message[:1000] or "invalid"))
        except ValidationError:
            continue  # the error text still carries it; a problem entry is a courtesy
    return tuple(problems)


def _decode(value: bytes) -> tuple[Event, str]:
    """The event in ``value`` and the JSON to store for it.

    The JSON is the record as it crossed the bus when that is already the current
    shape of its type, which is exactly when the union validates it as it stands
    (every event class pins ``schema_version`` to a Literal); otherwise (an older
    version, upcast on decode) the current shape, so the row's schema_version
    describes it. Re-encoding every event would cost about a fifth of the recorder's
    CPU per event, and re-encoding every event of a type that merely *has* an
    upcaster (most reports) was still ~5 % (jsonb keeps the meaning, not the bytes,
    either way). Export and rehydrate always re-encode canonically.

    Raises InvalidEvent as :func:`decode_event` does.
    """
    try:
        return EVENT_ADAPTER.validate_json(value), value.decode("utf-8")
    except ValidationError:
        # Old version or not an event: the full path upcasts or names the faults.
        event = decode_event(value)
    return event, encode_event(event).decode("utf-8")


def prepare_batch(fetched: Mapping[TopicPartition, Sequence[Record]]) -> Batch:
    """Decode a ``getmany`` result into a :class:`Batch` (no I/O)."""
    batch = Batch()
    for tp, records in fetched.items():
        if records:
            deadletter = catalogue_name_of(tp.topic) == "deadletter"
            for record in records:
                _add_record(batch, record, deadletter=deadletter)
            batch.offsets[tp] = records[-1].offset + 1
    return batch


async def prepare_batch_async(fetched: Mapping[TopicPartition, Sequence[Record]],
                              *, slice_size: int = 100) -> Batch:
    """:func:`prepare_batch`, yielding to the event loop every ``slice_size`` records.

    Decoding a whole batch takes a few hundred milliseconds of CPU. Done in one go
    it would hold up every reply the writer awaits meanwhile (COPY, projection
    queries, commit: several round trips per batch), so the two tasks would take
    turns instead of overlapping with PostgreSQL's work.
    """
    batch = Batch()
    done = 0
    for tp, records in fetched.items():
        if records:
            deadletter = catalogue_name_of(tp.topic) == "deadletter"
            for record in records:
                _add_record(batch, record, deadletter=deadletter)
                done += 1
                if done % slice_size == 0:
                    await asyncio.sleep(0)
            batch.offsets[tp] = records[-1].offset + 1
    return batch


def _add_record(batch: Batch, record: Record, *, deadletter: bool) -> None:
    batch.size += 1
    if deadletter:
        _add_letter(batch, record)
        return
    try:
        key = key_text(record.key)
        if record.value is None:
            raise NotAnEvent("a record without a value (tombstone) is not an event")
        event, envelope = _decode(record.value)
    except InvalidEvent as e:
        batch.rejects.append((record, f"{type(e).__name__}: {e}", _problems(e)))
        return
    except NotAnEvent as e:
        batch.rejects.append((record, f"{type(e).__name__}: {e}", ()))
        return
    row = event_row(event, topic=record.topic, partition=record.partition,
                    offset=record.offset, key=key, envelope=envelope)
    batch.events.append(Recorded(row, event))
    batch.sources.append(record)


def _add_letter(batch: Batch, record: Record) -> None:
    if record.value is None:
        log.warning("skipped an empty record on %s[%d]@%d", record.topic, record.partition,
                    record.offset)
        return
    try:
        batch.letters.append(dead_letter_row(record.value, topic=record.topic))
    except ValidationError as e:
        # Dead-lettering a dead letter would loop; this is the end of the line.
        log.error("skipped a malformed dead letter on %s[%d]@%d: %s", record.topic,
                  record.partition, record.offset, e.errors()[:3])


class Recorder:
    """Consume the namespace's topics into the event store (see the module docstring)."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        store: EventStore,
        publisher: Publisher,
        *,
        config: RecorderConfig | None = None,
    ) -> None:
        self._consumer = consumer
        self._store = store
        self._publisher = publisher
        self._config = config or RecorderConfig()
        self.recorded = 0
        """Events appended by this process (new ones only)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Record until ``stop`` is set; the consumer and producer must be started."""
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=self._config.read_ahead)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._read(queue, stop), name="recorder-read")
            tg.create_task(self._write(queue, stop), name="recorder-write")

    async def _read(self, queue: asyncio.Queue[Batch | None], stop: asyncio.Event) -> None:
        while not stop.is_set():
            fetched = await self._consumer.getmany(
                timeout_ms=self._config.poll_timeout_ms, max_records=self._config.max_records)
            if fetched:
                await queue.put(await prepare_batch_async(fetched))
        # Only on a normal stop: if this task fails, the task group cancels the writer.
        await queue.put(None)

    async def _write(self, queue: asyncio.Queue[Batch | None], stop: asyncio.Event) -> None:
        abandoned = False
        while True:
            batch = await queue.get()
            if batch is None:
                return
            if abandoned:
                continue  # not committed: read again after the restart
            if not await self._store_batch(batch, stop):
                abandoned = True
                log.warning("stopping with %d records unwritten (database unreachable); "
                            "they are not committed and will be read again", batch.size)
                continue
            for record, error, problems in batch.rejects:
                await self._publisher.dead_letter(record, error, service=SERVICE,
                                                  problems=problems)
            await self._commit(batch.offsets)

    async def _store_batch(self, batch: Batch, stop: asyncio.Event) -> bool:
        """Write the batch, retrying while the database is unreachable; False if stopped."""
        try:
            written = await self._retrying(
                lambda: self._store.write(batch.events, batch.letters), stop)
        except BatchRejected as e:
            log.warning("the database refused a batch of %d records (%s); "
                        "writing them one at a time", batch.size, e)
            return await self._store_one_by_one(batch, stop)
        if written is None:
            return False
        self.recorded += written
        log.debug("stored %d new events of %d records", written, batch.size)
        return True

    async def _store_one_by_one(self, batch: Batch, stop: asyncio.Event) -> bool:
        for recorded, source in zip(batch.events, batch.sources, strict=True):
            try:
                written = await self._retrying(functools.partial(self._store.write, [recorded]),
                                               stop)
            except BatchRejected as e:
                batch.rejects.append((source, f"refused by the event store: {e}", ()))
                continue
            if written is None:
                return False
            self.recorded += written
        for letter in batch.letters:
            try:
                if await self._retrying(functools.partial(self._store.write, (), [letter]),
                                        stop) is None:
                    return False
            except BatchRejected as e:
                log.error("the database refused dead letter %s (%s): %s", letter.letter_id,
                          letter.topic, e)
        return True

    async def _retrying(self, attempt: Callable[[], Awaitable[T]],
                        stop: asyncio.Event) -> T | None:
        """Run ``attempt`` until it stops raising StoreUnavailable; None once stopped."""
        delay = self._config.retry_initial
        while True:
            try:
                return await attempt()
            except StoreUnavailable as e:
                if stop.is_set():
                    return None
                log.warning("event store unavailable (%s); retrying in %.1fs", e, delay)
                await sleep_until(stop, delay)
                delay = min(delay * 2, self._config.retry_max)

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        assigned = self._consumer.assignment()
        mine = {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()
                if tp in assigned}
        if not mine:
            return
        try:
            await self._consumer.commit(mine)
        except (CommitFailedError, IllegalStateError) as e:
            # The partitions moved to another member; it reads these records again and
            # the store ignores the events it already holds.
            log.warning("offsets not committed (group rebalanced): %s", e)
