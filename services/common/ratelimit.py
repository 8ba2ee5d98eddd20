"""A token bucket per key, for rate limits: intake's per token subject and per client
address (requests without a valid token), the gateway's push subscriptions per client
address and its websocket messages per connection.

Pure (the caller passes the monotonic time): :mod:`services.intake.http` spends
one token per authenticated request (``SONAE_INTAKE_RATE_PER_SECOND``,
``SONAE_INTAKE_RATE_BURST``) and :mod:`services.gateway.push` one per subscribe
or unsubscribe (``SONAE_PUSH_RATE_PER_SECOND``, ``SONAE_PUSH_RATE_BURST``); both
answer 429 with ``Retry-After`` when the bucket is empty.
"""

from __future__ import annotations

import math

__all__ = ["RateLimiter", "retry_after_seconds"]


class RateLimiter:
    """A token bucket per key (a token subject, a client address).

    ``burst`` requests at once, refilled at ``rate`` per second.

    ``take`` returns 0 when a request may proceed, else the seconds until it may
    (the Retry-After). Idle keys are forgotten once their bucket is full again,
    so memory is bounded by the number of recently active subjects.
    """

    def __init__(self, burst: float, rate: float, *, max_keys: int = 100_000) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("burst must be >= 1 and rate > 0")
        self.burst = float(burst)
        self.rate = float(rate)
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float) -> float:
        """Spend one token of ``key``'s bucket at monotonic time ``now``."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self._max_keys:
                self._forget_idle(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key, (_, last) in list(self._buckets.items()):
            if now - last >= full_after:
                del self._buckets[key]


def retry_after_seconds(wait: float) -> int:
    """Retry-After is whole seconds; never 0 for a refused request."""
    return max(1, math.ceil(wait))

