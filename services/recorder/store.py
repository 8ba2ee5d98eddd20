"""The event store and the projections in PostgreSQL (asyncpg).

One transaction per batch: append the events (idempotent by ``event_id``), fold
the events that were actually new into the projections, store dead letters,
commit. The consumer commits its Kafka offsets only after that, so a crash
anywhere before the commit replays the batch, and the replay adds nothing.

How events are appended (``benchmarks/recorder.py --compare-inserts`` on the 2-core
development machine, 5,000-row transactions into ``events`` with its indexes, durable
PostgreSQL, median of three; figures in docs/benchmarks.md):

=========================================================  ============
plain ``COPY`` into ``events`` (no conflict handling)       ~18.5k rows/s
``COPY`` into a temp table + ``INSERT … SELECT … ON          ~13k rows/s
CONFLICT DO NOTHING RETURNING``
``INSERT … SELECT * FROM unnest($1::uuid[], …) ON           ~12k rows/s
CONFLICT DO NOTHING RETURNING``
``executemany`` of ``INSERT … ON CONFLICT DO NOTHING``      ~11k rows/s
=========================================================  ============

A batch almost never holds an event that is already stored: duplicates come
only from redelivery after a crash, a rebalance, or a rehydrated broker. So
the batch is first ``COPY``-ed straight into ``events`` (the raw speed), and
only if that hits the ``event_id`` unique constraint is the transaction rolled
back and the batch inserted with ``unnest … ON CONFLICT DO NOTHING RETURNING
event_id``, which tells which events were new. For that fallback the unnest
form was chosen over the temp table although they measure within noise of each
other (they swap places between runs): it needs no DDL per connection and
nothing to recreate after a reconnect. A replayed batch is cheap either way:
the ``COPY`` fails at its first row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any
from uuid import UUID

import asyncpg

from schemas.events import Event, decode_event
from schemas.reports import ReportAccepted, ReportRejected, ReportSubmitted
from services.common.tables import require_tables
from services.recorder.domain import (
    DEAD_LETTER_COLUMNS,
    EVENT_COLUMNS,
    PROJECTIONS,
    PROJECTIONS_FOR,
    REPORTS,
    DeadLetterRow,
    Key,
    Projection,
    Recorded,
    report_submission,
)
from services.recorder.errors import BatchRejected, RecorderTablesMissing, StoreUnavailable

log = logging.getLogger(__name__)

__all__ = ["REQUIRED_TABLES", "EventStore", "is_transient", "projection_lock_key"]

REQUIRED_TABLES = ("events", *(p.table for p in PROJECTIONS), "dead_letters")
"""Tables the recorder writes; they come from migrations 0001, 0003 and 0012."""

# PostgreSQL types of each projection's key columns, for the unnest() lookups.
_KEY_TYPES: dict[str, tuple[str, ...]] = {
    "reports_current": ("uuid",),
    "shelters_current": ("text",),
    "orders_current": ("uuid",),
    "broadcasts_current": ("uuid", "integer", "text", "text"),
    "households_current": ("text", "text"),
    "at_home_current": ("uuid",),
    "supply_requests_current": ("uuid",),
    "generators_current": ("text",),
}

_EVENT_TYPES = ("uuid", "text", "integer", "text", "integer", "bigint", "text", "timestamptz",
                "timestamptz", "boolean", "text", "jsonb")


def _column(name: str) -> str:
    # "offset" is a reserved word; every other column name is a plain identifier.
    return '"offset"' if name == "offset" else name


_EVENT_COLUMN_LIST = ", ".join(_column(c) for c in EVENT_COLUMNS)
_INSERT_NEW_EVENTS = (
    f"insert into events ({_EVENT_COLUMN_LIST}) "
    f"select {_EVENT_COLUMN_LIST} from unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_EVENT_TYPES))
    + f") with ordinality as incoming ({_EVENT_COLUMN_LIST}, ordinal) "
    # Keep the batch's order (partition order within it): rehydration republishes
    # in seq order, and that must be each key's original order.
    "order by ordinal on conflict (event_id) do nothing returning event_id"
)
_INSERT_DEAD_LETTERS = (
    f"insert into dead_letters ({', '.join(_column(c) for c in DEAD_LETTER_COLUMNS)}) "
    f"values ({', '.join(f'${i + 1}' for i in range(len(DEAD_LETTER_COLUMNS)))}) "
    "on conflict (namespace, letter_id) do nothing"
)
# Each matches its partial expression index (events_accepted_submission,
# events_rejected_submission; migration 0003).
_ACCEPTANCES_OF = (
    "select envelope::text as envelope from events "
    "where namespace = $1 and type = 'report.accepted' "
    "and (envelope #>> '{payload,submitted_event_id}')::uuid = any($2::uuid[])"
)
_SUBMISSIONS_AND_REJECTIONS_OF = (
    "select event_id, envelope::text as envelope from events "
    "where namespace = $1 and type = 'report.submitted' and event_id = any($2::uuid[]) "
    "union all "
    "select event_id, envelope::text as envelope from events "
    "where namespace = $1 and type = 'report.rejected' "
    "and (envelope #>> '{payload,submitted_event_id}')::uuid = any($3::uuid[])"
)


def is_transient(exc: BaseException) -> bool:
    """True for errors that say "the database is not reachable now", not "this is wrong".

    Connection loss, a server shutting down or starting up, too many connections,
    a deadlock or serialisation failure: retrying the same work later succeeds.
    The whole chain counts: a connection lost in the middle of a COPY surfaces as
    "another operation is in progress" from the rollback that follows it.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.exceptions.DataError):  # client-side encoding error
        return False
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError):
        # When PostgreSQL shuts down it sends every session a FATAL message; a pooled
        # connection that received it but is not closed yet refuses the next statement
        # with these ("another operation (2) is in progress" = consuming that error).
        # The writer drops the connection and retries on a fresh one.
        text = str(exc)
        return ("connection is closed" in text or "another operation" in text
                or isinstance(exc, asyncpg.InternalClientError))
    return isinstance(exc, OSError | TimeoutError | asyncpg.PostgresConnectionError
                      | asyncpg.OperatorInterventionError | asyncpg.InsufficientResourcesError
                      | asyncpg.TransactionRollbackError)


def _rejects_data(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError
                      | asyncpg.exceptions.DataError)


def _drop(conn: asyncpg.Connection) -> None:
    # A connection the server closed is already detached from its pool proxy.
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


def _translate(exc: Exception) -> Exception:
    """The recorder's error for a driver error (or the error itself if it is neither)."""
    if is_transient(exc):
        return StoreUnavailable(f"{type(exc).__name__}: {exc}")
    if _rejects_data(exc):
        return BatchRejected(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.UndefinedTableError):
        return RecorderTablesMissing(f"{exc}: run `sonae db migrate`")
    return exc


def projection_lock_key(namespace: str) -> int:
    """The advisory lock that serialises projection updates of one namespace."""
    digest = hashlib.blake2b(f"sonae.recorder.projections\x1f{namespace}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class EventStore:
    """Append events, fold projections and keep dead letters, one transaction per batch."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def check_ready(self) -> None:
        """Raise RecorderTablesMissing naming the missing tables unless the schema is migrated."""
        async with self._pool.acquire() as conn:
            await require_tables(
                conn, REQUIRED_TABLES, RecorderTablesMissing,
                "the event store tables {tables} are missing: run `sonae db migrate`")
            for projection in PROJECTIONS:
                actual = [r["attname"] for r in await conn.fetch(
                    "select attname from pg_attribute where attrelid = $1::regclass "
                    "and attnum > 0 and not attisdropped order by attnum", projection.table)]
                expected = ["namespace", *_row_columns(projection), "updated_at"]
                if actual != expected:
                    raise RecorderTablesMissing(
                        f"{projection.table} has columns {actual}, this recorder writes "
                        f"{expected}: the database and the code are from different versions")

    async def write(
        self, events: Sequence[Recorded], letters: Sequence[DeadLetterRow] = ()
    ) -> int:
        """Store a batch in one transaction; return how many events were new.

        Raises StoreUnavailable (transient: retry the same batch) or BatchRejected
        (the data itself was refused: split the batch to find the bad record).
        """
        try:
            conn = await self._pool.acquire()
        except Exception as exc:
            translated = _translate(exc)
            if translated is exc:
                raise
            raise translated from exc
        try:
            return await self._write(conn, events, letters)
        except asyncio.CancelledError:
            _drop(conn)  # cancelled mid-statement: the connection's state is unknown
            raise
        except Exception as exc:
            translated = _translate(exc)
            if not isinstance(translated, BatchRejected):
                # A failure in the middle of a statement can leave the connection unusable
                # ("another operation is in progress"): drop it rather than reset it, and
                # the next attempt gets a fresh one.
                _drop(conn)
            if translated is exc:
                raise
            raise translated from exc
        finally:
            await self._pool.release(conn)

    async def _write(
        self, conn: asyncpg.Connection, events: Sequence[Recorded],
        letters: Sequence[DeadLetterRow],
    ) -> int:
        if events:
            try:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "events", records=[r.row for r in events], columns=EVENT_COLUMNS)
                    await self._after_append(conn, events, letters)
                return len(events)
            except asyncpg.UniqueViolationError as exc:
                if exc.table_name != "events":
                    raise
                log.debug("batch holds stored events; inserting the new ones only")
        async with conn.transaction():
            new = await self._append_new(conn, events) if events else []
            await self._after_append(conn, new, letters)
        return len(new)

    async def _append_new(
        self, conn: asyncpg.Connection, events: Sequence[Recorded]
    ) -> list[Recorded]:
        columns = [list(column) for column in zip(*(r.row for r in events), strict=True)]
        inserted = {row["event_id"] for row in await conn.fetch(_INSERT_NEW_EVENTS, *columns)}
        # Within one batch an event may come twice (a producer retry); fold it once.
        new: list[Recorded] = []
        for recorded in events:
            if recorded.row.event_id in inserted:
                inserted.discard(recorded.row.event_id)
                new.append(recorded)
        return new

    async def _after_append(
        self, conn: asyncpg.Connection, new: Sequence[Recorded],
        letters: Sequence[DeadLetterRow],
    ) -> None:
        by_namespace: dict[str, list[Event]] = {}
        for recorded in new:
            by_namespace.setdefault(recorded.row.namespace, []).append(recorded.event)
        for namespace, events in by_namespace.items():
            await self._project(conn, namespace, events)
        if letters:
            await conn.executemany(_INSERT_DEAD_LETTERS, letters)

    async def _project(self, conn: asyncpg.Connection, namespace: str,
                       events: Sequence[Event]) -> None:
        work: dict[str, list[tuple[Key, Event]]] = {p.table: [] for p in PROJECTIONS}
        for event in events:
            for projection in PROJECTIONS_FOR.get(event.type, ()):
                for key in projection.keys(event):
                    work[projection.table].append((key, event))
        work[REPORTS.table].extend(await self._linked_reports(conn, namespace, events))
        if not any(work.values()):
            return
        # Two recorders of one namespace (a scaled-out group) could otherwise fold the
        # same aggregate from stale reads; the lock serialises projection updates only.
        await conn.execute("select pg_advisory_xact_lock($1)", projection_lock_key(namespace))
        for projection in PROJECTIONS:
            pairs = work[projection.table]
            if pairs:
                await self._fold(conn, projection, namespace, pairs)

    async def _linked_reports(self, conn: asyncpg.Connection, namespace: str,
                              events: Sequence[Event]) -> list[tuple[Key, Event]]:
        """Pair submissions and rejections with the report their acceptance names.

        Whichever of a report's events is stored first, the pairing happens in the
        batch that stores the later one: a new submission or rejection looks for
        an acceptance already stored, and a new acceptance fetches the submission
        and rejections already stored. Folding one twice is harmless.
        """
        report_of: dict[UUID, UUID] = {}  # submission event id -> report id
        for event in events:
            if isinstance(event, ReportAccepted):
                report_of[event.payload.submitted_event_id] = event.payload.report_id
        linked: list[Event] = [e for e in events
                               if isinstance(e, ReportSubmitted | ReportRejected)
                               and report_submission(e) is not None]
        unknown = {report_submission(e) for e in linked} - set(report_of)
        if unknown:
            for row in await conn.fetch(_ACCEPTANCES_OF, namespace, list(unknown)):
                acceptance = decode_event(row["envelope"])
                if isinstance(acceptance, ReportAccepted):
                    report_of[acceptance.payload.submitted_event_id] = acceptance.payload.report_id
        new_acceptances = [e.payload.submitted_event_id for e in events
                           if isinstance(e, ReportAccepted)]
        if new_acceptances:
            in_batch = {e.event_id for e in events}
            # A submission usually travels with its acceptance (intake relays them
            # together): fetch only those stored by an earlier batch.
            earlier = [s for s in new_acceptances if s not in in_batch]
            for row in await conn.fetch(_SUBMISSIONS_AND_REJECTIONS_OF, namespace,
                                        earlier, new_acceptances):
                if row["event_id"] not in in_batch:
                    linked.append(decode_event(row["envelope"]))
        pairs: list[tuple[Key, Event]] = []
        for event in linked:
            submission = report_submission(event)
            if submission is not None and submission in report_of:
                pairs.append(((report_of[submission],), event))
        return pairs

    async def _fold(self, conn: asyncpg.Connection, projection: Projection[Any],
                    namespace: str, pairs: Sequence[tuple[Key, Event]]) -> None:
        keys = list(dict.fromkeys(key for key, _ in pairs))
        current = await _load(conn, projection, namespace, keys)
        changed: dict[Key, Any] = {}
        for key, event in pairs:
            before = current.get(key)
            after = projection.apply(before, event, key)
            if after is not before:
                current[key] = after
                changed[key] = after
        if changed:
            await _upsert(conn, projection, namespace, changed.values())


def _row_columns(projection: Projection[Any]) -> list[str]:
    return [f.name for f in fields(projection.row_type)]


async def _load(conn: asyncpg.Connection, projection: Projection[Any], namespace: str,
                keys: Sequence[Key]) -> dict[Key, Any]:
    columns = _row_columns(projection)
    types = _KEY_TYPES[projection.table]
    key_list = ", ".join(projection.key_columns)
    query = (
        f"select {', '.join(columns)} from {projection.table} where namespace = $1 "
        f"and ({key_list}) in (select * from unnest("
        + ", ".join(f"${i + 2}::{t}[]" for i, t in enumerate(types)) + "))"
    )
    key_arrays = [list(part) for part in zip(*keys, strict=True)]
    out: dict[Key, Any] = {}
    for record in await conn.fetch(query, namespace, *key_arrays):
        # text[] comes back as a list; rows hold tuples so they stay hashable and frozen.
        values = {c: tuple(v) if isinstance(v, list) else v for c, v in record.items()}
        row = projection.row_type(**values)
        out[projection.key_of(row)] = row
    return out


async def _upsert(conn: asyncpg.Connection, projection: Projection[Any], namespace: str,
                  rows: Iterable[Any]) -> None:
    # One statement per table and batch: the rows travel as an array of the table's
    # own row type, so PostgreSQL runs one INSERT … ON CONFLICT over all of them.
    # Measured ~1.8x faster than executemany of 800 single-row upserts (which pay
    # PostgreSQL's per-statement cost each), and it handles the text[] columns that a
    # per-column unnest() cannot. Tuples follow the table's column order, which
    # check_ready() verifies: namespace, the row's fields, updated_at.
    columns = _row_columns(projection)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns
                        if c not in projection.key_columns)
    query = (
        f"insert into {projection.table} (namespace, {', '.join(columns)}, updated_at) "
        f"select namespace, {', '.join(columns)}, now() "
        f"from unnest($1::{projection.table}[]) "
        f"on conflict (namespace, {', '.join(projection.key_columns)}) "
        f"do update set {updates}, updated_at = now()"
    )
    await conn.execute(
        query, [(namespace, *(getattr(row, c) for c in columns), None) for row in rows])
