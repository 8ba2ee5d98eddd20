"""Typed publishing and dead-lettering on top of the Kafka client factories.

A :class:`Publisher` routes each event through the topic catalogue (topic, key,
encoding), so a service can only produce an event to the topic that carries it,
keyed by its aggregate, in its own namespace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from schemas.common import Problem, utc_now
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope
from schemas.topics import qualified, route
from services.common.deadletter import letter_for

log = logging.getLogger(__name__)


class Publisher:
    """Produce typed events to their catalogue topics in one namespace."""

    def __init__(self, producer: AIOKafkaProducer, namespace: str) -> None:
        self._producer = producer
        self.namespace = namespace

    async def publish(self, event: Envelope) -> None:
        """Produce one event and wait for the broker's acknowledgement."""
        routed = route(event, self.namespace)
        await self._producer.send_and_wait(routed.topic, routed.value, key=routed.key)

    async def publish_many(self, events: Iterable[Envelope]) -> int:
        """Produce events pipelined, then wait for every acknowledgement; return the count.

        Order is kept per partition (the producer sends each partition's batches in
        order), which is the only order Kafka promises anyway.
        """
        futures = []
        for event in events:
            routed = route(event, self.namespace)
            futures.append(await self._producer.send(routed.topic, routed.value, key=routed.key))
        if futures:
            await asyncio.gather(*futures)
        return len(futures)

    async def publish_raw(self, topic: str, value: bytes, key: bytes | None) -> None:
        """Produce pre-encoded bytes to a qualified topic (replays, rehydration)."""
        await self._producer.send_and_wait(topic, value, key=key)

    async def dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        error: BaseException | str,
        *,
        service: str,
        problems: tuple[Problem, ...] = (),
    ) -> DeadLetter:
        """Send ``record`` to the namespace's dead-letter topic with the error; return it."""
        letter = letter_for(record, error, service=service, failed_at=utc_now(),
                            problems=problems)
        await self._producer.send_and_wait(
            qualified("deadletter", self.namespace),
            letter.model_dump_json().encode("utf-8"),
            key=letter.key_bytes(),  # the key as the letter keeps it: without a token
        )
        log.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition,
                    record.offset, letter.error)
        return letter
