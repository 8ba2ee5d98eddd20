"""``sonae people purge --before T``: remove personal data of the events before T.

One transaction over everything that holds it, so a purge is all or nothing:

- **the event store**: every stored event of a type with personal fields
  (:data:`services.recorder.retention.PERSONAL_PATHS`) whose event time is before
  T gets those fields blanked in its envelope (the event still decodes, with its
  id, times, sizes, needs and areas);
- **the projections**: the personal columns of ``households_current`` (by the
  check-in's time) and ``at_home_current`` (by the report's and the welfare
  check's times);
- **intake's tables**, where they exist: the ``name`` and ``contact`` columns of
  ``households`` (by its check-in time), and the envelopes of the outbox rows
  already sent (unsent rows are left to reach the bus; a later purge finds them
  in the event store).

A row with nothing left to blank is not touched, so a second run reports zero
rows and changes nothing. A dry run does the same work and rolls it back, so
what it reports is exactly what a real run would do. The purge holds the
recorder's projection lock of the namespace, so a batch being folded at the
same moment cannot write back a value read before the purge.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from schemas.topics import validate_namespace
from services.recorder.errors import RecorderTablesMissing
from services.recorder.retention import PERSONAL_PATHS, check_before, purge_envelope
from services.recorder.store import projection_lock_key

log = logging.getLogger(__name__)

__all__ = ["PurgeResult", "purge_personal_data"]

_CHUNK = 1000

# Projection columns: (table, time column, {column: blank value}).
_PROJECTION_COLUMNS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("households_current", "checked_in_at", {"name": "null", "contact": "null"}),
    ("at_home_current", "reported_at",
     {"contact": "null", "address": "null", "note": "''"}),
    ("at_home_current", "welfare_checked_at", {"welfare_note": "''"}),
)

# Intake's current-state table of households (docs/people.md): its personal columns,
# and the columns that may hold a household's check-in time, in order of preference.
_INTAKE_HOUSEHOLDS = "households"
_INTAKE_PERSONAL = ("name", "contact")
_INTAKE_TIMES = ("checked_in_at", "occurred_at", "created_at")


@dataclass
class PurgeResult:
    """What a purge did (or, for a dry run, would do)."""

    before: datetime
    namespace: str
    dry_run: bool
    events: dict[str, int] = field(default_factory=dict)
    """Event type → event-store rows whose personal fields were blanked."""
    tables: dict[str, int] = field(default_factory=dict)
    """Table (or ``table.column group``) → rows touched."""
    notes: list[str] = field(default_factory=list)
    """What was skipped, and why."""

    @property
    def total(self) -> int:
        """Rows touched in all."""
        return sum(self.events.values()) + sum(self.tables.values())

    def lines(self) -> list[str]:
        """The result as lines for the terminal, one per event type and table."""
        verb = "would purge" if self.dry_run else "purged"
        out = [f"{verb} personal data of events before {self.before.isoformat()} "
               f"(namespace {self.namespace or 'live'}):"]
        for event_type in sorted(self.events):
            out.append(f"  events {event_type}: {self.events[event_type]} rows")
        for table in sorted(self.tables):
            out.append(f"  {table}: {self.tables[table]} rows")
        out.extend(f"  note: {note}" for note in self.notes)
        out.append(f"  total: {self.total} rows" + (" (dry run: nothing changed)"
                                                   if self.dry_run else ""))
        return out


async def purge_personal_data(conn: asyncpg.Connection, *, namespace: str, before: datetime,
                              now: datetime, dry_run: bool = False) -> PurgeResult:
    """Blank the personal fields of ``namespace``'s events before ``before``.

    Raises PurgeBeforeInFuture for a ``before`` after ``now``, RecorderTablesMissing
    if the event store is not migrated.
    """
    validate_namespace(namespace)
    check_before(before, now)
    result = PurgeResult(before=before, namespace=namespace, dry_run=dry_run)
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute("select pg_advisory_xact_lock($1)", projection_lock_key(namespace))
        await _purge_events(conn, result)
        await _purge_projections(conn, result)
        await _purge_intake_households(conn, result)
        await _purge_outbox(conn, result)
    except asyncpg.UndefinedTableError as exc:
        await transaction.rollback()
        raise RecorderTablesMissing(f"{exc}: run `sonae db migrate`") from exc
    except BaseException:
        await transaction.rollback()
        raise
    if dry_run:
        await transaction.rollback()
    else:
        await transaction.commit()
    log.info("%s", " ".join(result.lines()))
    return result


def _has_value(path: Sequence[str]) -> str:
    # A personal field holds a value unless it is absent, JSON null or "" (its blanks).
    return f"coalesce(envelope #>> '{{{','.join(path)}}}', '') <> ''"


async def _purge_events(conn: asyncpg.Connection, result: PurgeResult) -> None:
    for event_type, paths in PERSONAL_PATHS.items():
        # Pages by seq: memory stays flat however many events a disaster stored.
        query = (
            "select seq, envelope::text as envelope from events "
            "where namespace = $1 and type = $2 and occurred_at < $3 and seq > $4 and ("
            + " or ".join(_has_value(p.path) for p in paths) + f") order by seq limit {_CHUNK}")
        touched, after = 0, 0
        while True:
            rows = await conn.fetch(query, result.namespace, event_type, result.before, after)
            if not rows:
                break
            after = rows[-1]["seq"]
            pending = [(row["seq"], json.dumps(purged, ensure_ascii=False))
                       for row in rows
                       if (purged := purge_envelope(json.loads(row["envelope"]))) is not None]
            if pending:
                touched += await _update_envelopes(conn, pending)
        if touched:
            result.events[event_type] = touched


async def _update_envelopes(conn: asyncpg.Connection, rows: list[tuple[int, str]]) -> int:
    status: str = await conn.execute(
        "update events set envelope = incoming.envelope from "
        "unnest($1::bigint[], $2::jsonb[]) as incoming (seq, envelope) "
        "where events.seq = incoming.seq",
        [seq for seq, _ in rows], [envelope for _, envelope in rows])
    return int(status.split()[-1])


async def _purge_projections(conn: asyncpg.Connection, result: PurgeResult) -> None:
    for table, time_column, columns in _PROJECTION_COLUMNS:
        sets = ", ".join(f"{c} = {blank}" for c, blank in columns.items())
        holds = " or ".join(f"coalesce({c}, '') <> ''" for c in columns)
        status: str = await conn.execute(
            f"update {table} set {sets}, updated_at = now() "
            f"where namespace = $1 and {time_column} < $2 and ({holds})",
            result.namespace, result.before)
        touched = int(status.split()[-1])
        if touched:
            name = f"{table} ({', '.join(columns)})"
            result.tables[name] = result.tables.get(name, 0) + touched


async def _columns(conn: asyncpg.Connection, table: str) -> set[str]:
    rows = await conn.fetch(
        "select attname from pg_attribute where attrelid = to_regclass($1) "
        "and attnum > 0 and not attisdropped", table)
    return {r["attname"] for r in rows}


async def _purge_intake_households(conn: asyncpg.Connection, result: PurgeResult) -> None:
    columns = await _columns(conn, _INTAKE_HOUSEHOLDS)
    if not columns:
        result.notes.append(f"intake's {_INTAKE_HOUSEHOLDS} table does not exist here; skipped")
        return
    personal = [c for c in _INTAKE_PERSONAL if c in columns]
    time_column = next((c for c in _INTAKE_TIMES if c in columns), None)
    if not personal or time_column is None or "namespace" not in columns:
        result.notes.append(
            f"intake's {_INTAKE_HOUSEHOLDS} table has no {'/'.join(_INTAKE_PERSONAL)} columns "
            f"with a namespace and a time ({'/'.join(_INTAKE_TIMES)}); skipped")
        return
    sets = ", ".join(f"{c} = null" for c in personal)
    holds = " or ".join(f"{c} is not null" for c in personal)
    status: str = await conn.execute(
        f"update {_INTAKE_HOUSEHOLDS} set {sets} "
        f"where namespace = $1 and {time_column} < $2 and ({holds})",
        result.namespace, result.before)
    touched = int(status.split()[-1])
    if touched:
        result.tables[f"{_INTAKE_HOUSEHOLDS} ({', '.join(personal)})"] = touched


async def _purge_outbox(conn: asyncpg.Connection, result: PurgeResult) -> None:
    if not await _columns(conn, "outbox"):
        return  # intake's tables are not in this database
    rows = await conn.fetch(
        "select id, value from outbox where namespace = $1 and sent_at is not null "
        "and event_type = any($2::text[])", result.namespace, list(PERSONAL_PATHS))
    updates: list[tuple[int, bytes]] = []
    for row in rows:
        envelope: Any = json.loads(row["value"])
        try:
            occurred = datetime.fromisoformat(str(envelope.get("occurred_at")))
        except ValueError:
            continue  # not an envelope this purge understands: left as it is
        if occurred.tzinfo is None or occurred >= result.before:
            continue
        purged = purge_envelope(envelope)
        if purged is not None:
            updates.append((row["id"], json.dumps(purged, ensure_ascii=False).encode()))
    if updates:
        await conn.executemany("update outbox set value = $2 where id = $1", updates)
        result.tables["outbox (sent envelopes)"] = len(updates)
