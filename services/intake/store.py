"""PostgreSQL adapter: idempotency records, the outbox and report outcomes.

Every write happens in one transaction: the idempotency decision (the existing
record is read ``FOR UPDATE``, so two concurrent resends serialise), the
record itself, the events' outbox rows and the report's status. Only after
that transaction commits does intake acknowledge, so an acknowledged input is
never lost; and because the decision and the outbox rows commit together, a
client id can never produce a second event.

The relay side (:meth:`Store.publish_batch`) locks a batch of unsent rows,
hands them to a publish callback and marks them sent in the same transaction:
if the process dies in between, the rows are still unsent and are published
again on restart (at-least-once; consumers deduplicate by ``event_id``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import UUID

import asyncpg

from schemas.envelope import Envelope
from schemas.topics import route
from services.intake.domain import Decision, ExistingRequest, Kind, decide

log = logging.getLogger(__name__)

__all__ = [
    "REQUIRED_TABLES",
    "IntakeTablesMissing",
    "OutboxRow",
    "Recorded",
    "ReportRow",
    "Store",
    "Write",
]

REQUIRED_TABLES: Final = ("intake_requests", "outbox", "report_status")
"""Created by migration 0002_intake (``sonae db migrate`` / ``sonae up``)."""

# pg_try_advisory_xact_lock(classid, objid): one relay per schema publishes at a
# time, so the outbox's id order (and thus per-key order) reaches Kafka intact.
_RELAY_LOCK_CLASS: Final = 0x534E4145  # "SNAE"
_MAX_ATTEMPTS: Final = 3


class IntakeTablesMissing(RuntimeError):
    """The database lacks intake's tables: migrations have not been applied."""


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
class Recorded:
    """What the store did: the decision and the stored answer it rests on."""

    decision: Decision
    status_code: int
    """The status of the answer that is now on record (202 or 422)."""
    response: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxRow:
    """An event waiting for the relay."""

    id: int
    topic: str
    key: bytes | None
    value: bytes
    event_id: UUID


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(value: Any) -> Any:
    # asyncpg hands jsonb back as text unless a codec is installed; the pool may
    # come from elsewhere (tests, main), so decode here rather than assume one.
    return json.loads(value) if isinstance(value, str | bytes) else value


class Store:
    """Intake's tables, through an asyncpg pool whose search_path holds them."""

    def __init__(self, pool: asyncpg.Pool, namespace: str) -> None:
        self.pool = pool
        self.namespace = namespace

    async def check_tables(self) -> None:
        """Raise :class:`IntakeTablesMissing` naming what is missing and how to fix it."""
        async with self.pool.acquire() as conn:
            missing = [t for t in REQUIRED_TABLES
                       if not await conn.fetchval("select to_regclass($1) is not null", t)]
            schema = await conn.fetchval("select current_schema()")
        if missing:
            raise IntakeTablesMissing(
                f"intake's tables {', '.join(missing)} are missing from schema {schema!r}: "
                "apply the migrations first (`sonae db migrate`, or `sonae up`)"
            )

    # --- writes ---------------------------------------------------------------------

    async def record(self, write: Write) -> Recorded:
        """Decide on ``write`` against its idempotency record and apply it, atomically."""
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    return await self._record(conn, write)
            except asyncpg.UniqueViolationError:
                # A concurrent first receipt of the same key committed between our
                # read and insert: read again, now that it is there.
                if attempt == _MAX_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _record(self, conn: asyncpg.Connection, write: Write) -> Recorded:
        existing: ExistingRequest | None = None
        if write.client_id is not None:
            row = await conn.fetchrow(
                "select body_hash, status_code, response from intake_requests "
                "where kind = $1 and scope = $2 and client_id = $3 for update",
                write.kind.value, write.scope, write.client_id,
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
                "insert into intake_requests (kind, scope, client_id, body_hash, status_code, "
                "response, report_id, event_ids) values ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)",
                write.kind.value, write.scope, write.client_id, write.body_hash,
                write.status_code, _json(write.response), write.report_id, event_ids,
            )
        elif write.client_id is not None:
            await conn.execute(
                "update intake_requests set body_hash = $4, status_code = $5, "
                "response = $6::jsonb, report_id = $7, event_ids = $8, updated_at = now() "
                "where kind = $1 and scope = $2 and client_id = $3",
                write.kind.value, write.scope, write.client_id, write.body_hash,
                write.status_code, _json(write.response), write.report_id, event_ids,
            )
        if write.events:
            rows = []
            for event in write.events:
                routed = route(event, self.namespace)
                rows.append((routed.topic, routed.key, routed.value, event.event_id, event.type))
            await conn.executemany(
                "insert into outbox (topic, key, value, event_id, event_type) "
                "values ($1, $2, $3, $4, $5)",
                rows,
            )
        if write.report is not None:
            await self._upsert_report(conn, write.report)
        return Recorded(Decision.WRITE, write.status_code, write.response)

    async def _upsert_report(self, conn: asyncpg.Connection, r: ReportRow) -> None:
        await conn.execute(
            """
            insert into report_status (report_id, scope, client_report_id, team, status,
                reasons, area_id, outside_region, submitted_event_id, accepted_event_id,
                rejected_event_id, received_at)
            values ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12)
            on conflict (report_id) do update set
                team = excluded.team, status = excluded.status, reasons = excluded.reasons,
                area_id = excluded.area_id, outside_region = excluded.outside_region,
                submitted_event_id = excluded.submitted_event_id,
                accepted_event_id = excluded.accepted_event_id,
                rejected_event_id = excluded.rejected_event_id, updated_at = now()
            """,
            r.report_id, r.scope, r.client_report_id, r.team, r.status, _json(list(r.reasons)),
            r.area_id, r.outside_region, r.submitted_event_id, r.accepted_event_id,
            r.rejected_event_id, r.received_at,
        )

    # --- reads ---------------------------------------------------------------------

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
        query = f"select * from report_status where {where}"
        args: list[Any] = [arg]
        if scope is not None:
            query += " and scope = $2"
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
        """Outbox rows not yet published."""
        async with self.pool.acquire() as conn:
            count: int = await conn.fetchval("select count(*) from outbox where sent_at is null")
        return count

    # --- the relay's side -------------------------------------------------------------

    async def publish_batch(
        self, limit: int, publish: Callable[[list[OutboxRow]], Awaitable[None]]
    ) -> int:
        """Publish up to ``limit`` unsent rows with ``publish`` and mark them sent; return how many.

        ``publish`` must return only once the broker acknowledged every row; if it
        raises, the transaction rolls back and the rows stay unsent. Returns 0 when
        nothing is pending or another relay holds the publishing lock.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "select pg_try_advisory_xact_lock($1, hashtext(current_schema()))",
                _RELAY_LOCK_CLASS,
            ):
                return 0
            rows = await conn.fetch(
                "select id, topic, key, value, event_id from outbox where sent_at is null "
                "order by id limit $1 for update skip locked",
                limit,
            )
            if not rows:
                return 0
            batch = [OutboxRow(r["id"], r["topic"], r["key"], r["value"], r["event_id"])
                     for r in rows]
            await publish(batch)
            await conn.execute("update outbox set sent_at = now() where id = any($1::bigint[])",
                               [row.id for row in batch])
            return len(batch)

    async def forget_sent(self, older_than: timedelta) -> int:
        """Delete rows published longer ago than ``older_than`` (the event store keeps events)."""
        async with self.pool.acquire() as conn:
            status: str = await conn.execute(
                "delete from outbox where sent_at is not null and sent_at < now() - $1::interval",
                older_than,
            )
        return int(status.split()[-1])
