"""Intake's outbox relay: the shared relay (:mod:`services.common.outbox`) over ``outbox``,
for the store's namespace only (a drill's intake never publishes live rows, nor the reverse).

While the broker is unreachable the relay retries with bounded backoff while
the HTTP API keeps accepting into the outbox; the backlog drains when the broker
returns. After each (re)connection it creates any missing catalogue topics
(``on_connect``), so a broker that came back *empty* is usable at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.common.outbox import BATCH_SIZE, POLL_INTERVAL, OutboxRelay, ProducerFactory
from services.common.retry import BACKOFF_MAX, BACKOFF_MIN, TRANSIENT
from services.intake.metrics import IntakeMetrics
from services.intake.store import OUTBOX, Store

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "BATCH_SIZE", "POLL_INTERVAL", "TRANSIENT", "Relay"]


class Relay(OutboxRelay):
    """Publishes a store's outbox through producers made by ``producer_factory``."""

    def __init__(
        self,
        store: Store,
        producer_factory: ProducerFactory,
        *,
        metrics: IntakeMetrics,
        on_connect: Callable[[], Awaitable[Any]] | None = None,
        batch_size: int = BATCH_SIZE,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        super().__init__(store.pool, OUTBOX, producer_factory, namespace=store.namespace,
                         name="intake", metrics=metrics,
                         on_connect=on_connect, batch_size=batch_size,
                         poll_interval=poll_interval, outage_note=", intake keeps accepting")
        self.store = store
