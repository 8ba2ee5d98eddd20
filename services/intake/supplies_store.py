"""PostgreSQL adapter of supply requests and generators: state, idempotency and outbox in
one transaction.

:meth:`SupplyStore.apply` is the whole of a command's write, in one transaction:

1. the command's idempotency record is read ``FOR UPDATE`` and decided on
   (:func:`~services.intake.domain.decide`): an identical resend is answered from
   the record and touches nothing else, a different body under the same id is a
   conflict;
2. otherwise the state the command is checked against (the supply request's row,
   the generator's row) is read ``FOR UPDATE``, so two steps of one request
   serialise, and handed to the pure ``decide`` of :mod:`services.intake.supplies`;
3. a refusal it raises rolls the transaction back: no record, no event, no state
   change; an :class:`~services.intake.supplies.Effect` is written: the record, the
   outbox rows (published by intake's one relay, :mod:`services.intake.relay`) and
   the new state, and committed before the caller is answered.

Two first receipts of one key racing from two processes: the later insert of the
record fails on its unique key, and the command is decided again (now a replay).

These commands are not part of the group commit of :mod:`services.intake.store`:
their decision needs the state read inside the transaction, and they are rare
(a few per site and hour) beside reports and readings.

Namespaces: every row carries the store's namespace and every read is limited to
it (migration 0011), so a drill's requests and generators never meet live ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final
from uuid import UUID

import asyncpg

from schemas.supplies import RequesterKind, SupplyLine, SupplyRequestStatus, Urgency
from services.intake.domain import Decision, decide
from services.intake.store import (
    Recorded,
    in_one_transaction,
    read_request,
    write_events,
    write_request,
)
from services.intake.supplies import (
    Command,
    Current,
    Effect,
    GeneratorRow,
    Requester,
    RequestQuery,
    SupplyRequestRow,
)

__all__ = ["SupplyStore"]

# The tables are created by migration 0011_supplies and checked at start-up with the
# rest of intake's (services.intake.store.REQUIRED_TABLES).
_SELECT_REQUEST: Final = """
    select * from supply_requests where namespace = $1 and request_id = $2 for update
"""
_SELECT_GENERATOR: Final = """
    select generator_id, site_id, area_id from generators
    where namespace = $1 and generator_id = $2 for update
"""
_UPSERT_REQUEST: Final = """
    insert into supply_requests (namespace, request_id, scope, requester_kind, site_id,
        host_site_id, area_id, lines, urgency, note, requested_by, status, assignee,
        requested_at, updated_at, last_event_id)
    values ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14, $15, $16)
    on conflict (namespace, request_id) do update set status = excluded.status,
        assignee = excluded.assignee, updated_at = excluded.updated_at,
        last_event_id = excluded.last_event_id
"""
# A later registration replaces the details and keeps the reported state.
_UPSERT_GENERATOR: Final = """
    insert into generators (namespace, generator_id, owner, site_id, area_id, lat, lon, fuel,
        rated_kva, runtime_full_hours, registered_by, registered_at)
    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    on conflict (namespace, generator_id) do update set owner = excluded.owner,
        site_id = excluded.site_id, area_id = excluded.area_id, lat = excluded.lat,
        lon = excluded.lon, fuel = excluded.fuel, rated_kva = excluded.rated_kva,
        runtime_full_hours = excluded.runtime_full_hours,
        registered_by = excluded.registered_by, registered_at = excluded.registered_at
"""
# A report older (in event time) than the stored state is an event, not the state now.
_UPDATE_GENERATOR_STATE: Final = """
    update generators set state = $3, fuel_hours_left = $4, state_at = $5
    where namespace = $1 and generator_id = $2 and (state_at is null or state_at <= $5)
"""
_LIST_REQUESTS: Final = """
    select * from supply_requests
    where namespace = $1
      and ($2::text is null or site_id = $2)
      and ($3::text is null or status = $3)
      and ($4::text[] is null or host_site_id = any($4))
      and ($5::text[] is null or area_id = any($5))
    order by requested_at desc, request_id
    limit $6
"""


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _request_row(r: asyncpg.Record) -> SupplyRequestRow:
    return SupplyRequestRow(
        request_id=r["request_id"], scope=r["scope"],
        requester=Requester(RequesterKind(r["requester_kind"]), r["site_id"],
                            r["host_site_id"], r["area_id"]),
        lines=tuple(SupplyLine.model_validate(line) for line in _loads(r["lines"])),
        urgency=Urgency(r["urgency"]), note=r["note"], requested_by=r["requested_by"],
        status=SupplyRequestStatus(r["status"]), assignee=r["assignee"],
        requested_at=r["requested_at"], updated_at=r["updated_at"],
        last_event_id=r["last_event_id"])


class SupplyStore:
    """Supply requests and generators of one ``namespace``, through an asyncpg pool whose
    search_path holds intake's tables."""

    def __init__(self, pool: asyncpg.Pool, namespace: str) -> None:
        self.pool = pool
        self.namespace = namespace

    async def apply(self, command: Command, decide_effect: Callable[[Current], Effect], *,
                    request_id: UUID | None = None,
                    generator_id: str | None = None) -> Recorded:
        """Decide and write ``command`` in one transaction (see the module docstring)."""
        return await in_one_transaction(self.pool, lambda conn: self._apply(
            conn, command, decide_effect, request_id, generator_id))

    async def _apply(self, conn: asyncpg.Connection, command: Command,
                     decide_effect: Callable[[Current], Effect], request_id: UUID | None,
                     generator_id: str | None) -> Recorded:
        ns = self.namespace
        existing = await read_request(conn, ns, command.kind, command.scope, command.client_id)
        decision = decide(existing, command.body_hash)
        if decision is not Decision.WRITE:
            assert existing is not None
            return Recorded(decision, existing.status_code, existing.response)
        request = None
        if request_id is not None:
            found = await conn.fetchrow(_SELECT_REQUEST, ns, request_id)
            request = None if found is None else _request_row(found)
        generator = None
        if generator_id is not None:
            found = await conn.fetchrow(_SELECT_GENERATOR, ns, generator_id)
            generator = None if found is None else GeneratorRow(
                found["generator_id"], found["site_id"], found["area_id"])
        # A refusal raised here leaves the transaction, which rolls back: nothing is written.
        effect = decide_effect(Current(request=request, generator=generator))
        await write_request(conn, ns, command.kind, command.scope, command.client_id,
                            existing=existing, body_hash=command.body_hash,
                            status_code=effect.status_code, response=effect.response,
                            event_ids=[e.event_id for e in effect.events])
        await write_events(conn, ns, effect.events)
        await self._write_state(conn, effect)
        return Recorded(Decision.WRITE, effect.status_code, effect.response)

    async def _write_state(self, conn: asyncpg.Connection, effect: Effect) -> None:
        ns = self.namespace
        if (r := effect.request) is not None:
            await conn.execute(
                _UPSERT_REQUEST, ns, r.request_id, r.scope, r.requester.kind.value,
                r.requester.site_id, r.requester.host_site_id, r.requester.area_id,
                _json([line.model_dump(mode="json") for line in r.lines]), r.urgency.value,
                r.note, r.requested_by, r.status.value, r.assignee, r.requested_at,
                r.updated_at, r.last_event_id)
        if (g := effect.registration) is not None:
            p = g.payload
            await conn.execute(
                _UPSERT_GENERATOR, ns, p.generator_id, p.owner, p.site_id, p.area_id,
                p.location.lat, p.location.lon, p.fuel.value, p.rated_kva,
                p.runtime_full_hours, p.registered_by, g.registered_at)
        if (s := effect.generator_state) is not None:
            await conn.execute(_UPDATE_GENERATOR_STATE, ns, s.generator_id, s.state,
                               s.fuel_hours_left, s.at)

    async def list_requests(self, query: RequestQuery) -> list[SupplyRequestRow]:
        """The requests ``query`` selects, newest first, at most ``query.limit``."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                _LIST_REQUESTS, self.namespace, query.site_id,
                None if query.status is None else query.status.value,
                None if query.host_sites is None else sorted(query.host_sites),
                None if query.areas is None else sorted(query.areas), query.limit)
        return [_request_row(r) for r in rows]
