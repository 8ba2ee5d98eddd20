"""Export a window of the event store as JSONL (``sonae events export``).

One event per line, each the canonical encoding ``encode_event(decode_event(stored))``:
byte for byte what a producer writes, current schema versions, so the drill runner
or any consumer reads the file with ``decode_event``. Order: event time
(``occurred_at``), ties by store order (``seq``); the window is event time too,
``since`` inclusive and ``until`` exclusive. Rows are read through a server-side
cursor inside one repeatable-read transaction, so the count and the rows agree
and memory stays flat however large the window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

import asyncpg

from schemas.events import decode_event, encode_event
from schemas.topics import LIVE, validate_namespace
from services.common.cli import parse_instant
from services.recorder.errors import InvalidWindow

__all__ = ["Window", "count_window", "export_window", "parse_instant"]

_PREFETCH = 2000


@dataclass(frozen=True)
class Window:
    """Which events to export: a namespace and an event-time range (either end open)."""

    namespace: str = LIVE
    since: datetime | None = None
    """Inclusive lower bound on ``occurred_at``."""
    until: datetime | None = None
    """Exclusive upper bound on ``occurred_at``."""

    def __post_init__(self) -> None:
        validate_namespace(self.namespace)
        for name, value in (("since", self.since), ("until", self.until)):
            if value is not None and value.tzinfo is None:
                raise InvalidWindow(f"{name} must be timezone-aware")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidWindow(
                f"the window is empty: since {self.since.isoformat()} is not before "
                f"until {self.until.isoformat()}"
            )

    def where(self) -> tuple[str, list[object]]:
        """The SQL condition and its arguments (only the bounds that are set, so the
        planner can range-scan the occurred_at index)."""
        clauses: list[str] = ["namespace = $1"]
        args: list[object] = [self.namespace]
        if self.since is not None:
            args.append(self.since)
            clauses.append(f"occurred_at >= ${len(args)}")
        if self.until is not None:
            args.append(self.until)
            clauses.append(f"occurred_at < ${len(args)}")
        return " and ".join(clauses), args


async def count_window(conn: asyncpg.Connection, window: Window) -> int:
    """How many stored events fall in ``window``."""
    where, args = window.where()
    count: int = await conn.fetchval(f"select count(*) from events where {where}", *args)
    return count


async def export_window(
    conn: asyncpg.Connection,
    window: Window,
    out: BinaryIO,
    *,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Write the window's events to ``out`` as JSONL; return how many were written.

    ``on_total`` receives the count before the first line, ``on_progress`` the
    number of lines written since its previous call.
    """
    where, args = window.where()
    written = 0
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if on_total is not None:
            on_total(await count_window(conn, window))
        query = (f"select envelope::text as envelope from events where {where} "
                 "order by occurred_at, seq")
        pending = 0
        async for row in conn.cursor(query, *args, prefetch=_PREFETCH):
            out.write(encode_event(decode_event(row["envelope"])) + b"\n")
            written += 1
            pending += 1
            if pending == _PREFETCH and on_progress is not None:
                on_progress(pending)
                pending = 0
        if pending and on_progress is not None:
            on_progress(pending)
    out.flush()
    return written
