"""After the broker's log is lost: publish again what it acknowledged but nobody recorded.

An outbox row is marked sent once the broker acknowledged it. If the embedded
broker (memory storage) dies before the recorder stored that event, the event is
neither in the new, republished log nor in the event store: acknowledged, then
lost. The outboxes keep sent rows for days (``OUTBOX_RETENTION``), so after a
broker loss ``sonae up`` marks every sent row whose event the store does not hold
as unsent again; the relay publishes it once more, after the republish of the
store, in outbox (per-key) order. Consumers deduplicate by ``event_id``, so a row
that did reach a consumer costs nothing but a duplicate record.
"""

from __future__ import annotations

import asyncpg

from services.common.outbox import OutboxTable
from services.common.tables import missing_tables

__all__ = ["rearm_unrecorded"]


async def rearm_unrecorded(conn: asyncpg.Connection, table: OutboxTable, namespace: str) -> int:
    """Mark the namespace's sent rows of ``table`` that the event store lacks as unsent."""
    if await missing_tables(conn, (table.table, "events")):
        return 0
    status: str = await conn.execute(
        f"update {table.table} o set sent_at = null "
        "where o.namespace = $1 and o.sent_at is not null "
        "and not exists (select 1 from events e where e.event_id = o.event_id)", namespace)
    return int(status.rsplit(" ", 1)[-1])
