"""The CAP feed's storage (``cap_alerts``): what the CAP channel writes and the HTTP feed reads.

Every document stays at its URL for good. The Atom index lists the *current*
alerts: per order its latest version (an earlier one is ``superseded``), not
``cancelled`` (an earlier version of a lifted order), not past ``expires`` (a
Cancel carries one, so it is listed long enough for polling aggregators to see
it and then drops out).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

__all__ = ["CapFeedStore", "CapRecord", "FeedEntry"]


@dataclass(frozen=True)
class CapRecord:
    """One CAP document with the columns the feed needs."""

    identifier: str
    order_id: UUID
    version: int
    status: str
    msg_type: str
    title: str
    sent: datetime
    expires: datetime | None
    xml: bytes


@dataclass(frozen=True)
class FeedEntry:
    """One line of the Atom index."""

    identifier: str
    title: str
    sent: datetime
    status: str
    msg_type: str
    published_at: datetime


class CapFeedStore:
    """``cap_alerts`` through an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def publish(self, namespace: str, record: CapRecord) -> bool:
        """Store a document once; mark earlier versions superseded (and cancelled by a Cancel).

        Returns True if the document is new. Idempotent: storing it again is a no-op.
        A version that arrives after a later one is stored already superseded.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                """
                insert into cap_alerts (namespace, identifier, order_id, version, status,
                                        msg_type, title, xml, sent, expires, superseded,
                                        cancelled)
                values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                        exists (select 1 from cap_alerts
                                where namespace = $1 and order_id = $3 and version > $4),
                        exists (select 1 from cap_alerts
                                where namespace = $1 and order_id = $3 and version > $4
                                  and msg_type = 'Cancel'))
                on conflict (namespace, identifier) do nothing
                """,
                namespace, record.identifier, record.order_id, record.version, record.status,
                record.msg_type, record.title, record.xml, record.sent, record.expires,
            )
            await conn.execute(
                """
                update cap_alerts
                   set superseded = true,
                       cancelled = cancelled or $4
                 where namespace = $1 and order_id = $2 and version < $3
                   and (not superseded or (not cancelled and $4))
                """,
                namespace, record.order_id, record.version, record.msg_type == "Cancel",
            )
        return bool(status.endswith(" 1"))

    async def current(self, namespace: str, now: datetime, *, limit: int = 500) -> list[FeedEntry]:
        """The alerts the Atom index lists, newest first."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                select identifier, title, sent, status, msg_type, published_at
                  from cap_alerts
                 where namespace = $1 and not superseded and not cancelled
                   and (expires is null or expires > $2)
                 order by sent desc, identifier
                 limit $3
                """,
                namespace, now, limit,
            )
        return [FeedEntry(r["identifier"], r["title"], r["sent"], r["status"], r["msg_type"],
                          r["published_at"]) for r in rows]

    async def document(self, namespace: str, identifier: str) -> bytes | None:
        """The stored XML of one alert, or None."""
        async with self._pool.acquire() as conn:
            xml: bytes | None = await conn.fetchval(
                "select xml from cap_alerts where namespace = $1 and identifier = $2",
                namespace, identifier,
            )
        return xml
