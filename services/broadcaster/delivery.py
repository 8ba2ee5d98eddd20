"""The delivery ledger in PostgreSQL: one delivery per (message, version, language, channel).

Protocol (claim, then send, then mark):

1. **Plan** (consumer, one transaction per message version): insert the
   ``broadcast_messages`` row — if it exists, this Kafka record is a redelivery
   and nothing more happens; if a newer version exists, the record is stale and
   is skipped. Otherwise insert one ``broadcast_deliveries`` row per (language,
   channel) — the unique key makes a second insert impossible — mark older
   undelivered versions ``superseded`` on channels that only want the latest,
   and write ``broadcast.requested`` (and drill refusals as ``broadcast.failed``)
   to the outbox. Only then is the Kafka offset committed.
2. **Claim** (dispatcher, one transaction): due rows move to ``sending`` with a
   lease and ``attempt + 1`` (``FOR UPDATE SKIP LOCKED``, so several instances
   never claim one row).
3. **Send** outside any transaction.
4. **Mark** (one transaction): ``delivered`` plus a ``broadcast.delivered`` in
   the outbox, or ``retry``/``failed`` plus a ``broadcast.failed``. The update
   names the attempt it claimed, so a worker whose lease expired cannot
   overwrite a newer attempt's outcome.

What "exactly once" means when the process dies between 3 and 4: the row stays
``sending`` until its lease ends, then it is claimed and sent again. That is
harmless for the public feed (the same event id; every consumer deduplicates on
it) and the CAP feed (storing the same identifier again is a no-op). A webhook
subscriber may receive the request twice, with the same ``Sonae-Delivery-Id``
header so it can drop the second: at-least-once with an idempotency key, which
is the honest best over HTTP. The ledger itself never records two deliveries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final
from uuid import UUID

import asyncpg

from schemas.broadcasts import BroadcastDelivered, BroadcastFailed
from schemas.envelope import Envelope, derive_id
from schemas.topics import route
from services.broadcaster.cap import CapRef
from services.broadcaster.channels import Outgoing
from services.broadcaster.domain import SOURCE, Plan, meta_json
from services.broadcaster.errors import BroadcasterTablesMissing
from services.common.retry import TRANSIENT_DB
from services.common.tables import require_tables
from services.common.webpush import PUSH_TABLES

__all__ = [
    "TRANSIENT_DB_ERRORS",
    "Claimed",
    "DeliveryStore",
    "PlanOutcome",
    "SubscriberHealth",
]

TRANSIENT_DB_ERRORS: Final = TRANSIENT_DB
"""Database failures that mean "try again later" (the shared classification)."""

_TABLES = ("broadcast_messages", "broadcast_deliveries", "cap_alerts", "webhook_subscribers",
           "broadcast_outbox", *PUSH_TABLES)


class PlanOutcome(StrEnum):
    """What storing a plan did."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    """This version was planned before (a redelivered record): nothing done."""
    STALE = "stale"
    """A newer version of the message was planned already: this one is skipped."""
    EXERCISE = "exercise"
    """Exercise traffic outside a drill namespace: never broadcast, nothing stored."""


@dataclass(frozen=True)
class Claimed:
    """A delivery claimed for one attempt."""

    id: int
    outgoing: Outgoing
    cause_event_id: UUID
    correlation_id: UUID


@dataclass(frozen=True)
class SubscriberHealth:
    """Circuit state of one webhook channel."""

    channel: str
    state: str
    consecutive_failures: int
    next_probe_at: datetime | None
    probe_interval: float | None
    last_error: str | None


class DeliveryStore:
    """The broadcaster's tables through an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, namespace: str) -> None:
        self._pool = pool
        self.namespace = namespace

    async def check_ready(self) -> None:
        """Raise BroadcasterTablesMissing unless every broadcaster table exists."""
        async with self._pool.acquire() as conn:
            await require_tables(
                conn, _TABLES, BroadcasterTablesMissing,
                "missing table(s) {tables}: apply the migrations "
                "(sonae db migrate) before starting the broadcaster")

    # --- planning ---

    async def previous_cap(self, message_id: UUID, version: int, sender: str) -> CapRef | None:
        """The CAP reference of an earlier version of a message, if it was planned here."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "select occurred_at, cap_identifier from broadcast_messages "
                "where namespace = $1 and message_id = $2 and version = $3",
                self.namespace, message_id, version)
        if row is None or row["cap_identifier"] is None:
            return None
        return CapRef(sender, row["cap_identifier"], row["occurred_at"])

    async def record_plan(self, plan: Plan) -> PlanOutcome:
        """Store a plan in one transaction (see the module docstring, step 1)."""
        m = plan.message
        async with self._pool.acquire() as conn, conn.transaction():
            newest = await conn.fetchval(
                "select max(version) from broadcast_messages "
                "where namespace = $1 and message_id = $2",
                m.namespace, m.message_id)
            if newest is not None and newest > m.version:
                return PlanOutcome.STALE
            inserted = await conn.fetchval(
                """
                insert into broadcast_messages (namespace, message_id, version, kind, subject,
                    exercise, occurred_at, cause_event_id, correlation_id, cap_identifier)
                values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                on conflict do nothing
                returning true
                """,
                m.namespace, m.message_id, m.version, m.kind.value, m.subject, m.exercise,
                m.occurred_at, m.cause_event_id, m.correlation_id, m.cap_identifier)
            if not inserted:
                return PlanOutcome.DUPLICATE
            superseded = await conn.fetch(
                """
                update broadcast_deliveries
                   set state = 'superseded', lease_until = null, updated_at = now(),
                       last_error = 'superseded by version ' || $3::text || ' before delivery'
                 where namespace = $1 and message_id = $2 and version < $3
                   and state in ('pending', 'retry')
                   and channel <> all($4::text[])
                returning delivery_id, version, language, channel, attempt
                """,
                m.namespace, m.message_id, m.version, list(plan.non_superseding))
            await conn.executemany(
                """
                insert into broadcast_deliveries (namespace, message_id, version, language,
                    channel, delivery_id, state, exercise, cause_event_id, correlation_id,
                    body, meta, last_error)
                values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13)
                on conflict do nothing
                """,
                [(m.namespace, m.message_id, m.version, d.language, d.channel, d.delivery_id,
                  d.state, m.exercise, m.cause_event_id, m.correlation_id, d.body,
                  meta_json(d.meta), d.error) for d in plan.deliveries])
            now = await conn.fetchval("select now()")
            events: list[Envelope] = list(plan.events)
            for row in superseded:
                events.append(self._failed_event(
                    message_id=m.message_id, version=row["version"], language=row["language"],
                    channel=row["channel"], attempt=max(row["attempt"], 1),
                    error=f"superseded by version {m.version} before delivery",
                    will_retry=False, next_attempt_at=None, at=now,
                    exercise=m.exercise, cause_event_id=m.cause_event_id,
                    correlation_id=m.correlation_id,
                    event_id=derive_id("broadcast.failed", row["delivery_id"], "superseded")))
            await self._outbox(conn, events)
        return PlanOutcome.STORED

    # --- the dispatcher's side ---

    async def claim(self, channel: str, *, limit: int, lease: float) -> list[Claimed]:
        """Claim due deliveries of ``channel`` (oldest first) for one attempt each."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                with due as (
                    select id from broadcast_deliveries
                     where namespace = $1 and channel = $2
                       and ((state in ('pending', 'retry') and next_attempt_at <= now())
                            or (state = 'sending' and lease_until < now()))
                     order by id
                     limit $3
                     for update skip locked
                )
                update broadcast_deliveries d
                   set state = 'sending', attempt = d.attempt + 1,
                       lease_until = now() + make_interval(secs => $4), updated_at = now()
                  from due
                 where d.id = due.id
                returning d.id, d.message_id, d.version, d.language, d.channel, d.delivery_id,
                          d.exercise, d.attempt, d.body, d.meta, d.cause_event_id,
                          d.correlation_id
                """,
                self.namespace, channel, limit, lease)
        claimed = [
            Claimed(
                id=r["id"],
                outgoing=Outgoing(
                    namespace=self.namespace, message_id=r["message_id"], version=r["version"],
                    language=r["language"], channel=r["channel"],
                    delivery_id=r["delivery_id"], exercise=r["exercise"],
                    attempt=r["attempt"], body=bytes(r["body"]),
                    meta=json.loads(r["meta"]) if isinstance(r["meta"], str) else r["meta"]),
                cause_event_id=r["cause_event_id"],
                correlation_id=r["correlation_id"],
            )
            for r in rows
        ]
        claimed.sort(key=lambda c: c.id)
        return claimed

    async def next_due(self, channel: str) -> datetime | None:
        """When the earliest open delivery of ``channel`` becomes due (None if none is open)."""
        async with self._pool.acquire() as conn:
            due: datetime | None = await conn.fetchval(
                """
                select min(case when state = 'sending' then lease_until else next_attempt_at end)
                  from broadcast_deliveries
                 where namespace = $1 and channel = $2
                   and state in ('pending', 'retry', 'sending')
                """,
                self.namespace, channel)
        return due

    async def mark_delivered(self, claimed: Claimed, *, receipt: str, at: datetime) -> bool:
        """Record success and its ``broadcast.delivered``; False if the claim was lost."""
        o = claimed.outgoing
        async with self._pool.acquire() as conn, conn.transaction():
            updated = await conn.fetchval(
                """
                update broadcast_deliveries
                   set state = 'delivered', delivered_at = $3, receipt = $4,
                       lease_until = null, last_error = null, updated_at = now()
                 where id = $1 and state = 'sending' and attempt = $2
                returning true
                """,
                claimed.id, o.attempt, at, receipt)
            if not updated:
                return False
            event = BroadcastDelivered.model_validate({
                **self._envelope(BroadcastDelivered.EVENT_TYPE, at, o.exercise,
                                 claimed.cause_event_id, claimed.correlation_id,
                                 derive_id("broadcast.delivered", o.delivery_id)),
                "payload": {
                    "message_id": o.message_id, "version": o.version, "language": o.language,
                    "channel": o.channel, "attempt": min(o.attempt, 1000), "delivered_at": at,
                    "receipt": receipt,
                },
            })
            await self._outbox(conn, [event])
        return True

    async def mark_failed(self, claimed: Claimed, *, error: str, at: datetime,
                          retry_at: datetime | None, state: str = "") -> bool:
        """Record a failed attempt: ``retry`` at ``retry_at``, or final (``failed``/``refused``).

        Writes the matching ``broadcast.failed``. False if the claim was lost.
        """
        o = claimed.outgoing
        final_state = state or ("retry" if retry_at is not None else "failed")
        async with self._pool.acquire() as conn, conn.transaction():
            updated = await conn.fetchval(
                """
                update broadcast_deliveries
                   set state = $3, next_attempt_at = coalesce($4, next_attempt_at),
                       lease_until = null, last_error = $5, updated_at = now()
                 where id = $1 and state = 'sending' and attempt = $2
                returning true
                """,
                claimed.id, o.attempt, final_state, retry_at, error[:1000])
            if not updated:
                return False
            await self._outbox(conn, [self._failed_event(
                message_id=o.message_id, version=o.version, language=o.language,
                channel=o.channel, attempt=min(o.attempt, 1000), error=error,
                will_retry=retry_at is not None, next_attempt_at=retry_at, at=at,
                exercise=o.exercise, cause_event_id=claimed.cause_event_id,
                correlation_id=claimed.correlation_id,
                event_id=derive_id("broadcast.failed", o.delivery_id, o.attempt))])
        return True

    async def extend_lease(self, delivery_id: UUID, attempt: int, seconds: float) -> bool:
        """Keep a long attempt's claim (a push fan-out); False if it was lost meanwhile."""
        async with self._pool.acquire() as conn:
            kept = await conn.fetchval(
                """
                update broadcast_deliveries
                   set lease_until = now() + make_interval(secs => $3), updated_at = now()
                 where delivery_id = $1 and state = 'sending' and attempt = $2
                returning true
                """,
                delivery_id, attempt, seconds)
        return bool(kept)

    async def release(self, claimed: Sequence[Claimed]) -> None:
        """Give back claims not attempted (e.g. on shutdown): due again at once, attempt undone."""
        if not claimed:
            return
        async with self._pool.acquire() as conn:
            await conn.executemany(
                """
                update broadcast_deliveries
                   set state = case when attempt = 1 then 'pending' else 'retry' end,
                       attempt = attempt - 1, lease_until = null, updated_at = now()
                 where id = $1 and state = 'sending' and attempt = $2
                """,
                [(c.id, c.outgoing.attempt) for c in claimed])

    # --- webhook subscriber health ---

    async def health(self, channel: str) -> SubscriberHealth | None:
        """The stored circuit state of a webhook channel."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "select channel, state, consecutive_failures, next_probe_at, probe_interval, "
                "last_error from webhook_subscribers where namespace = $1 and channel = $2",
                self.namespace, channel)
        if row is None:
            return None
        return SubscriberHealth(row["channel"], row["state"], row["consecutive_failures"],
                                row["next_probe_at"], row["probe_interval"], row["last_error"])

    async def save_health(self, health: SubscriberHealth) -> None:
        """Store a webhook channel's circuit state."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                """
                insert into webhook_subscribers (namespace, channel, state, consecutive_failures,
                    down_since, next_probe_at, probe_interval, last_error, updated_at)
                values ($1, $2, $3, $4, case when $3 = 'down' then now() end, $5, $6, $7, now())
                on conflict (namespace, channel) do update
                   set state = excluded.state,
                       consecutive_failures = excluded.consecutive_failures,
                       down_since = case when excluded.state = 'up' then null
                                         else coalesce(webhook_subscribers.down_since,
                                                       excluded.down_since) end,
                       next_probe_at = excluded.next_probe_at,
                       probe_interval = excluded.probe_interval,
                       last_error = excluded.last_error,
                       updated_at = now()
                """,
                self.namespace, health.channel, health.state, health.consecutive_failures,
                health.next_probe_at, health.probe_interval, health.last_error)

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool (for the outbox relay)."""
        return self._pool

    # --- helpers ---

    async def _outbox(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        if not events:
            return
        rows = []
        for event in events:
            routed = route(event, self.namespace)
            rows.append((self.namespace, routed.topic, routed.key, routed.value, event.event_id))
        await conn.executemany(
            "insert into broadcast_outbox (namespace, topic, key, value, event_id) "
            "values ($1, $2, $3, $4, $5) on conflict (event_id) do nothing", rows)

    @staticmethod
    def _envelope(event_type: str, at: datetime, exercise: bool, cause_event_id: UUID,
                  correlation_id: UUID, event_id: UUID) -> dict[str, Any]:
        # The cause (an order or shelter event) is not at hand here, only its ids,
        # which the ledger row carries; the envelope rules are the same as new_event's.
        return {
            "event_id": event_id, "type": event_type, "schema_version": 1,
            "occurred_at": at, "recorded_at": at, "source": SOURCE,
            "correlation_id": correlation_id, "causation_id": cause_event_id,
            "exercise": exercise,
        }

    def _failed_event(self, *, message_id: UUID, version: int, language: str, channel: str,
                      attempt: int, error: str, will_retry: bool,
                      next_attempt_at: datetime | None, at: datetime, exercise: bool,
                      cause_event_id: UUID, correlation_id: UUID,
                      event_id: UUID) -> BroadcastFailed:
        return BroadcastFailed.model_validate({
            **self._envelope(BroadcastFailed.EVENT_TYPE, at, exercise, cause_event_id,
                             correlation_id, event_id),
            "payload": {
                "message_id": message_id, "version": version, "language": language,
                "channel": channel, "attempt": attempt, "error": error[:1000] or "failed",
                "will_retry": will_retry,
                "next_attempt_at": next_attempt_at if will_retry else None,
            },
        })
