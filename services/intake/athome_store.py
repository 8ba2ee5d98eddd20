"""PostgreSQL adapter of the residents-at-home inputs: state, idempotency and outbox together.

Each write is one transaction (not the group commit of :mod:`services.intake.store`:
these inputs are read against their state, ``athome_households`` of migration 0013,
and decided there): the idempotency record is read ``FOR UPDATE``, then the
household's row, then the decision (:mod:`services.intake.athome`), then the row,
the record and the event's outbox row are written, and only after the commit is
the sender answered. A refused input changes nothing; an acknowledged one is
durable, and the shared relay publishes it like every other outbox row (the outbox
trigger wakes it). Two first receipts of one key racing each other: the second
insert fails on the unique key and the whole write is tried again, now reading the
first one's record.

Everything is limited to the store's namespace, as in every intake table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import asyncpg

from schemas.envelope import Envelope
from services.intake.athome import AtHomeInput, WelfareInput, decide_at_home
from services.intake.domain import Decision, ExistingRequest, Kind, canonical_hash, decide
from services.intake.errors import FieldError, InvalidInput, UnknownAtHomeHousehold
from services.intake.store import (
    Recorded,
    in_one_transaction,
    read_request,
    write_events,
    write_request,
)

__all__ = ["AtHomeAnswer", "AtHomeStore"]

_UPSERT_HOUSEHOLD: Final = """
    insert into athome_households (namespace, household_id, area_id, size, needs, via,
        revision, reported_at)
    values ($1, $2, $3, $4, $5, $6, $7, $8)
    on conflict (namespace, household_id) do update set area_id = excluded.area_id,
        size = excluded.size, needs = excluded.needs, via = excluded.via,
        revision = excluded.revision, reported_at = excluded.reported_at, updated_at = now()
"""

AtHomeAnswer = Callable[[Envelope], Mapping[str, Any]]
"""The acknowledgement body for the event a write produced."""


class AtHomeStore:
    """The at-home tables of one namespace, through intake's pool."""

    def __init__(self, pool: asyncpg.Pool, namespace: str) -> None:
        self.pool = pool
        self.namespace = namespace

    async def report(self, item: AtHomeInput,
                     build: Callable[[int], Envelope], answer: AtHomeAnswer) -> Recorded:
        """Record an at-home report: replay an identical resend, else write revision n+1.

        ``build(revision)`` makes the event; ``answer(event)`` its acknowledgement.
        """
        body_hash = f"{Kind.AT_HOME}:" + canonical_hash(item.request.model_dump(mode="json"))
        key = (Kind.AT_HOME, item.scope, item.request.client_id)

        async def body(conn: asyncpg.Connection) -> Recorded:
            existing = await read_request(conn, self.namespace, *key)
            if decide_at_home(existing, body_hash) is Decision.REPLAY:
                assert existing is not None
                return Recorded(Decision.REPLAY, existing.status_code, existing.response)
            revision = 1 + (await conn.fetchval(
                "select revision from athome_households where namespace = $1 and "
                "household_id = $2 for update", self.namespace, item.household_id) or 0)
            event = build(revision)
            response = answer(event)
            payload = item.payload
            await conn.execute(
                _UPSERT_HOUSEHOLD, self.namespace, item.household_id, payload.area_id,
                payload.size, [n.value for n in payload.needs], payload.via, revision,
                event.occurred_at)
            await self._record(conn, key, existing, body_hash, response, event)
            return Recorded(Decision.WRITE, 202, response)

        return await in_one_transaction(self.pool, body)

    async def welfare_check(self, item: WelfareInput, event: Envelope,
                            response: Mapping[str, Any]) -> Recorded:
        """Record a welfare check of a household reported at home in the area it names.

        Raises :class:`UnknownAtHomeHousehold` (no such household in this namespace) or
        :class:`InvalidInput` (``/area_id``: the household is in another area); nothing
        is written then.
        """
        body_hash = f"{Kind.WELFARE_CHECK}:" + canonical_hash(
            item.request.model_dump(mode="json"))
        key = (Kind.WELFARE_CHECK, item.scope, item.request.client_id)
        payload = item.payload

        async def body(conn: asyncpg.Connection) -> Recorded:
            existing = await read_request(conn, self.namespace, *key)
            decision = decide(existing, body_hash)
            if decision is not Decision.WRITE:
                assert existing is not None
                return Recorded(decision, existing.status_code, existing.response)
            area = await conn.fetchval(
                "select area_id from athome_households where namespace = $1 and "
                "household_id = $2 for update", self.namespace, payload.household_id)
            if area is None:
                raise UnknownAtHomeHousehold(
                    f"no household {payload.household_id} was reported at home")
            if area != payload.area_id:
                raise InvalidInput("the household is in another area", errors=[
                    FieldError("/area_id", f"household {payload.household_id} is in "
                                           f"{area!r}, not {payload.area_id!r}", "wrong_area")])
            await conn.execute(
                "update athome_households set last_check = $3, checked_at = $4, "
                "updated_at = now() where namespace = $1 and household_id = $2",
                self.namespace, payload.household_id, payload.outcome.value, event.occurred_at)
            await self._record(conn, key, existing, body_hash, response, event)
            return Recorded(Decision.WRITE, 202, response)

        return await in_one_transaction(self.pool, body)

    async def _record(self, conn: asyncpg.Connection, key: tuple[Kind, str, str],
                      existing: ExistingRequest | None, body_hash: str,
                      response: Mapping[str, Any], event: Envelope) -> None:
        await write_request(conn, self.namespace, *key, existing=existing,
                            body_hash=body_hash, status_code=202, response=response,
                            event_ids=[event.event_id])
        await write_events(conn, self.namespace, [event])
