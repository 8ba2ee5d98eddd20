"""Deliver queued messages: one worker per channel, retries with backoff, circuit per subscriber.

Each channel has its own :class:`ChannelWorker` task, so a slow or failing
webhook subscriber never delays the public feed, the CAP feed or another
subscriber: they share nothing but the database pool. A worker claims due
deliveries of its channel (:meth:`DeliveryStore.claim`), sends them in order,
and records each outcome.

- **Retries**: a transient failure is retried after a full-jitter exponential
  backoff, ``uniform(0, min(max_delay, base_delay · 2^(attempt-1)))`` (or the
  receiver's Retry-After if longer). Webhooks get ``max_attempts``; a permanent
  failure (say HTTP 401) or the last attempt gives up. The public and CAP feeds
  (our own broker and database) are retried until they succeed. Every attempt that fails is a
  ``broadcast.failed`` (``will_retry`` says which).
- **Circuit** (webhooks): after ``failures_to_down`` consecutive failures the
  subscriber is marked down (``webhook_subscribers``, a warning log line, and
  the ``broadcast.failed`` of that attempt says so). Its deliveries then wait;
  one is sent as a probe every ``probe_interval`` (doubling while probes fail);
  a successful probe marks it up and the backlog drains.
- **Drill guard**: before every attempt, an exercise delivery on a live
  channel is refused and recorded (state ``refused``, ``broadcast.failed``).

:class:`OutboxRelay` publishes the ledger's events (``broadcast.requested``,
``delivered``, ``failed``) from ``broadcast_outbox`` to Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from prometheus_client import Counter

from schemas.common import utc_now
from services.broadcaster.channels import (
    Channel,
    DeliveryResult,
    WebhookChannel,
    refusal,
)
from services.broadcaster.delivery import (
    TRANSIENT_DB_ERRORS,
    Claimed,
    DeliveryStore,
    SubscriberHealth,
)
from services.broadcaster.errors import DrillRefused
from services.broadcaster.webhooks import RetrySettings
from services.common.outbox import OutboxRelay as SharedOutboxRelay
from services.common.outbox import OutboxTable, ProducerFactory
from services.common.retry import sleep_until

log = logging.getLogger(__name__)

__all__ = [
    "BROADCAST_OUTBOX",
    "DELIVERIES",
    "ChannelWorker",
    "Circuit",
    "DispatchConfig",
    "Dispatcher",
    "OutboxRelay",
    "backoff_delay",
]

DELIVERIES: Final = Counter(
    "sonae_broadcaster_deliveries_total",
    "Delivery attempts by channel and outcome (delivered, retry, failed, refused).",
    ["channel", "outcome"],
)

_DB_BACKOFF_MAX: Final = 5.0


def backoff_delay(attempt: int, retry: RetrySettings, rng: random.Random) -> float:
    """Full-jitter exponential backoff before attempt ``attempt + 1``."""
    ceiling = min(retry.max_delay_seconds, retry.base_delay_seconds * 2 ** max(attempt - 1, 0))
    return rng.uniform(0.0, ceiling)


@dataclass(frozen=True)
class DispatchConfig:
    """Worker tuning."""

    retry: RetrySettings = field(default_factory=RetrySettings)
    batch: int = 50
    """Deliveries claimed at once per channel."""
    poll_interval: float = 1.0
    """Longest sleep between looks at the ledger (other instances' work, retries due)."""
    lease: float = 30.0
    """A claim not finished within this many seconds is taken over (a crashed worker's)."""


@dataclass
class Circuit:
    """A subscriber's health: up, or down until the next probe."""

    channel: str
    failures_to_down: int
    base_probe: float
    max_probe: float
    state: str = "up"
    failures: int = 0
    next_probe_at: datetime | None = None
    probe_interval: float | None = None
    last_error: str | None = None

    @property
    def down(self) -> bool:
        """True while the subscriber is marked down."""
        return self.state == "down"

    def allows(self, now: datetime) -> bool:
        """Whether a delivery may be attempted now (when down: only a probe, when due)."""
        return not self.down or self.next_probe_at is None or now >= self.next_probe_at

    def success(self) -> bool:
        """Record a delivered attempt; True if the subscriber was down and is up again."""
        was_down = self.down
        self.state, self.failures, self.next_probe_at = "up", 0, None
        self.probe_interval, self.last_error = None, None
        return was_down

    def failure(self, now: datetime, error: str) -> bool:
        """Record a failed attempt; True if this failure marked the subscriber down."""
        self.failures += 1
        self.last_error = error
        if self.down:  # a failed probe: wait longer before the next one
            self.probe_interval = min((self.probe_interval or self.base_probe) * 2, self.max_probe)
            self.next_probe_at = now + timedelta(seconds=self.probe_interval)
            return False
        if self.failures >= self.failures_to_down:
            self.state = "down"
            self.probe_interval = self.base_probe
            self.next_probe_at = now + timedelta(seconds=self.probe_interval)
            return True
        return False

    def health(self) -> SubscriberHealth:
        """The state to store."""
        return SubscriberHealth(self.channel, self.state, self.failures, self.next_probe_at,
                                self.probe_interval, self.last_error)

    def restore(self, stored: SubscriberHealth | None) -> None:
        """Continue from the stored state (a restart keeps a down subscriber down)."""
        if stored is None:
            return
        self.state, self.failures = stored.state, stored.consecutive_failures
        self.next_probe_at, self.probe_interval = stored.next_probe_at, stored.probe_interval
        self.last_error = stored.last_error


class ChannelWorker:
    """Delivers one channel's queue until stopped."""

    def __init__(self, channel: Channel, store: DeliveryStore, config: DispatchConfig, *,
                 circuit: Circuit | None = None, bounded: bool = True,
                 rng: random.Random | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.channel = channel
        self._store = store
        self._config = config
        self.circuit = circuit
        # Our own feeds (broker, database) are retried until they come back: giving up
        # would silently drop a public message. External subscribers get bounded attempts.
        self._bounded = bounded
        self._rng = rng or random.Random()
        self._clock = clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look at the ledger now (new deliveries were planned)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; database outages are waited out."""
        name = self.channel.name
        delay = 0.1
        while self.circuit is not None and not stop.is_set():
            try:
                self.circuit.restore(await self._store.health(name))
                break
            except TRANSIENT_DB_ERRORS as e:
                log.warning("channel %s: database unavailable (%s); retrying in %.1fs",
                            name, e, delay)
                await self._sleep(stop, delay)
                delay = min(delay * 2, _DB_BACKOFF_MAX)
        while not stop.is_set():
            try:
                await self._round(stop)
                delay = 0.1
            except TRANSIENT_DB_ERRORS as e:
                log.warning("channel %s: database unavailable (%s); retrying in %.1fs",
                            name, e, delay)
                await self._sleep(stop, delay)
                delay = min(delay * 2, _DB_BACKOFF_MAX)

    async def _round(self, stop: asyncio.Event) -> None:
        name = self.channel.name
        now = self._clock()
        circuit = self.circuit
        if circuit is not None and not circuit.allows(now):
            assert circuit.next_probe_at is not None
            await self._sleep(stop, (circuit.next_probe_at - now).total_seconds(), wakeable=False)
            return
        probing = circuit is not None and circuit.down
        self._wake.clear()
        claimed = await self._store.claim(name, limit=1 if probing else self._config.batch,
                                          lease=self._config.lease)
        if not claimed:
            due = await self._store.next_due(name)
            wait = self._config.poll_interval
            if due is not None:
                wait = min(wait, max((due - self._clock()).total_seconds(), 0.01))
            await self._sleep(stop, wait)
            return
        for index, item in enumerate(claimed):
            if stop.is_set():
                await self._store.release(claimed[index:])
                return
            await self._attempt(item)
            if circuit is not None and circuit.down and index + 1 < len(claimed):
                # Marked down mid-batch: the rest wait for the probe instead of failing too.
                await self._store.release(claimed[index + 1:])
                return

    async def _attempt(self, item: Claimed) -> None:
        out = item.outgoing
        name = self.channel.name
        reason = refusal(name, self.channel.live, out.exercise)
        if reason is None:
            try:
                result = await self.channel.send(out)
            except DrillRefused as e:
                reason = str(e)
            except Exception as e:  # a channel must not raise; if one does, retry, and say so
                log.exception("channel %s raised while sending %s", name, out.delivery_id)
                result = DeliveryResult.failed(f"{type(e).__name__}: {e}")
        if reason is not None:
            log.error("drill guard: refused exercise delivery %s (message %s v%d %s) on live "
                      "channel %s", out.delivery_id, out.message_id, out.version, out.language,
                      name)
            await self._store.mark_failed(item, error=reason, at=self._clock(), retry_at=None,
                                          state="refused")
            DELIVERIES.labels(name, "refused").inc()
            return
        now = self._clock()
        if result.ok:
            if await self._store.mark_delivered(item, receipt=result.receipt, at=now):
                DELIVERIES.labels(name, "delivered").inc()
            if self.circuit is not None and (self.circuit.failures or self.circuit.down):
                if self.circuit.success():
                    log.warning("webhook subscriber %s is up again", name)
                await self._store.save_health(self.circuit.health())
            return
        error = result.error
        tripped = False
        if self.circuit is not None:
            tripped = self.circuit.failure(now, error)
            if tripped:
                error += (f"; subscriber marked down after {self.circuit.failures} consecutive "
                          f"failures, next probe at {self.circuit.next_probe_at:%H:%M:%S}Z")
                log.warning("webhook subscriber %s marked down after %d consecutive failures "
                            "(last: %s); probing every %.0fs", name, self.circuit.failures,
                            result.error, self.circuit.probe_interval or 0)
        retry = self._config.retry
        retry_at: datetime | None = None
        if not result.permanent and (not self._bounded or out.attempt < retry.max_attempts):
            delay = backoff_delay(out.attempt, retry, self._rng)
            if result.retry_after is not None:
                delay = max(delay, min(result.retry_after, retry.max_delay_seconds))
            retry_at = now + timedelta(seconds=delay)
        await self._store.mark_failed(item, error=error, at=now, retry_at=retry_at)
        DELIVERIES.labels(name, "retry" if retry_at is not None else "failed").inc()
        if retry_at is None:
            log.warning("channel %s gave up delivery %s (message %s v%d %s) after attempt %d: %s",
                        name, out.delivery_id, out.message_id, out.version, out.language,
                        out.attempt, error)
        if self.circuit is not None:
            await self._store.save_health(self.circuit.health())

    async def _sleep(self, stop: asyncio.Event, seconds: float, *, wakeable: bool = True) -> None:
        await sleep_until(stop, seconds, self._wake if wakeable else None)


class Dispatcher:
    """One worker per channel; webhooks get a circuit each."""

    def __init__(self, channels: Sequence[Channel], store: DeliveryStore,
                 config: DispatchConfig | None = None, *,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.config = config or DispatchConfig()
        retry = self.config.retry
        self.workers = tuple(
            ChannelWorker(
                channel, store, self.config, clock=clock,
                circuit=Circuit(channel.name, retry.failures_to_down,
                                retry.probe_interval_seconds, retry.max_probe_interval_seconds)
                if isinstance(channel, WebhookChannel) else None,
                bounded=isinstance(channel, WebhookChannel),
            )
            for channel in channels
        )

    def wake(self) -> None:
        """Tell every worker that new deliveries were planned."""
        for worker in self.workers:
            worker.wake()

    async def run(self, stop: asyncio.Event) -> None:
        """Run every worker until ``stop``."""
        async with asyncio.TaskGroup() as group:
            for worker in self.workers:
                group.create_task(worker.run(stop), name=f"deliver-{worker.channel.name}")


BROADCAST_OUTBOX: Final = OutboxTable(table="broadcast_outbox",
                                      channel="sonae_broadcast_outbox",
                                      lock_class=0x534E4142)  # "SNAB"
"""The broadcaster's outbox for the shared relay (NOTIFY trigger: migrations 0005, 0006)."""


class OutboxRelay(SharedOutboxRelay):
    """Publishes ``broadcast_outbox`` rows to Kafka and marks them sent.

    The shared relay (:mod:`services.common.outbox`): one relay per (schema, namespace)
    publishing only its namespace's rows, LISTEN
    wake-ups, marks only what the broker acknowledged, one warning per outage. A
    crash between publish and mark publishes the rows again: the events keep their
    ids, and consumers (the recorder) deduplicate by ``event_id``. Once stopped, it
    publishes what is left for up to 3 s so little waits for the restart.
    """

    def __init__(self, store: DeliveryStore, producer_factory: ProducerFactory, *,
                 batch: int = 500, poll_interval: float = 0.5) -> None:
        super().__init__(store.pool, BROADCAST_OUTBOX, producer_factory,
                         namespace=store.namespace, name="broadcaster",
                         batch_size=batch, poll_interval=poll_interval, final_drain=3.0)
