"""Reading a drill's events for the report: from the namespace's topics or the event store.

Both return :class:`~services.drill.report.model.Observed` events with a wall
time — when the broker received the record, or when the recorder stored it —
for :func:`~services.drill.report.model.build_report`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from aiokafka.structs import TopicPartition

from infra.kafka import clients
from infra.kafka.compat import end_offsets
from infra.settings import Settings
from schemas.errors import InvalidEvent
from schemas.events import decode_event
from schemas.topics import CATALOGUE, qualified
from services.drill.report.model import Observed

__all__ = ["collect", "collect_from_store"]


async def collect(settings: Settings, namespace: str) -> list[Observed]:
    """Every event on the namespace's catalogue topics, with the broker's receive time."""
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        present = await consumer.topics()
        tps = [TopicPartition(qualified(name, namespace), p)
               for name, spec in CATALOGUE.items() if spec.event_types
               and qualified(name, namespace) in present for p in range(spec.partitions)]
        if not tps:
            return []
        ends = await end_offsets(consumer, tps, profile=settings.kafka_profile)
        wanted = {tp: end for tp, end in ends.items() if end > 0}
        if not wanted:
            return []
        consumer.assign(list(wanted))
        await consumer.seek_to_beginning(*wanted)
        out: list[Observed] = []
        while wanted:
            batches = await consumer.getmany(*wanted, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.value is not None:
                        try:
                            event = decode_event(record.value)
                        except InvalidEvent:
                            continue  # the dead-letter topic's business, not the report's
                        wall = datetime.fromtimestamp(record.timestamp / 1000, UTC)
                        out.append(Observed(event, wall))
                if records and records[-1].offset + 1 >= wanted.get(tp, 0):
                    wanted.pop(tp, None)
        return out
    finally:
        await consumer.stop()


async def collect_from_store(database_url: str, namespace: str) -> list[Observed]:
    """Every stored event of ``namespace`` (wall time: when the recorder stored it)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("select envelope::text as envelope, stored_at from events "
                                "where namespace = $1 order by seq", namespace)
    finally:
        await conn.close()
    return [Observed(decode_event(r["envelope"]), r["stored_at"]) for r in rows]
