"""Retrying what is transient: which failures count, how long to wait, how to wait.

- :data:`TRANSIENT_DB` / :data:`TRANSIENT`: the failures that mean "try again
  later" (the database or the broker is unreachable), not "this code is wrong".
  Everything else propagates.
- :class:`Backoff`: a doubling delay between :data:`BACKOFF_MIN` and
  :data:`BACKOFF_MAX`, reset after a success.
- :func:`sleep_until`: sleep for a while, but return at once when the process
  is stopped (or, if given, when woken).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import asyncpg
from aiokafka.errors import KafkaError

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "TRANSIENT", "TRANSIENT_DB", "Backoff", "sleep_until"]

BACKOFF_MIN: Final = 0.2
BACKOFF_MAX: Final = 5.0
"""Default retry delays while the broker or database is unavailable (doubling, bounded)."""

TRANSIENT_DB: Final = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError,
)
"""Database failures that mean "try again later"."""

TRANSIENT: Final = (KafkaError, *TRANSIENT_DB)
"""Broker or database failures that mean "try again later"."""


class Backoff:
    """A bounded doubling delay: :attr:`delay` now, twice that (up to ``maximum``) next time."""

    def __init__(self, minimum: float = BACKOFF_MIN, maximum: float = BACKOFF_MAX) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.delay = minimum

    def next(self) -> float:
        """The delay to wait now; the following one doubles (bounded)."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Back to the shortest delay (after a success)."""
        self.delay = self.minimum


async def sleep_until(stop: asyncio.Event, seconds: float,
                      wake: asyncio.Event | None = None) -> None:
    """Sleep ``seconds``, returning early once ``stop`` (or ``wake``, if given) is set.

    ``wake`` is left as it is; the caller clears it when it has acted on it.
    """
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=max(seconds, 0.0),
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
