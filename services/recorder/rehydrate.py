"""Rehydrate an empty broker from the event store (``sonae rehydrate``, ``sonae up``).

The embedded broker keeps nothing on disk, so after a restart its topics are
empty while PostgreSQL still holds every event. Rehydration creates the
catalogue's topics and republishes each stored event of the namespace to the
topic it was read from, with its original key, in ``seq`` (store) order:

- the bytes are ``encode_event(decode_event(stored))``, the canonical encoding
  every producer uses;
- one key's events keep their order: the key hashes to the same partition it
  did before (same key, same partition count), the recorder stored each
  partition's records in offset order, and one aiokafka producer sends a
  partition's batches one request at a time, in order;
- offsets are new (the broker starts from zero); consumers deduplicate by
  ``event_id``, so republishing onto a non-empty broker (``--force``) duplicates
  records but never effects. The recorder, reading them back, stores nothing.

Dead letters (table ``dead_letters``) are not republished: they are for repair,
not for consumers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TextIO

import asyncpg
from aiokafka.structs import TopicPartition

from infra.kafka import clients
from infra.kafka.compat import end_offsets
from infra.settings import Settings
from infra.topics import ensure_topics
from schemas.events import decode_event, encode_event
from schemas.topics import topics_in
from services.common.tables import missing_tables
from services.recorder.errors import BrokerNotEmpty

__all__ = ["is_broker_empty", "rehydrate", "rehydrate_if_empty", "stored_count"]

# Acknowledgements awaited per window: bounds memory, keeps the producer pipelined.
_WINDOW = 2000


async def stored_count(conn: asyncpg.Connection, namespace: str) -> int:
    """Events of ``namespace`` in the store (0 when the store was never migrated)."""
    if await missing_tables(conn, ("events",)):
        return 0
    count: int = await conn.fetchval("select count(*) from events where namespace = $1",
                                     namespace)
    return count


async def is_broker_empty(settings: Settings, namespace: str | None = None) -> bool:
    """True when every catalogue topic of the namespace is missing or holds no record.

    End offsets come from :func:`infra.kafka.compat.end_offsets`, which is right on
    the embedded broker too (its ListOffsets answer is short by a batch).
    """
    ns = settings.namespace if namespace is None else namespace
    wanted = {name for name, _ in topics_in(ns)}
    admin = clients.admin(settings)
    await admin.start()
    try:
        present = sorted(wanted & set(await admin.list_topics()))
        if not present:
            return True
        described = await admin.describe_topics(present)
    finally:
        await admin.close()
    partitions = [TopicPartition(t["topic"], p["partition"])
                  for t in described for p in t["partitions"]]
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        ends = await end_offsets(consumer, partitions, profile=settings.kafka_profile)
    finally:
        await consumer.stop()
    return all(offset == 0 for offset in ends.values())


async def rehydrate(
    settings: Settings,
    *,
    namespace: str | None = None,
    force: bool = False,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Republish the namespace's stored events into the broker; return how many.

    Raises BrokerNotEmpty unless the broker is empty or ``force`` is given.
    ``on_total`` receives the number of events to send, ``on_progress`` the number
    acknowledged since its previous call.
    """
    ns = settings.namespace if namespace is None else namespace
    if not force and not await is_broker_empty(settings, ns):
        raise BrokerNotEmpty(
            f"the broker already holds events of namespace {ns or 'live'!r}; rehydrating "
            "would republish every stored event (consumers deduplicate by event_id, but "
            "the topics would hold them twice). Use --force to do it anyway."
        )
    await ensure_topics(settings, ns)
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            total = await stored_count(conn, ns)
            if on_total is not None:
                on_total(total)
            if total == 0:
                return 0
            return await _republish(settings, conn, ns, on_progress)
    finally:
        await conn.close()


async def _republish(settings: Settings, conn: asyncpg.Connection, namespace: str,
                     on_progress: Callable[[int], None] | None) -> int:
    # Larger batches than aiokafka's 16 KiB default: this is a bulk load.
    producer = clients.producer(settings, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future[object]] = []
        async for row in conn.cursor(
            "select topic, key, envelope::text as envelope from events "
            "where namespace = $1 order by seq", namespace, prefetch=_WINDOW,
        ):
            value = encode_event(decode_event(row["envelope"]))
            key = row["key"].encode("utf-8") if row["key"] is not None else None
            pending.append(await producer.send(row["topic"], value, key=key))
            if len(pending) >= _WINDOW:
                sent += await _settle(pending, on_progress)
        sent += await _settle(pending, on_progress)
    finally:
        await producer.stop()
    return sent


async def _settle(pending: list[asyncio.Future[object]],
                  on_progress: Callable[[int], None] | None) -> int:
    if not pending:
        return 0
    await asyncio.gather(*pending)
    n = len(pending)
    pending.clear()
    if on_progress is not None:
        on_progress(n)
    return n


async def rehydrate_if_empty(settings: Settings, *, out: TextIO) -> int:
    """What ``sonae up`` runs after migrations and topics, before the services start:
    republish the store when the broker is empty and the store is not.

    Returns the number of events republished (0 when nothing was done) and writes
    one line to ``out`` when it acts.
    """
    conn = await asyncpg.connect(settings.database_url)
    try:
        stored = await stored_count(conn, settings.namespace)
    finally:
        await conn.close()
    if stored == 0 or not await is_broker_empty(settings):
        return 0
    out.write(f"  rehydrate   the broker is empty; republishing {stored} stored events\n")
    out.flush()
    sent = await rehydrate(settings, force=True)
    out.write(f"  rehydrate   {sent} events republished from the event store\n")
    return sent
