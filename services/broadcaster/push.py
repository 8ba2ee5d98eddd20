"""The ``push`` channel: Web Push (RFC 8030) to residents' browsers, one push per
subscription per (message, version), in the subscriber's language.

The ledger (``broadcast_deliveries``) has one ``push`` row per (message, version,
language), planned like every channel's; one ``send`` of that row is one **pass**
of the fan-out over the namespace's subscriptions in that language whose areas
meet the message's:

- subscriptions are read per push-service origin, page by page in id order, and
  each origin gets its own ``SONAE_PUSH_CONCURRENCY`` workers, so a slow or
  rate-limited push service holds up only its own subscribers;
- each push is the message's ``broadcast.published`` texts as the JSON payload
  the portal's service worker shows (:func:`payload_for`), encrypted for the
  subscription (RFC 8291 aes128gcm, ``pywebpush``/``http_ece``), with a VAPID
  ``Authorization`` (RFC 8292, ``py_vapid``; one token per origin, renewed well
  before its 12-hour ``exp``), ``TTL``, ``Urgency`` (:func:`urgency_for`) and a
  ``Topic`` of the message id, so a push service still holding an older version
  for an offline phone replaces it with the newer one;
- 201/202/200 is sent; 404/410 removes the subscription (the push service says
  it is gone); 429, 5xx, 408 and network errors are retried with full-jitter
  backoff, at least the push service's ``Retry-After`` (which pauses that whole
  origin), up to ``attempts`` times; other statuses fail that push;
- final outcomes go to ``push_sent`` in batches, so a pass resumed after a crash
  or a retry skips them. Pushes still failing transiently leave the row to be
  retried by the dispatcher (backoff) until ``passes``; then they count as failed.
- when the pass is complete, ``push_counts`` keeps how many were sent, failed and
  removed — the ledger row's receipt, ``broadcast.delivered`` and so the HQ view
  carry these counts — and the per-subscription rows are deleted: no one sees who.

A push accepted by the push service whose outcome was not yet written when the
process died is sent again by the resumed pass: at least once, with the same
``Topic`` (the push service keeps one) and the same notification ``tag`` (the
phone shows one).

**Drill guard**, as for every channel: an exercise message never goes out on a
live push channel (the planner, the dispatcher and :meth:`PushChannel.send` each
refuse it), and a channel reads only its own namespace's subscriptions, so a
drill's pushes reach only subscriptions made through that drill's gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Final, Literal
from uuid import UUID

import aiohttp
import asyncpg
from http_ece import ECEException
from py_vapid import Vapid02
from pywebpush import WebPusher, WebPushException

from schemas.broadcasts import BroadcastKind, BroadcastPublished, BroadcastPublishedPayload
from schemas.errors import InvalidEvent
from schemas.events import decode_event
from schemas.region import LANGUAGES
from services.broadcaster.channels import DeliveryResult, Outgoing, guard
from services.broadcaster.errors import DrillRefused
from services.common.retry import TRANSIENT_DB, sleep_until
from services.common.webpush import StoredSubscription

log = logging.getLogger(__name__)

__all__ = [
    "PUSH_CHANNEL",
    "PUSH_KINDS",
    "Counts",
    "FanoutStore",
    "PushChannel",
    "PushConfig",
    "VapidSigner",
    "area_for",
    "outcome_of",
    "payload_for",
    "retry_after_seconds",
    "ttl_for",
    "urgency_for",
]

PUSH_CHANNEL: Final = "push"
PUSH_KINDS: Final = frozenset({BroadcastKind.ORDER_ISSUED, BroadcastKind.ORDER_UPDATED,
                               BroadcastKind.ORDER_LIFTED, BroadcastKind.SHELTER_OPENED})
"""What residents are pushed: every order version (issued, raised or otherwise changed,
lifted) and a shelter opening. A full or closing shelter is on the page, not pushed."""

Outcome = Literal["sent", "failed", "removed"]
Verdict = Literal["sent", "failed", "removed", "retry"]

# --- pure rules ----------------------------------------------------------------------------


def urgency_for(kind: BroadcastKind, level: int | None) -> str:
    """RFC 8030 ``Urgency``: ``high`` (wakes a phone even on low battery) for an order in
    force at level 4 避難指示 or 5 緊急安全確保; ``normal`` for level 3, lifts and shelters."""
    if kind in (BroadcastKind.ORDER_ISSUED, BroadcastKind.ORDER_UPDATED) and (level or 0) >= 4:
        return "high"
    return "normal"


_HOUR: Final = 3600


def ttl_for(kind: BroadcastKind, level: int | None) -> int:
    """Seconds a push service keeps the push for a phone that is offline.

    An order stays relevant while it is in force, which can be many hours; the
    ``Topic`` makes a newer version replace an undelivered older one, so a long
    TTL never delivers stale wording. Level 5 (緊急安全確保: it may already be too
    late to move) is still worth delivering late. A shelter opening is news for
    the evening it happens.
    """
    if kind is BroadcastKind.SHELTER_OPENED:
        return 6 * _HOUR
    return 12 * _HOUR if (level or 0) >= 3 else 6 * _HOUR


def topic_for(message_id: UUID) -> str:
    """RFC 8030 ``Topic`` (at most 32 base64url characters): the message id in hex."""
    return message_id.hex


def area_for(subscribed: Sequence[str], message_areas: Sequence[str]) -> str:
    """The area a push opens: the first of the subscriber's areas the message concerns."""
    for area in subscribed:
        if area in message_areas:
            return area
    return message_areas[0] if message_areas else subscribed[0]


def payload_for(p: BroadcastPublishedPayload, area: str) -> bytes:
    """The JSON the portal's service worker shows (``title``, ``body``, ``url``, ``level``,
    ``tag``); ``level`` is 0 for shelter news, ``tag`` the message id (one notification per
    message: a newer version replaces the older one on the phone)."""
    return json.dumps({
        "title": p.headline,
        "body": p.push,
        "url": f"/?area={area}&lang={p.language}",
        "level": int(p.level) if p.level is not None else 0,
        "tag": str(p.message_id),
    }, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_TRANSIENT_STATUSES: Final = frozenset({408, 425, 429})


def outcome_of(status: int) -> Verdict:
    """What a push service's answer means for this subscription."""
    if 200 <= status < 300:
        return "sent"
    if status in (404, 410):
        return "removed"  # the subscription expired or was unsubscribed (RFC 8030 §7.3)
    if status in _TRANSIENT_STATUSES or status >= 500:
        return "retry"
    return "failed"  # 400 (bad request), 401/403 (VAPID refused), 413 (too large)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (delta-seconds or an HTTP date), if valid."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return seconds if 0 <= seconds <= 86_400 else None


# --- configuration, signing, counts ---------------------------------------------------------


@dataclass(frozen=True)
class PushConfig:
    """Fan-out tuning (``concurrency`` from ``SONAE_PUSH_CONCURRENCY``)."""

    contact: str = "mailto:sonae@localhost"
    """The VAPID ``sub`` (``SONAE_PUSH_CONTACT``)."""
    concurrency: int = 32
    """Pushes in flight at once per push-service origin."""
    page: int = 500
    """Subscriptions read at once per origin."""
    attempts: int = 4
    """Attempts per push within one pass (then it waits for the next pass)."""
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    """A longer ``Retry-After`` is honoured by the next pass's backoff instead."""
    passes: int = 5
    """Passes (ledger attempts) before pushes still failing transiently count as failed."""
    timeout: float = 10.0
    """Seconds per push request."""
    flush_every: int = 500
    """Outcomes written to ``push_sent`` at once."""
    vapid_lifetime: float = 12 * _HOUR
    """The VAPID token's ``exp`` from signing (RFC 8292 allows at most 24 h)."""


class VapidSigner:
    """VAPID ``Authorization`` headers per push-service origin, signed once and reused."""

    def __init__(self, vapid: Vapid02, contact: str, *, lifetime: float = 12 * _HOUR,
                 clock: Callable[[], float] = time.time) -> None:
        self._vapid = vapid
        self._contact = contact
        self._lifetime = lifetime
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}

    def header(self, origin: str) -> str:
        """The ``Authorization`` value for ``origin`` (re-signed with an hour of validity left)."""
        now = self._clock()
        cached = self._cache.get(origin)
        if cached is not None and cached[0] - now > min(_HOUR, self._lifetime / 2):
            return cached[1]
        exp = int(now + self._lifetime)
        signed: Mapping[str, str] = self._vapid.sign(
            {"aud": origin, "exp": exp, "sub": self._contact})
        value = signed["Authorization"]
        self._cache[origin] = (exp, value)
        return value


@dataclass(frozen=True)
class Counts:
    """What a message's pushes in one language came to."""

    sent: int
    failed: int
    removed: int

    @property
    def receipt(self) -> str:
        """The ledger receipt (no spaces: the receipt's character set)."""
        return f"sent={self.sent},failed={self.failed},removed={self.removed}"


class FanoutStore:
    """The fan-out's SQL over ``push_subscriptions``, ``push_sent`` and ``push_counts``."""

    def __init__(self, pool: asyncpg.Pool, namespace: str) -> None:
        self._pool = pool
        self.namespace = namespace

    async def origins(self, language: str, areas: Sequence[str]) -> list[str]:
        """The push-service origins with subscribers in ``language`` for any of ``areas``."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "select distinct origin from push_subscriptions "
                "where namespace = $1 and lang = $2 and areas && $3::text[] order by origin",
                self.namespace, language, list(areas))
        return [r["origin"] for r in rows]

    async def page(self, language: str, origin: str, areas: Sequence[str], message_id: UUID,
                   version: int, after: int, limit: int) -> list[StoredSubscription]:
        """The next subscriptions of ``origin`` (id order) this version was not pushed to."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                select s.id, s.endpoint, s.p256dh, s.auth, s.areas
                  from push_subscriptions s
                 where s.namespace = $1 and s.lang = $2 and s.origin = $3
                   and s.areas && $4::text[] and s.id > $5
                   and not exists (select 1 from push_sent p
                                    where p.namespace = $1 and p.message_id = $6
                                      and p.version = $7 and p.subscription_id = s.id)
                 order by s.id
                 limit $8
                """,
                self.namespace, language, origin, list(areas), after, message_id, version,
                limit)
        return [StoredSubscription(r["id"], r["endpoint"], r["p256dh"], r["auth"],
                                   tuple(r["areas"])) for r in rows]

    async def record(self, message_id: UUID, version: int, language: str,
                     outcomes: Sequence[tuple[int, Outcome]]) -> None:
        """Write final outcomes; delete the subscriptions the push service said are gone."""
        if not outcomes:
            return
        removed = [sub_id for sub_id, outcome in outcomes if outcome == "removed"]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                insert into push_sent (namespace, message_id, version, language,
                                       subscription_id, outcome)
                select $1, $2, $3, $4, x.id, x.outcome
                  from unnest($5::bigint[], $6::text[]) as x(id, outcome)
                on conflict do nothing
                """,
                self.namespace, message_id, version, language,
                [o[0] for o in outcomes], [o[1] for o in outcomes])
            if removed:
                await conn.execute(
                    "delete from push_subscriptions where namespace = $1 and id = any($2)",
                    self.namespace, removed)

    async def completed(self, message_id: UUID, version: int, language: str) -> Counts | None:
        """The counts of a fan-out that already ended (a pass repeated after a crash)."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "select sent, failed, removed from push_counts where namespace = $1 "
                "and message_id = $2 and version = $3 and language = $4",
                self.namespace, message_id, version, language)
        return Counts(row["sent"], row["failed"], row["removed"]) if row else None

    async def finish(self, message_id: UUID, version: int, language: str,
                     unfinished: int) -> Counts:
        """End the fan-out: keep the counts (``unfinished`` pushes count as failed), drop who."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                insert into push_counts (namespace, message_id, version, language, sent,
                                         failed, removed)
                select $1, $2, $3, $4,
                       count(*) filter (where outcome = 'sent'),
                       count(*) filter (where outcome = 'failed') + $5,
                       count(*) filter (where outcome = 'removed')
                  from push_sent
                 where namespace = $1 and message_id = $2 and version = $3 and language = $4
                on conflict do nothing
                """,
                self.namespace, message_id, version, language, unfinished)
            await conn.execute(
                "delete from push_sent where namespace = $1 and message_id = $2 "
                "and version = $3 and language = $4",
                self.namespace, message_id, version, language)
            row = await conn.fetchrow(
                "select sent, failed, removed from push_counts where namespace = $1 "
                "and message_id = $2 and version = $3 and language = $4",
                self.namespace, message_id, version, language)
        assert row is not None
        return Counts(row["sent"], row["failed"], row["removed"])


# --- the channel ---------------------------------------------------------------------------


@dataclass
class _Pass:
    """One pass over one (message, version, language)."""

    message: BroadcastPublishedPayload
    payloads: dict[str, bytes]
    headers: dict[str, str]
    outcomes: list[tuple[int, Outcome]] = field(default_factory=list)
    unfinished: int = 0
    resume_at: dict[str, float] = field(default_factory=dict)
    """Per origin: no request before this monotonic time (its Retry-After)."""
    longest_retry_after: float = 0.0
    unflushed: bool = False
    lost: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class PushChannel:
    """Web Push to the namespace's subscriptions; one ``send`` is one pass of a fan-out."""

    def __init__(self, store: FanoutStore, session: aiohttp.ClientSession, signer: VapidSigner,
                 *, live: bool, stop: asyncio.Event, config: PushConfig | None = None,
                 renew: Callable[[Outgoing], Awaitable[bool]] | None = None,
                 lease: float = 30.0, rng: random.Random | None = None) -> None:
        self._store = store
        self._session = session
        self._signer = signer
        self._live = live
        self._stop = stop
        self._config = config or PushConfig()
        self._renew = renew
        self._lease = lease
        self._rng = rng or random.Random()
        self._timeout = aiohttp.ClientTimeout(total=self._config.timeout)

    @property
    def name(self) -> str:
        """Always ``push``."""
        return PUSH_CHANNEL

    @property
    def live(self) -> bool:
        """Live in the live namespace: residents' phones."""
        return self._live

    @property
    def languages(self) -> tuple[str, ...]:
        """Every public language (each subscriber chose one)."""
        return LANGUAGES

    async def send(self, message: Outgoing) -> DeliveryResult:
        """One pass of the fan-out of ``message`` (see the module docstring)."""
        guard(self, message)
        if message.namespace != self._store.namespace:
            raise DrillRefused(f"a message of namespace {message.namespace or 'live'!r} was "
                               f"offered to the push channel of namespace "
                               f"{self._store.namespace or 'live'!r}")
        try:
            event = decode_event(message.body)
        except InvalidEvent as e:
            return DeliveryResult.failed(f"not a broadcast.published document: {e}",
                                         permanent=True)
        if not isinstance(event, BroadcastPublished):
            return DeliveryResult.failed(f"expected broadcast.published, got {event.type}",
                                         permanent=True)
        p = event.payload
        try:
            done = await self._store.completed(p.message_id, p.version, message.language)
            if done is not None:
                return DeliveryResult.delivered(done.receipt)
            if self._renew is not None and not await self._renew(message):
                return DeliveryResult.failed("claim lost to another broadcaster instance")
            origins = await self._store.origins(message.language, p.area_ids)
        except TRANSIENT_DB as e:
            return DeliveryResult.failed(f"database unavailable: {type(e).__name__}")
        state = _Pass(p, {area: payload_for(p, area) for area in p.area_ids}, {
            "TTL": str(ttl_for(p.kind, p.level)),
            "Urgency": urgency_for(p.kind, p.level),
            "Topic": topic_for(p.message_id),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
        })
        flush_lock = asyncio.Lock()
        async with asyncio.TaskGroup() as group:
            if self._renew is not None:
                group.create_task(self._keep_claim(message, state), name="push-lease")
            try:
                async with asyncio.TaskGroup() as origins_group:
                    for origin in origins:
                        origins_group.create_task(
                            self._origin(origin, message, state, flush_lock),
                            name=f"push-{origin}")
            finally:
                state.ended.set()
        await self._flush(message, state, flush_lock, final=True)
        if state.lost:
            return DeliveryResult.failed("claim lost to another broadcaster instance")
        if self._stop.is_set() or state.unflushed:
            return DeliveryResult.failed("fan-out interrupted; the next pass resumes it",
                                         retry_after=0.0)
        if state.unfinished and message.attempt < self._config.passes:
            return DeliveryResult.failed(
                f"{state.unfinished} pushes failed transiently; pass {message.attempt} of "
                f"{self._config.passes}", retry_after=state.longest_retry_after or None)
        try:
            counts = await self._store.finish(p.message_id, p.version, message.language,
                                              state.unfinished)
        except TRANSIENT_DB as e:
            return DeliveryResult.failed(f"database unavailable: {type(e).__name__}")
        if counts.failed or counts.removed:
            log.info("push %s v%d %s: %s", p.message_id, p.version, message.language,
                     counts.receipt)
        return DeliveryResult.delivered(counts.receipt)

    # --- the pass ---

    async def _keep_claim(self, message: Outgoing, state: _Pass) -> None:
        assert self._renew is not None
        while True:
            try:
                await asyncio.wait_for(state.ended.wait(), self._lease / 3)
                return
            except TimeoutError:
                pass
            try:
                if not await self._renew(message):
                    log.warning("push %s: claim lost mid-pass; stopping this pass",
                                message.delivery_id)
                    state.lost = True
                    return
            except TRANSIENT_DB as e:
                log.warning("push %s: cannot renew the claim (%s)", message.delivery_id,
                            type(e).__name__)

    def _halted(self, state: _Pass) -> bool:
        return self._stop.is_set() or state.lost

    async def _origin(self, origin: str, message: Outgoing, state: _Pass,
                      flush_lock: asyncio.Lock) -> None:
        config = self._config
        queue: asyncio.Queue[StoredSubscription] = asyncio.Queue(config.concurrency * 2)
        authorization = self._signer.header(origin)

        async def worker() -> None:
            while True:
                sub = await queue.get()
                try:
                    if self._halted(state):
                        continue  # drained without sending: the reader stops too
                    verdict = await self._push(origin, sub, authorization, state)
                    if verdict is None:
                        state.unfinished += 1
                        continue
                    state.outcomes.append((sub.id, verdict))
                    if len(state.outcomes) >= config.flush_every:
                        await self._flush(message, state, flush_lock)
                finally:
                    queue.task_done()

        p = state.message
        async with asyncio.TaskGroup() as group:
            workers = [group.create_task(worker(), name=f"push-{origin}-{i}")
                       for i in range(config.concurrency)]
            after = 0
            while not self._halted(state):
                try:
                    page = await self._store.page(message.language, origin, p.area_ids,
                                                  p.message_id, p.version, after, config.page)
                except TRANSIENT_DB as e:
                    log.warning("push %s: cannot read subscriptions (%s); next pass",
                                message.delivery_id, type(e).__name__)
                    state.unflushed = True
                    break
                if not page:
                    break
                for sub in page:
                    await queue.put(sub)
                after = page[-1].id
            await queue.join()
            for task in workers:
                task.cancel()  # idle on an empty queue: nothing is interrupted

    async def _push(self, origin: str, sub: StoredSubscription, authorization: str,
                    state: _Pass) -> Outcome | None:
        """Push to one subscription: its final outcome, or None to leave it to the next pass."""
        config = self._config
        area = area_for(sub.areas, state.message.area_ids)
        payload = state.payloads.get(area) or payload_for(state.message, area)
        for attempt in range(1, config.attempts + 1):
            wait = state.resume_at.get(origin, 0.0) - time.monotonic()
            if wait > 0:
                await sleep_until(self._stop, wait)
            if self._halted(state):
                return None
            verdict, retry_after = await self._post(sub, payload, authorization, state)
            if verdict != "retry":
                return verdict
            if retry_after is not None:
                # The push service asked this sender to wait: every push to it waits.
                resume = time.monotonic() + min(retry_after, config.max_retry_after)
                state.resume_at[origin] = max(state.resume_at.get(origin, 0.0), resume)
                state.longest_retry_after = max(state.longest_retry_after, retry_after)
            if attempt == config.attempts:
                break
            ceiling = min(config.max_delay, config.base_delay * 2 ** (attempt - 1))
            await sleep_until(self._stop, self._rng.uniform(0.0, ceiling))
        return None

    async def _post(self, sub: StoredSubscription, payload: bytes, authorization: str,
                    state: _Pass) -> tuple[Verdict, float | None]:
        info = {"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}}
        try:
            body = WebPusher(info).encode(payload, "aes128gcm")["body"]
        except (WebPushException, ECEException, ValueError) as e:
            log.warning("push: subscription %d has unusable keys (%s)", sub.id, e)
            return "failed", None
        headers = {**state.headers, "Authorization": authorization}
        try:
            async with self._session.post(sub.endpoint, data=body, headers=headers,
                                          timeout=self._timeout,
                                          allow_redirects=False) as response:
                await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, OSError, TimeoutError):
            return "retry", None
        return outcome_of(status), retry_after_seconds(retry_after, time.time())

    async def _flush(self, message: Outgoing, state: _Pass, lock: asyncio.Lock, *,
                     final: bool = False) -> None:
        async with lock:
            batch, state.outcomes = state.outcomes, []
            if not batch:
                return
            p = state.message
            try:
                await self._store.record(p.message_id, p.version, message.language, batch)
            except TRANSIENT_DB as e:
                # Kept for the next flush; if the pass ends unflushed, they are resent
                # (the same Topic and tag) by the next pass.
                state.outcomes = batch + state.outcomes
                if final:
                    state.unflushed = True
                log.warning("push %s: cannot record %d outcomes (%s)", message.delivery_id,
                            len(batch), type(e).__name__)
