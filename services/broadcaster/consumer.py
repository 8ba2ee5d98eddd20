"""The broadcaster's Kafka side: orders and shelter states in, planned deliveries out.

Reads ``evacuation.orders`` and ``shelters.state`` of its namespace in the group
``broadcaster.<namespace>`` (``broadcaster`` when live). For each record:

1. decode; a record that is not an event goes to the dead-letter topic;
2. :func:`~services.broadcaster.domain.subject_of` — not public news: skip; an
   exercise subject outside a drill namespace: skip too (never broadcast in live);
3. :class:`BroadcastService` composes, builds CAP and stores the plan in one
   transaction (:meth:`~services.broadcaster.delivery.DeliveryStore.record_plan`),
   then wakes the channel workers. A message the templates cannot render (an
   area the region pack does not know) is dead-lettered with the reason;
4. after the whole batch is durable, the offsets are committed.

A crash before the commit replays the batch; each replayed version finds its
``broadcast_messages`` row and plans nothing. While the database is down the
batch is retried with bounded backoff and never committed; a stop request at
that moment leaves it uncommitted for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition
from pydantic import ValidationError

from schemas.common import Problem, utc_now
from schemas.errors import InvalidEvent
from schemas.events import decode_event
from schemas.topics import LIVE, is_drill, qualified
from services.broadcaster.delivery import TRANSIENT_DB_ERRORS, DeliveryStore, PlanOutcome
from services.broadcaster.domain import SOURCE, Planner, Subject, subject_of
from services.broadcaster.errors import TemplateError
from services.common.bus import Publisher
from services.common.retry import sleep_until

log = logging.getLogger(__name__)

__all__ = ["BroadcastConsumer", "BroadcastService", "ConsumerConfig", "consumed_topics",
           "group_id"]

Record: TypeAlias = ConsumerRecord[bytes, bytes]

_RETRY_MAX = 5.0


def consumed_topics(namespace: str = LIVE) -> list[str]:
    """The qualified topics the broadcaster reads."""
    return [qualified("evacuation.orders", namespace), qualified("shelters.state", namespace)]


def group_id(namespace: str = LIVE) -> str:
    """The consumer group: one per namespace, so a drill has its own positions."""
    return f"{SOURCE}.{namespace}" if namespace else SOURCE


class BroadcastService:
    """Plans one subject and stores the plan."""

    def __init__(self, planner: Planner, store: DeliveryStore, *, sender: str,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self._planner = planner
        self._store = store
        self._sender = sender
        self._clock = clock

    async def handle(self, subject: Subject) -> PlanOutcome:
        """Compose, build CAP, plan deliveries and store them (idempotent per version).

        Outside a drill namespace an exercise subject is not broadcast at all, on no
        channel (drill-marked or not): exercise traffic in live drives nothing.
        """
        if subject.exercise and not is_drill(self._store.namespace):
            log.info("not broadcasting exercise %s message %s v%d outside a drill "
                     "(cause %s)", subject.kind.value, subject.message_id, subject.version,
                     subject.cause.event_id)
            return PlanOutcome.EXERCISE
        previous = None
        order = subject.order
        if order is not None and order.payload.supersedes_version is not None:
            previous = await self._store.previous_cap(
                subject.message_id, order.payload.supersedes_version, self._sender)
        plan = self._planner.plan(subject, now=self._clock(), previous=previous)
        outcome = await self._store.record_plan(plan)
        if outcome is PlanOutcome.STORED:
            for warning in plan.warnings:
                log.warning("message %s v%d: %s", subject.message_id, subject.version, warning)
            refused = sum(1 for d in plan.deliveries if d.state == "refused")
            log.info("planned %s%s message %s v%d: %d deliveries (%d refused by the drill guard)",
                     "exercise " if subject.exercise else "", subject.kind.value,
                     subject.message_id, subject.version, len(plan.deliveries), refused)
        else:
            log.info("message %s v%d already planned (%s); nothing to do",
                     subject.message_id, subject.version, outcome.value)
        return outcome


@dataclass(frozen=True)
class ConsumerConfig:
    """Batching bounds."""

    max_records: int = 100
    poll_timeout_ms: int = 200


def _problems(error: InvalidEvent) -> tuple[Problem, ...]:
    problems: list[Problem] = []
    for p in error.problems[:50]:
        with contextlib.suppress(ValidationError):
            problems.append(Problem(code="invalid", field=p.field[:200] or None,
                                    message=p.message[:1000] or "invalid"))
    return tuple(problems)


class BroadcastConsumer:
    """Reads the namespace's orders and shelter states; commits after plans are durable."""

    def __init__(self, consumer: AIOKafkaConsumer, service: BroadcastService,
                 publisher: Publisher, *, on_planned: Callable[[], None] = lambda: None,
                 config: ConsumerConfig | None = None) -> None:
        self._consumer = consumer
        self._service = service
        self._publisher = publisher
        self._on_planned = on_planned
        self._config = config or ConsumerConfig()
        self.planned = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set."""
        while not stop.is_set():
            batch = await self._consumer.getmany(timeout_ms=self._config.poll_timeout_ms,
                                                 max_records=self._config.max_records)
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            for tp, records in batch.items():
                for record in records:
                    if not await self._handle(record, stop):
                        return  # stopped while the database was down: leave it uncommitted
                    offsets[tp] = OffsetAndMetadata(record.offset + 1, "")
            if offsets:
                await self._commit(offsets)

    async def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as e:
            # A rebalance took the partitions: their new owner replays these records,
            # and the ledger makes the replay plan nothing.
            log.warning("offset commit refused (%s); records will be replayed harmlessly", e)

    async def _handle(self, record: Record, stop: asyncio.Event) -> bool:
        if record.value is None:
            await self._dead_letter(record, "a record without a value (tombstone) is not an "
                                    "event", ())
            return True
        try:
            event = decode_event(record.value)
        except InvalidEvent as e:
            await self._dead_letter(record, e, _problems(e))
            return True
        subject = subject_of(event)
        if subject is None:
            return True
        delay = 0.1
        while True:
            try:
                outcome = await self._service.handle(subject)
            except TemplateError as e:
                await self._dead_letter(record, e, ())
                return True
            except TRANSIENT_DB_ERRORS as e:
                if stop.is_set():
                    return False
                log.warning("database unavailable while planning %s[%d]@%d (%s); retrying in "
                            "%.1fs", record.topic, record.partition, record.offset, e, delay)
                await sleep_until(stop, delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            if outcome is PlanOutcome.STORED:
                self.planned += 1
                self._on_planned()
            return True

    async def _dead_letter(self, record: Record, error: BaseException | str,
                           problems: tuple[Problem, ...]) -> None:
        delay = 0.1
        while True:
            try:
                await self._publisher.dead_letter(record, error, service=SOURCE,
                                                  problems=problems)
                return
            except KafkaError as e:
                log.warning("cannot dead-letter %s[%d]@%d (%s); retrying", record.topic,
                            record.partition, record.offset, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
