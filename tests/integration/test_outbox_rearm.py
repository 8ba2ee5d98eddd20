"""After a broker loss, sent outbox rows the event store lacks are published again."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.broadcaster.dispatch import BROADCAST_OUTBOX
from services.common.outbox import OutboxTable
from services.common.rearm import rearm_unrecorded
from services.intake.store import OUTBOX
from tests.support import prepare_schema

pytestmark = pytest.mark.integration


async def _row(conn: asyncpg.Connection, table: str, namespace: str, *, sent: bool) -> uuid.UUID:
    event_id = uuid.uuid4()
    columns = await conn.fetch(
        "select column_name from information_schema.columns "
        "where table_schema = current_schema() and table_name = $1", table)
    names = {c["column_name"] for c in columns}
    values: dict[str, object] = {"topic": "reports", "key": b"k", "value": b"{}",
                                 "event_id": event_id, "namespace": namespace}
    if "event_type" in names:
        values["event_type"] = "report.accepted"
    values = {k: v for k, v in values.items() if k in names}
    placeholders = ", ".join(f"${i + 1}" for i in range(len(values)))
    await conn.execute(f"insert into {table} ({', '.join(values)}, sent_at) "
                       f"values ({placeholders}, {'now()' if sent else 'null'})",
                       *values.values())
    return event_id


async def _store(conn: asyncpg.Connection, event_id: uuid.UUID, namespace: str) -> None:
    await conn.execute(
        "insert into events (event_id, type, schema_version, topic, partition, \"offset\", "
        "key, occurred_at, recorded_at, namespace, envelope) values "
        "($1, 'report.accepted', 1, 'reports', 0, 0, 'k', now(), now(), $2, '{}')",
        event_id, namespace)


@pytest.mark.parametrize("table", [OUTBOX, BROADCAST_OUTBOX], ids=lambda t: t.table)
async def test_only_sent_rows_missing_from_the_store_are_rearmed(db_pool: asyncpg.Pool,
                                                                  table: OutboxTable) -> None:
    await prepare_schema(db_pool)
    async with db_pool.acquire() as conn:
        recorded = await _row(conn, table.table, "", sent=True)
        await _store(conn, recorded, "")
        lost = await _row(conn, table.table, "", sent=True)
        await _row(conn, table.table, "", sent=False)
        other_namespace = await _row(conn, table.table, "drill.x", sent=True)
        assert await rearm_unrecorded(conn, table, "") == 1
        unsent = {r["event_id"] for r in await conn.fetch(
            f"select event_id from {table.table} where sent_at is null and namespace = ''")}
        assert lost in unsent and recorded not in unsent
        assert await conn.fetchval(f"select sent_at is not null from {table.table} "
                                   "where event_id = $1", other_namespace)
        assert await rearm_unrecorded(conn, table, "") == 0  # nothing twice
