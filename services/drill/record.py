"""``sonae drill record``: a time window of the event store as a drill log.

Selected from the ``events`` table of one namespace (live by default), in event
time (``occurred_at``, ``since`` inclusive, ``until`` exclusive), ordered by
``occurred_at`` then store order (``seq``):

- **inputs** (:data:`services.drill.logformat.INPUT_TYPES`): field reports as
  submitted and as accepted, shelter updates, hazard observations, HQ commands;
- **references** (:data:`services.drill.logformat.REFERENCE_TYPES`): the
  original run's decisions in the window, plus — wherever they are — every
  recommendation and order a recorded command names, and the recommendation
  each of those orders came from, so every recorded command can be matched
  when the log is replayed.

Rows are read in one repeatable-read transaction, so the parts agree.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

import asyncpg

from schemas.evacuation import EvacuationCommand, OrderIssued
from schemas.events import Event, decode_event
from schemas.topics import validate_namespace
from services.drill.errors import EmptyWindow
from services.drill.logformat import (
    INPUT_TYPES,
    REFERENCE_TYPES,
    DrillLog,
    RecordedFrom,
    build_log,
)

__all__ = ["database_label", "record"]


def database_label(database_url: str) -> str:
    """``host:port/database`` of a DSN: where a log came from, never the credentials."""
    parts = urlsplit(database_url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or ''}"


async def _fetch(conn: asyncpg.Connection, query: str, *args: object) -> list[Event]:
    return [decode_event(row["envelope"]) for row in await conn.fetch(query, *args)]


async def record(conn: asyncpg.Connection, *, namespace: str = "", since: datetime | None,
                 until: datetime | None, region: str, database: str,
                 description: str = "") -> DrillLog:
    """The drill log of ``namespace``'s events in [since, until)."""
    validate_namespace(namespace)
    if since is not None and until is not None and since >= until:
        raise EmptyWindow(f"the window is empty: --since {since.isoformat()} is not before "
                          f"--until {until.isoformat()}")
    clauses = ["namespace = $1", "type = any($2::text[])"]
    args: list[object] = [namespace]
    if since is not None:
        args.append(since)
        clauses.append(f"occurred_at >= ${len(args) + 1}")
    if until is not None:
        args.append(until)
        clauses.append(f"occurred_at < ${len(args) + 1}")
    where = " and ".join(clauses)
    query = (f"select envelope::text as envelope from events where {where} "
             "order by occurred_at, seq")
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        inputs = await _fetch(conn, query, namespace, sorted(INPUT_TYPES), *args[1:])
        references = await _fetch(conn, query, namespace, sorted(REFERENCE_TYPES), *args[1:])
        seen = {str(e.event_id) for e in references}
        commands = [e for e in inputs if isinstance(e, EvacuationCommand)]
        rec_ids = {str(c.payload.recommendation_id) for c in commands
                   if c.payload.recommendation_id is not None}
        order_ids = {str(c.payload.order_id) for c in commands if c.payload.order_id is not None}
        orders = await _fetch(
            conn, "select envelope::text as envelope from events where namespace = $1 and "
            "type = 'evacuation.order_issued' and envelope->'payload'->>'order_id' = "
            "any($2::text[]) order by occurred_at, seq", namespace, sorted(order_ids))
        rec_ids |= {str(o.payload.recommendation_id) for o in orders
                    if isinstance(o, OrderIssued) and o.payload.recommendation_id is not None}
        recs = await _fetch(
            conn, "select envelope::text as envelope from events where namespace = $1 and "
            "type = 'evacuation.recommended' and envelope->'payload'->>'recommendation_id' = "
            "any($2::text[]) order by occurred_at, seq", namespace, sorted(rec_ids))
    references += [e for e in (*orders, *recs) if str(e.event_id) not in seen]
    return build_log(
        [*inputs, *references], region=region,
        recorded_from=RecordedFrom(kind="event-store", namespace=namespace, database=database),
        since=since, until=until, description=description)
