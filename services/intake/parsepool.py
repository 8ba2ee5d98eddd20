"""The bounded pool of threads that parses, validates and maps XML inputs (CAP, JMA).

Why a pool of its own: on the event loop a large document stalls every other request
for as long as it takes; in ``asyncio.to_thread`` a burst of them takes every thread of
the loop's default executor, which aiohttp's DNS look-ups and the rest of the process
share. Here ``workers`` threads do the work (``SONAE_INTAKE_PARSE_WORKERS``) and at most
``queue`` more documents wait for one (``SONAE_INTAKE_PARSE_QUEUE``); past that,
:meth:`ParsePool.admit` refuses with :class:`~services.intake.errors.Overloaded`
(503 with Retry-After) before anything is parsed, so a burst costs bounded memory and
threads. lxml and shapely release the GIL in their C parts, so the loop keeps
answering while a document is worked on.

Only HTTP asks :meth:`admit`: the raw topic's consumer handles one record at a time and
simply waits for a thread (refusing there would dead-letter a valid input).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

from services.intake.errors import Overloaded

__all__ = ["DEFAULT_QUEUE", "DEFAULT_WORKERS", "ParsePool"]

T = TypeVar("T")

DEFAULT_WORKERS: Final = 2
"""Threads parsing at once (the settings' default; the machine this was sized on has 2 cores)."""
DEFAULT_QUEUE: Final = 8
"""Documents that may wait for a thread beyond those being parsed."""


class ParsePool:
    """``workers`` threads for blocking parses; :meth:`admit` bounds how many may wait."""

    def __init__(self, workers: int = DEFAULT_WORKERS, queue: int = DEFAULT_QUEUE) -> None:
        if workers < 1 or queue < 0:
            raise ValueError("workers must be >= 1 and queue >= 0")
        self.workers = workers
        self.capacity = workers + queue
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix="intake-parse")
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Documents being parsed or waiting for a thread."""
        return self._in_flight

    def admit(self) -> None:
        """Raise :class:`Overloaded` when the pool is full (call just before :meth:`run`,
        with no ``await`` between, so the check and the submission are one step)."""
        if self._in_flight >= self.capacity:
            raise Overloaded(f"intake is parsing {self._in_flight} XML documents, as many as "
                             "it may at once; retry shortly", retry_after=1)

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in one of the pool's threads."""
        with self._lock:
            self._in_flight += 1

        def work() -> T:
            # Counted until the thread is done, not until the caller stops waiting, so a
            # cancelled request does not free a slot its parse still holds.
            try:
                return fn()
            finally:
                with self._lock:
                    self._in_flight -= 1

        try:
            future = self._executor.submit(work)
        except BaseException:
            with self._lock:
                self._in_flight -= 1
            raise
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop taking work; documents not yet started are dropped (their requests fail)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
