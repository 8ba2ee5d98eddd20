"""PostgreSQL adapter: idempotency records, the outbox and report outcomes.

Every write is decided and applied in one transaction: the idempotency decision
(the existing record is read ``FOR UPDATE``, so two concurrent resends
serialise), the record itself, the events' outbox rows and the report's status.
Only after that transaction commits does intake acknowledge, so an acknowledged
input is never lost; and because the decision and the outbox rows commit
together, a client id can never produce a second event.

Group commit: a durable commit (an fsync) costs far more than the statements
before it, so concurrent writes share one. :meth:`Store.record` queues its
write; one committer task takes every write that queued while the previous
commit was in flight (up to :data:`MAX_GROUP`), applies them with one statement
per table, commits once and then answers each waiter. Every key occurs at most
once in a group (a second write of the same key waits for the next group, so it
sees the first one's record); each write still gets its own decision (written,
replayed, conflict). If the server refuses any statement of the group, the whole
transaction rolls back and the group is written again one write at a time, each
in a savepoint of one new transaction, so a failing write fails alone and no
write is ever half applied. A caller is answered only after the commit that
holds its write, or with the error that kept it from being committed.

Almost every write is a first receipt (a new key, or no key at all). Those are
written by *one* statement, in autocommit: data-modifying CTEs insert the
idempotency records (``on conflict do nothing``) and, for exactly the records
that were new, the outbox rows and report outcomes; a single statement is atomic
and, with ``synchronous_commit`` on, durable when it returns. On this VM's
loopback a round trip costs ~0.35 ms, and the transaction it replaces took six
(begin, lock-read, three inserts, commit). Writes whose key already had a record
(resends, corrections, conflicts) are then decided as described above, in a
transaction of their own.

Namespaces: a store belongs to one namespace (given at construction) and every
row it writes carries it, every key includes it and every read is limited to it
(migration 0006), so a drill's intake and the live one share the tables and never
each other's idempotency records, report outcomes or outbox rows.

The outbox is published by the shared relay (:mod:`services.common.outbox`,
configured by :data:`OUTBOX`): it holds the namespace's publishing lock on one
connection and marks a batch sent only once the broker has acknowledged it, so
a crash in between publishes the rows again (at-least-once; consumers
deduplicate by ``event_id``).

Households (:meth:`Store.record_household`): a check-in, check-out or transfer is
checked against the household's current row (migration 0010), so it is written
outside the group commit, in a transaction of its own: the idempotency record is
read ``FOR UPDATE`` and decided first (a resend is a replay whatever the household
did since), then the household's row is read ``FOR UPDATE``, the pure rule
(:mod:`services.intake.households`) turns it into the new row and the events or
refuses, and the row, the record and the outbox rows are written before the one
commit. A refusal raised by the rule rolls everything back. Households are a few a
minute per shelter; the group commit's one-statement path cannot say *why* a state
check failed, and a lock held across the rule must be short, which one row is.

Closing a shelter (:meth:`Store.record_shelter_close`, stage closed only): also
outside the group commit, in one transaction: the idempotency record is read ``FOR
UPDATE`` and decided first (the same record and rules as any shelter status), then
the shelter's advisory lock is taken exclusively (``_SHELTER_LOCK_CLASS``; household
commands share the lock of the shelters they name, taken before their row), the
shelter's checked-in rows are read ``FOR UPDATE``, the pure rule
(:func:`services.intake.households.closing_check_outs`) gives their new rows and the
check-outs, and the record, the rows and the outbox rows (the close first) commit
together.

Why one file over ~500 lines: the group commit's statements and the code that
fills their array parameters must agree column by column (``_columns``,
``_request_params``, ``_report_params``), so they are read together; the households
write uses the same outbox statement and idempotency decision, in the same
transaction as its row, so it sits beside them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, cast
from uuid import UUID

import asyncpg

from schemas.envelope import Envelope
from schemas.topics import route
from services.common.outbox import OutboxTable
from services.common.tables import require_tables
from services.intake.domain import Decision, ExistingRequest, Kind, decide
from services.intake.errors import IntakeTablesMissing

log = logging.getLogger(__name__)

__all__ = [
    "MAX_GROUP",
    "OUTBOX",
    "REQUIRED_TABLES",
    "ClosingChange",
    "HouseholdChange",
    "HouseholdRow",
    "HouseholdWrite",
    "IntakeTablesMissing",
    "Recorded",
    "ReportRow",
    "ShelterCloseWrite",
    "Store",
    "Write",
]

REQUIRED_TABLES: Final = ("intake_requests", "outbox", "report_status", "households",
                          "supply_requests", "generators", "athome_households")
"""Created by migrations 0002_intake, 0010_households, 0011_supplies and 0013_athome
(``sonae db migrate`` / ``sonae up``)."""

OUTBOX: Final = OutboxTable(table="outbox", channel="sonae_outbox",
                            lock_class=0x534E4145)  # "SNAE"
"""Intake's outbox for the shared relay: one relay per namespace publishes it at a time,
so the outbox's id order (and thus per-key order) reaches Kafka intact."""
_MAX_ATTEMPTS: Final = 3
_SHELTER_LOCK_CLASS: Final = 0x53484C54  # "SHLT"
"""Advisory lock class of a shelter's households (with ``hashtext(namespace/shelter)``):
a closing holds it exclusively, a household command shares it (see record_shelter_close)."""
_LOCK_SHELTERS: Final = """
    select pg_advisory_xact_lock_shared($1::int4, hashtext($2::text || '/' || s))
    from unnest($3::text[]) as s order by s
"""
MAX_GROUP: Final = 500
"""Most writes in one group transaction (bounds its size and the locks it holds)."""

_SELECT_REQUESTS: Final = """
    select r.kind, r.scope, r.client_id, r.body_hash, r.status_code, r.response
    from intake_requests r
    join unnest($1::text[], $2::text[], $3::text[]) as k(kind, scope, client_id)
        using (kind, scope, client_id)
    where r.namespace = $4::text
    for update of r
"""
# event_ids travel as comma-joined text: unnest() would flatten a uuid[][] parameter.
_INSERT_REQUESTS: Final = """
    insert into intake_requests (namespace, kind, scope, client_id, body_hash, status_code,
        response, report_id, event_ids)
    select $9::text, kind, scope, client_id, body_hash, status_code, response::jsonb,
        report_id, string_to_array(event_ids, ',')::uuid[]
    from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::text[],
        $7::uuid[], $8::text[])
        as u(kind, scope, client_id, body_hash, status_code, response, report_id, event_ids)
"""
_UPDATE_REQUEST: Final = """
    update intake_requests set body_hash = $4, status_code = $5, response = $6::jsonb,
        report_id = $7, event_ids = $8, updated_at = now()
    where namespace = $9 and kind = $1 and scope = $2 and client_id = $3
"""
# One statement for the group: the NOTIFY trigger fires once, and "with ordinality"
# keeps the outbox ids in arrival order (per-key order on Kafka follows id order).
_INSERT_OUTBOX: Final = """
    insert into outbox (namespace, topic, key, value, event_id, event_type)
    select $6::text, topic, key, value, event_id, event_type
    from unnest($1::text[], $2::bytea[], $3::bytea[], $4::uuid[], $5::text[])
        with ordinality as u(topic, key, value, event_id, event_type, n)
    order by n
"""
# A report's outcome is replaced when a corrected resend is accepted.
_REPORT_CONFLICT: Final = """on conflict (namespace, report_id) do update set
        team = excluded.team, status = excluded.status, reasons = excluded.reasons,
        area_id = excluded.area_id, outside_region = excluded.outside_region,
        submitted_event_id = excluded.submitted_event_id,
        accepted_event_id = excluded.accepted_event_id,
        rejected_event_id = excluded.rejected_event_id, updated_at = now()"""
# First receipts in one statement (see the module docstring). $1..$9: one entry per
# keyed write (w = its index in the group); $10..$16: every outbox row with the index
# of its write and whether that write is keyed (a keyless write always writes its
# rows); $17..$29: report outcomes of keyed writes; $30: the store's namespace, which
# every row gets (and every key includes).
# Returns the indexes of the keyed writes whose record was new.
_WRITE_FIRST_RECEIPTS: Final = f"""
    with incoming as (
        select * from unnest($1::int4[], $2::text[], $3::text[], $4::text[], $5::text[],
            $6::int4[], $7::text[], $8::uuid[], $9::text[])
            as u(w, kind, scope, client_id, body_hash, status_code, response, report_id,
                 event_ids)
    ), inserted as (
        insert into intake_requests (namespace, kind, scope, client_id, body_hash,
            status_code, response, report_id, event_ids)
        select $30::text, kind, scope, client_id, body_hash, status_code, response::jsonb,
            report_id, string_to_array(event_ids, ',')::uuid[]
        from incoming order by w
        on conflict (namespace, kind, scope, client_id) do nothing
        returning kind, scope, client_id
    ), written as (
        select i.w from incoming i join inserted n using (kind, scope, client_id)
    ), outbox_rows as (
        insert into outbox (namespace, topic, key, value, event_id, event_type)
        select $30::text, topic, key, value, event_id, event_type
        from unnest($10::int4[], $11::bool[], $12::text[], $13::bytea[], $14::bytea[],
            $15::uuid[], $16::text[]) with ordinality as o(w, keyed, topic, key, value,
                                                           event_id, event_type, n)
        where not o.keyed or o.w in (select w from written)
        order by n
        returning 1
    ), reports as (
        insert into report_status (namespace, report_id, scope, client_report_id, team,
            status, reasons, area_id, outside_region, submitted_event_id, accepted_event_id,
            rejected_event_id, received_at)
        select $30::text, report_id, scope, client_report_id, team, status, reasons::jsonb,
            area_id, outside_region, submitted_event_id, accepted_event_id,
            rejected_event_id, received_at
        from unnest($17::int4[], $18::uuid[], $19::text[], $20::text[], $21::text[],
            $22::text[], $23::text[], $24::text[], $25::bool[], $26::uuid[], $27::uuid[],
            $28::uuid[], $29::timestamptz[])
            as r(w, report_id, scope, client_report_id, team, status, reasons, area_id,
                 outside_region, submitted_event_id, accepted_event_id, rejected_event_id,
                 received_at)
        where r.w in (select w from written)
        {_REPORT_CONFLICT}
        returning 1
    )
    select w from written
"""
_UPSERT_REPORTS: Final = f"""
    insert into report_status (namespace, report_id, scope, client_report_id, team, status,
        reasons, area_id, outside_region, submitted_event_id, accepted_event_id,
        rejected_event_id, received_at)
    select $13::text, report_id, scope, client_report_id, team, status, reasons::jsonb,
        area_id, outside_region, submitted_event_id, accepted_event_id, rejected_event_id,
        received_at
    from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::bool[], $9::uuid[], $10::uuid[], $11::uuid[], $12::timestamptz[])
        as u(report_id, scope, client_report_id, team, status, reasons, area_id,
             outside_region, submitted_event_id, accepted_event_id, rejected_event_id,
             received_at)
    {_REPORT_CONFLICT}
"""


@dataclass(frozen=True)
class ReportRow:
    """One row of ``report_status``."""

    report_id: UUID
    scope: str
    client_report_id: str
    team: str | None
    status: str
    reasons: Sequence[Mapping[str, Any]]
    area_id: str | None
    outside_region: bool | None
    submitted_event_id: UUID | None
    accepted_event_id: UUID | None
    rejected_event_id: UUID | None
    received_at: datetime
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Write:
    """An input ready to be recorded: its key, its answer, its events."""

    kind: Kind
    scope: str
    client_id: str | None
    """None: no idempotency (the caller gave no key); the events are written as they are."""
    body_hash: str
    status_code: int
    """202 (accepted) or 422 (a recorded rejection)."""
    response: Mapping[str, Any]
    events: tuple[Envelope, ...]
    report_id: UUID | None = None
    report: ReportRow | None = None


@dataclass(frozen=True)
class HouseholdRow:
    """One row of ``households``: where a household code is, or was last."""

    household_code: str
    shelter_id: str
    size: int
    needs: tuple[str, ...]
    language: str | None
    name: str | None
    contact: str | None
    checked_in: bool
    """False once it checked out (or was transferred away and is now elsewhere's row)."""
    checked_in_at: datetime
    """Event time of its last check-in."""
    checked_out_at: datetime | None = None
    """Event time of its last check-out."""


@dataclass(frozen=True)
class HouseholdChange:
    """What a household command does: the household's new row and the events it writes."""

    row: HouseholdRow
    events: tuple[Envelope, ...]


@dataclass(frozen=True)
class HouseholdWrite:
    """A household command ready to be recorded: its key, its answer, its rule.

    ``apply`` is the pure rule: given the household's current row (None for a code
    never seen), the change, or an :class:`~services.intake.errors.InputRefused`
    that leaves everything as it was.
    """

    kind: Kind
    scope: str
    client_id: str
    body_hash: str
    status_code: int
    response: Mapping[str, Any]
    household_code: str
    event_ids: tuple[UUID, ...]
    """The ids of the events ``apply`` writes (derived, so the answer names them first)."""
    apply: Callable[[HouseholdRow | None], HouseholdChange]
    shelters: tuple[str, ...] = ()
    """The shelters the command checks in at or out of: it waits for a closing of any."""


@dataclass(frozen=True)
class ClosingChange:
    """What closing a shelter does to its households: their new rows and the check-outs."""

    rows: tuple[HouseholdRow, ...]
    events: tuple[Envelope, ...]


@dataclass(frozen=True)
class ShelterCloseWrite:
    """A shelter's close (stage closed) ready to be recorded with its households' check-outs.

    ``apply`` is the pure rule (given the households checked in at the shelter, their
    new rows and the check-out events); ``respond`` builds the answer from every event
    written (the close first), so the record names them all.
    """

    kind: Kind
    scope: str
    client_id: str | None
    """None: no idempotency (the caller gave no key)."""
    body_hash: str
    close: Envelope
    shelter_id: str
    apply: Callable[[Sequence[HouseholdRow]], ClosingChange]
    respond: Callable[[Sequence[Envelope]], Mapping[str, Any]]


@dataclass(frozen=True)
class Recorded:
    """What the store did: the decision and the stored answer it rests on."""

    decision: Decision
    status_code: int
    """The status of the answer that is now on record (202 or 422)."""
    response: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Prepared:
    """A write with what the database needs of it already encoded."""

    write: Write
    key: tuple[str, str, str] | None
    """(kind, scope, client id), or None for a write without idempotency."""
    outbox: tuple[tuple[str, bytes | None, bytes, UUID, str], ...]
    """(topic, key, value, event id, event type) per event, in order."""
    response_json: str
    event_ids: str
    """The event ids, comma-joined (see _INSERT_REQUESTS)."""


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to one list per column: the array parameters of an ``unnest`` insert."""
    return [[row[i] for row in rows] for i in range(width)]


def _request_params(p: _Prepared) -> tuple[Any, ...]:
    """A keyed write's idempotency record, in the column order of ``_INSERT_REQUESTS``."""
    w = p.write
    return (w.kind.value, w.scope, w.client_id, w.body_hash, w.status_code, p.response_json,
            w.report_id, p.event_ids)


def _report_params(r: ReportRow) -> tuple[Any, ...]:
    """A report outcome in the column order of ``_UPSERT_REPORTS``."""
    return (r.report_id, r.scope, r.client_report_id, r.team, r.status, _json(list(r.reasons)),
            r.area_id, r.outside_region, r.submitted_event_id, r.accepted_event_id,
            r.rejected_event_id, r.received_at)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _household(r: Mapping[str, Any]) -> HouseholdRow:
    return HouseholdRow(
        household_code=r["household_code"], shelter_id=r["shelter_id"], size=r["size"],
        needs=tuple(r["needs"]), language=r["language"], name=r["name"],
        contact=r["contact"], checked_in=r["checked_in"], checked_in_at=r["checked_in_at"],
        checked_out_at=r["checked_out_at"])


def _loads(value: Any) -> Any:
    # asyncpg hands jsonb back as text unless a codec is installed; the pool may
    # come from elsewhere (tests, main), so decode here rather than assume one.
    return json.loads(value) if isinstance(value, str | bytes) else value


# --- one command, checked against state, in one transaction ------------------------------
# Household commands, a shelter's close, supply requests and residents at home are decided
# against state intake keeps: each is one transaction that reads its idempotency record
# (FOR UPDATE), decides, checks the state, and writes the record, the state and the
# outbox rows together. These are the statements they share.

_Body = Callable[[asyncpg.Connection], "Awaitable[Recorded]"]


async def in_one_transaction(pool: asyncpg.Pool, body: _Body) -> Recorded:
    """Run ``body`` in a transaction; a unique violation (a concurrent first receipt of the
    same key, or of the same state row, committed between our read and our insert) runs
    it again, now that the other is there to be read: at most :data:`_MAX_ATTEMPTS` times."""
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await body(conn)
        except asyncpg.UniqueViolationError:
            if attempt == _MAX_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def read_request(conn: asyncpg.Connection, namespace: str, kind: Kind, scope: str,
                       client_id: str) -> ExistingRequest | None:
    """The idempotency record of (``kind``, ``scope``, ``client_id``), locked for update."""
    row = await conn.fetchrow(
        "select body_hash, status_code, response from intake_requests "
        "where namespace = $4 and kind = $1 and scope = $2 and client_id = $3 for update",
        kind.value, scope, client_id, namespace)
    return None if row is None else ExistingRequest(row["body_hash"], row["status_code"],
                                                    _loads(row["response"]))


async def write_request(conn: asyncpg.Connection, namespace: str, kind: Kind, scope: str,
                        client_id: str, *, existing: ExistingRequest | None, body_hash: str,
                        status_code: int, response: Mapping[str, Any],
                        event_ids: Sequence[UUID]) -> None:
    """Write the idempotency record: a first receipt inserts it (a concurrent first
    receipt makes this fail, see :func:`in_one_transaction`), a rewrite updates it."""
    if existing is None:
        await conn.execute(
            "insert into intake_requests (namespace, kind, scope, client_id, body_hash, "
            "status_code, response, event_ids) values ($7, $1, $2, $3, $4, $5, $6::jsonb, $8)",
            kind.value, scope, client_id, body_hash, status_code, _json(response), namespace,
            list(event_ids))
    else:
        await conn.execute(_UPDATE_REQUEST, kind.value, scope, client_id, body_hash,
                           status_code, _json(response), None, list(event_ids), namespace)


async def write_events(conn: asyncpg.Connection, namespace: str,
                       events: Sequence[Envelope]) -> None:
    """Put ``events`` in the outbox, in order (one statement: one NOTIFY)."""
    outbox = [(*_routed(e, namespace), e.event_id, e.type) for e in events]
    await conn.execute(_INSERT_OUTBOX, *_columns(outbox, 5), namespace)


def _routed(event: Envelope, namespace: str) -> tuple[str, bytes | None, bytes]:
    routed = route(event, namespace)
    return routed.topic, routed.key, routed.value


class Store:
    """Intake's tables, through an asyncpg pool whose search_path holds them, for one
    ``namespace``: everything it writes, decides and reads is that namespace's alone."""

    def __init__(self, pool: asyncpg.Pool, namespace: str, *,
                 max_group: int = MAX_GROUP) -> None:
        self.pool = pool
        self.namespace = namespace
        self.max_group = max_group
        self._pending: deque[tuple[_Prepared, asyncio.Future[Recorded]]] = deque()
        self._committer: asyncio.Task[None] | None = None

    async def check_tables(self) -> None:
        """Raise :class:`IntakeTablesMissing` naming what is missing and how to fix it."""
        async with self.pool.acquire() as conn:
            await require_tables(
                conn, REQUIRED_TABLES, IntakeTablesMissing,
                "intake's tables {tables} are missing from schema {schema!r}: "
                "apply the migrations first (`sonae db migrate`, or `sonae up`)")

    # --- writes ---------------------------------------------------------------------

    async def record(self, write: Write) -> Recorded:
        """Decide on ``write`` against its idempotency record and apply it, durably.

        Returns only after the transaction holding the write has committed. Writes
        that arrive while a commit is in flight wait for it and then share the next
        transaction (group commit, see the module docstring); each still gets its
        own decision and answer.
        """
        prepared = self._prepare(write)
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._pending.append((prepared, future))
        if self._committer is None or self._committer.done():
            # Started on demand and ends when the queue is empty, so a Store needs no
            # lifecycle of its own; every waiter is answered by it, success or error.
            self._committer = asyncio.create_task(self._commit_pending(),
                                                  name="intake-group-commit")
        return await future

    def _route(self, event: Envelope) -> tuple[str, bytes | None, bytes]:
        return _routed(event, self.namespace)

    def _prepare(self, write: Write) -> _Prepared:
        # Encoding happens in the caller's task, before the write joins a group, so
        # the committer holds its connection only for the round trips.
        outbox = [(*self._route(e), e.event_id, e.type) for e in write.events]
        key = None if write.client_id is None else (write.kind.value, write.scope,
                                                     write.client_id)
        return _Prepared(write, key, tuple(outbox), _json(write.response),
                         ",".join(str(e.event_id) for e in write.events))

    async def _commit_pending(self) -> None:
        group: list[tuple[_Prepared, asyncio.Future[Recorded]]] = []
        try:
            while self._pending:
                group, later, keys = [], [], set()
                while self._pending and len(group) < self.max_group:
                    item = self._pending.popleft()
                    if item[1].done():
                        continue  # the caller went away before its write started
                    if item[0].key is not None and item[0].key in keys:
                        # The second write of one key must see the first one's record:
                        # it goes into the next group, in its order.
                        later.append(item)
                        continue
                    if item[0].key is not None:
                        keys.add(item[0].key)
                    group.append(item)
                self._pending.extendleft(reversed(later))
                if group:
                    results = await self._commit_group([p for p, _ in group])
                    for (_, future), result in zip(group, results, strict=True):
                        if future.done():
                            continue
                        if isinstance(result, BaseException):
                            future.set_exception(result)
                        else:
                            future.set_result(result)
                group = []
        except BaseException as e:
            # Cancelled (the loop is shutting down) or a bug: no waiter may hang.
            waiting = [f for _, f in group] + [f for _, f in self._pending]
            self._pending.clear()
            for future in waiting:
                if future.done():
                    continue
                if isinstance(e, Exception):
                    future.set_exception(e)
                else:
                    future.cancel()
            raise

    async def _commit_group(self, group: list[_Prepared]) -> list[Recorded | Exception]:
        """First receipts in one statement, then the rest in one transaction (see the
        module docstring); a write's answer says what became of that write alone."""
        results: list[Recorded | Exception | None] = [None] * len(group)
        try:
            async with self.pool.acquire() as conn:
                first = [i for i, p in enumerate(group)
                         if p.key is not None or p.write.report is None]
                try:
                    written = await self._write_first_receipts(conn, [group[i] for i in first])
                except Exception as e:
                    # Refused or not encodable: the statement applied nothing.
                    if conn.is_closed():
                        raise
                    log.debug("first-receipt write of %d refused (%s: %s); writing the "
                              "group as a transaction", len(first), type(e).__name__, e)
                    written = set()
                for n in written:
                    p = group[first[n]]
                    results[first[n]] = Recorded(Decision.WRITE, p.write.status_code,
                                                 p.write.response)
                rest = [i for i, r in enumerate(results) if r is None]
                if rest:
                    decided = await self._commit_decided(conn, [group[i] for i in rest])
                    for i, result in zip(rest, decided, strict=True):
                        results[i] = result
        except Exception as e:
            # Connection lost, commit failed: no write of the group that is not answered
            # yet is known durable.
            results = [e if r is None else r for r in results]
        # Every write is answered by now: written above, decided, or the error.
        return cast(list[Recorded | Exception], results)

    async def _write_first_receipts(self, conn: asyncpg.Connection,
                                    writes: Sequence[_Prepared]) -> set[int]:
        """Write every keyless write and every keyed one whose key is new, in one
        autocommitted statement; return the indexes (into ``writes``) now durable."""
        if not writes:
            return set()
        keyed = [(w, p) for w, p in enumerate(writes) if p.key is not None]
        outbox = [(w, p.key is not None, *row) for w, p in enumerate(writes)
                  for row in p.outbox]
        reports = [(w, *_report_params(p.write.report)) for w, p in keyed
                   if p.write.report is not None]
        rows = await conn.fetch(_WRITE_FIRST_RECEIPTS,
                                *_columns([(w, *_request_params(p)) for w, p in keyed], 9),
                                *_columns(outbox, 7), *_columns(reports, 13), self.namespace)
        return {row["w"] for row in rows} | {w for w, p in enumerate(writes) if p.key is None}

    async def _commit_decided(self, conn: asyncpg.Connection,
                              group: list[_Prepared]) -> list[Recorded | Exception]:
        """Writes whose key had a record: decide each against it in one transaction; if the
        server refuses any part, one savepoint per write, so one bad write fails alone."""
        try:
            async with conn.transaction():
                return list(await self._write_group(conn, group))
        except Exception as e:
            # A refused statement or a value that cannot be encoded: the whole
            # group rolled back, nothing of any write is applied.
            if conn.is_closed():
                raise
            log.debug("group write of %d refused (%s: %s); writing one by one",
                      len(group), type(e).__name__, e)
        results: list[Recorded | Exception] = []
        async with conn.transaction():
            for prepared in group:
                results.append(await self._write_alone(conn, prepared))
        return results

    async def _write_alone(self, conn: asyncpg.Connection,
                           prepared: _Prepared) -> Recorded | Exception:
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                async with conn.transaction():  # a savepoint inside the group's transaction
                    recorded: Recorded = await self._record(conn, prepared)
                return recorded
            except asyncpg.UniqueViolationError as e:
                # A concurrent first receipt of the same key (another process) committed
                # between our read and insert: read again, now that it is there.
                if attempt == _MAX_ATTEMPTS:
                    error: Exception = e
                    return error
            except Exception as e:
                if conn.is_closed():
                    raise  # the connection, not this write: the group fails
                return e
        raise AssertionError("unreachable")

    async def _write_group(self, conn: asyncpg.Connection,
                           group: Sequence[_Prepared]) -> list[Recorded]:
        # Every key occurs once in a group (see _commit_pending), so each decision
        # rests on the committed record alone, read and locked here in one statement.
        keyed = [p.key for p in group if p.key is not None]
        existing: dict[tuple[str, str, str], ExistingRequest] = {}
        if keyed:
            kinds, scopes, client_ids = (list(c) for c in zip(*keyed, strict=True))
            for row in await conn.fetch(_SELECT_REQUESTS, kinds, scopes, client_ids,
                                        self.namespace):
                existing[(row["kind"], row["scope"], row["client_id"])] = ExistingRequest(
                    row["body_hash"], row["status_code"], _loads(row["response"]))
        results: list[Recorded] = []
        inserts: list[_Prepared] = []
        updates: list[_Prepared] = []
        outbox: list[tuple[str, bytes | None, bytes, UUID, str]] = []
        reports: list[ReportRow] = []
        for p in group:
            found = existing.get(p.key) if p.key is not None else None
            decision = decide(found, p.write.body_hash)
            if decision is not Decision.WRITE:
                assert found is not None
                results.append(Recorded(decision, found.status_code, found.response))
                continue
            if p.key is not None:
                (inserts if found is None else updates).append(p)
            outbox.extend(p.outbox)
            if p.write.report is not None:
                reports.append(p.write.report)
            results.append(Recorded(Decision.WRITE, p.write.status_code, p.write.response))
        if inserts:
            await conn.execute(_INSERT_REQUESTS,
                               *_columns([_request_params(p) for p in inserts], 8),
                               self.namespace)
        if updates:
            await conn.executemany(_UPDATE_REQUEST, [
                (p.write.kind.value, p.write.scope, p.write.client_id, p.write.body_hash,
                 p.write.status_code, p.response_json, p.write.report_id,
                 [e[3] for e in p.outbox], self.namespace) for p in updates])
        if outbox:
            await conn.execute(_INSERT_OUTBOX, *_columns(outbox, 5), self.namespace)
        if reports:
            await conn.execute(_UPSERT_REPORTS,
                               *_columns([_report_params(r) for r in reports], 12),
                               self.namespace)
        return results

    async def _record(self, conn: asyncpg.Connection, prepared: _Prepared) -> Recorded:
        write = prepared.write
        existing: ExistingRequest | None = None
        if write.client_id is not None:
            row = await conn.fetchrow(
                "select body_hash, status_code, response from intake_requests "
                "where namespace = $4 and kind = $1 and scope = $2 and client_id = $3 "
                "for update",
                write.kind.value, write.scope, write.client_id, self.namespace,
            )
            if row is not None:
                existing = ExistingRequest(row["body_hash"], row["status_code"],
                                           _loads(row["response"]))
        decision = decide(existing, write.body_hash)
        if decision is not Decision.WRITE:
            assert existing is not None
            return Recorded(decision, existing.status_code, existing.response)
        event_ids = [e.event_id for e in write.events]
        if write.client_id is not None and existing is None:
            await conn.execute(
                "insert into intake_requests (namespace, kind, scope, client_id, body_hash, "
                "status_code, response, report_id, event_ids) "
                "values ($9, $1, $2, $3, $4, $5, $6::jsonb, $7, $8)",
                write.kind.value, write.scope, write.client_id, write.body_hash,
                write.status_code, prepared.response_json, write.report_id, event_ids,
                self.namespace,
            )
        elif write.client_id is not None:
            await conn.execute(_UPDATE_REQUEST, write.kind.value, write.scope, write.client_id,
                               write.body_hash, write.status_code, prepared.response_json,
                               write.report_id, event_ids, self.namespace)
        if prepared.outbox:
            await conn.execute(_INSERT_OUTBOX, *_columns(prepared.outbox, 5), self.namespace)
        if write.report is not None:
            await conn.execute(_UPSERT_REPORTS, *_columns([_report_params(write.report)], 12),
                               self.namespace)
        return Recorded(Decision.WRITE, write.status_code, write.response)

    # --- households ------------------------------------------------------------------

    async def record_household(self, write: HouseholdWrite) -> Recorded:
        """Decide on a household command, check it against the household's row and apply
        it, in one transaction (see the module docstring); return once it has committed.

        Raises what ``write.apply`` raises (nothing is written then).
        """
        return await in_one_transaction(
            self.pool, lambda conn: self._record_household(conn, write))

    async def _record_household(self, conn: asyncpg.Connection,
                                write: HouseholdWrite) -> Recorded:
        existing = await read_request(conn, self.namespace, write.kind, write.scope,
                                      write.client_id)
        decision = decide(existing, write.body_hash)
        if decision is not Decision.WRITE:
            assert existing is not None
            return Recorded(decision, existing.status_code, existing.response)
        event_ids = list(write.event_ids)
        # The record first: a concurrent first receipt of the same client id makes this
        # insert wait for it and then fail (retried as a replay), before the household's
        # row, which that receipt changed, is judged again.
        await write_request(conn, self.namespace, write.kind, write.scope, write.client_id,
                            existing=existing, body_hash=write.body_hash,
                            status_code=write.status_code, response=write.response,
                            event_ids=event_ids)
        if write.shelters:
            await conn.execute(_LOCK_SHELTERS, _SHELTER_LOCK_CLASS, self.namespace,
                               list(write.shelters))
        current = await conn.fetchrow(
            "select * from households where namespace = $1 and household_code = $2 "
            "for update", self.namespace, write.household_code)
        change = write.apply(None if current is None else _household(current))
        if [e.event_id for e in change.events] != event_ids:
            raise ValueError("a household rule wrote other events than the write announced")
        new = change.row
        values = (self.namespace, new.household_code, new.shelter_id, new.size,
                  list(new.needs), new.language, new.name, new.contact, new.checked_in,
                  new.checked_in_at, new.checked_out_at)
        if current is None:
            # A concurrent first check-in of the same code fails here (and is retried).
            await conn.execute(
                "insert into households (namespace, household_code, shelter_id, size, needs, "
                "language, name, contact, checked_in, checked_in_at, checked_out_at) "
                "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", *values)
        else:
            await conn.execute(
                "update households set shelter_id = $3, size = $4, needs = $5, "
                "language = $6, name = $7, contact = $8, checked_in = $9, "
                "checked_in_at = $10, checked_out_at = $11, updated_at = now() "
                "where namespace = $1 and household_code = $2", *values)
        await write_events(conn, self.namespace, change.events)
        return Recorded(Decision.WRITE, write.status_code, write.response)

    async def record_shelter_close(self, write: ShelterCloseWrite) -> Recorded:
        """Record a close (stage closed) and check out the shelter's households, in one
        transaction (see the module docstring); return once it has committed."""
        return await in_one_transaction(
            self.pool, lambda conn: self._record_shelter_close(conn, write))

    async def _record_shelter_close(self, conn: asyncpg.Connection,
                                    write: ShelterCloseWrite) -> Recorded:
        existing = None if write.client_id is None else await read_request(
            conn, self.namespace, write.kind, write.scope, write.client_id)
        decision = decide(existing, write.body_hash)
        if decision is not Decision.WRITE:
            assert existing is not None
            return Recorded(decision, existing.status_code, existing.response)
        # Exclusive: a check-in, check-out or transfer at this shelter waits for the
        # close (and the close for them), so no household is left in that it counted out.
        await conn.execute("select pg_advisory_xact_lock($1::int4, hashtext($2::text))",
                           _SHELTER_LOCK_CLASS, f"{self.namespace}/{write.shelter_id}")
        rows = await conn.fetch(
            "select * from households where namespace = $1 and shelter_id = $2 "
            "and checked_in order by household_code for update",
            self.namespace, write.shelter_id)
        change = write.apply([_household(r) for r in rows])
        events = (write.close, *change.events)
        response = write.respond(events)
        if write.client_id is not None:
            await write_request(conn, self.namespace, write.kind, write.scope,
                                write.client_id, existing=existing, body_hash=write.body_hash,
                                status_code=202, response=response,
                                event_ids=[e.event_id for e in events])
        if change.rows:
            await conn.executemany(
                "update households set checked_in = $3, checked_out_at = $4, "
                "updated_at = now() where namespace = $1 and household_code = $2",
                [(self.namespace, r.household_code, r.checked_in, r.checked_out_at)
                 for r in change.rows])
        await write_events(conn, self.namespace, events)
        return Recorded(Decision.WRITE, 202, response)

    # --- reads ---------------------------------------------------------------------

    async def households_at(self, shelter_id: str) -> list[HouseholdRow]:
        """The households checked in at ``shelter_id`` now, the newest check-in first."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "select * from households where namespace = $1 and shelter_id = $2 "
                "and checked_in order by checked_in_at desc, household_code",
                self.namespace, shelter_id)
        return [_household(r) for r in rows]

    async def find_reports(
        self, *, report_id: UUID | None = None, client_report_id: str | None = None,
        scope: str | None = None,
    ) -> list[ReportRow]:
        """Reports by id or by client id, limited to ``scope`` unless it is None."""
        arg: UUID | str
        if report_id is not None:
            where, arg = "report_id = $1", report_id
        elif client_report_id is not None:
            where, arg = "client_report_id = $1", client_report_id
        else:
            raise ValueError("give report_id or client_report_id")
        query = f"select * from report_status where namespace = $2 and {where}"
        args: list[Any] = [arg, self.namespace]
        if scope is not None:
            query += " and scope = $3"
            args.append(scope)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(query + " order by received_at limit 20", *args)
        return [
            ReportRow(
                report_id=r["report_id"], scope=r["scope"],
                client_report_id=r["client_report_id"], team=r["team"], status=r["status"],
                reasons=_loads(r["reasons"]), area_id=r["area_id"],
                outside_region=r["outside_region"], submitted_event_id=r["submitted_event_id"],
                accepted_event_id=r["accepted_event_id"],
                rejected_event_id=r["rejected_event_id"], received_at=r["received_at"],
                updated_at=r["updated_at"],
            )
            for r in rows
        ]

    async def backlog(self) -> int:
        """This namespace's outbox rows not yet published."""
        async with self.pool.acquire() as conn:
            count: int = await conn.fetchval(
                "select count(*) from outbox where namespace = $1 and sent_at is null",
                self.namespace)
        return count
