"""PostgreSQL adapter of the poller: entries handled, and each feed's conditional-GET validators.

Tables from migration ``0008_jma_feed``. An entry is written only once it is
done with (intake acknowledged it, ignored it, or it was dead-lettered), so an
entry missing here is fetched again on the next poll.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg

from services.common.tables import require_tables
from services.jma_feed.errors import JmaFeedTablesMissing

__all__ = ["REQUIRED_TABLES", "FeedStore", "Handled", "Validators"]

REQUIRED_TABLES: Final = ("jma_feed_entries", "jma_feed_state")


@dataclass(frozen=True)
class Validators:
    """What the last complete GET of a feed answered, for the next conditional GET."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Handled:
    """How one entry ended."""

    link: str
    feed: str
    title: str
    outcome: str
    """``accepted``, ``replayed``, ``ignored`` or ``dead_lettered``."""
    status_code: int | None
    message_id: str | None


class FeedStore:
    """The poller's durable memory."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def check_tables(self) -> None:
        """Raise :class:`JmaFeedTablesMissing` unless migration 0008 was applied."""
        async with self._pool.acquire() as conn:
            await require_tables(conn, REQUIRED_TABLES, JmaFeedTablesMissing,
                                 "tables {tables} are missing in schema {schema}: run "
                                 "`sonae db migrate` (migration 0008_jma_feed)")

    async def handled(self, links: Sequence[str]) -> set[str]:
        """Which of ``links`` are done with."""
        rows = await self._pool.fetch(
            "select link from jma_feed_entries where link = any($1::text[])", list(links))
        return {r["link"] for r in rows}

    async def record(self, entry: Handled) -> None:
        """Remember that an entry is done with (a second record of it changes nothing)."""
        await self._pool.execute(
            "insert into jma_feed_entries (link, feed, title, outcome, status_code, message_id) "
            "values ($1, $2, $3, $4, $5, $6) on conflict (link) do nothing",
            entry.link, entry.feed, entry.title[:500], entry.outcome, entry.status_code,
            entry.message_id)

    async def validators(self, feed: str) -> Validators:
        """The validators saved for ``feed`` (none before its first complete poll)."""
        row = await self._pool.fetchrow(
            "select etag, last_modified from jma_feed_state where feed = $1", feed)
        return Validators(row["etag"], row["last_modified"]) if row else Validators()

    async def save_validators(self, feed: str, validators: Validators) -> None:
        """Save what the feed answered, once every entry of that answer is handled."""
        await self._pool.execute(
            "insert into jma_feed_state (feed, etag, last_modified) values ($1, $2, $3) "
            "on conflict (feed) do update set etag = excluded.etag, "
            "last_modified = excluded.last_modified, polled_at = now()",
            feed, validators.etag, validators.last_modified)
