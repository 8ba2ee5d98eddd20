"""``sonae up`` heals its embedded parts: a broker or PostgreSQL that dies is replaced.

The embedded broker keeps its log in memory, so its death loses the log (the
event store in PostgreSQL keeps every recorded event). When it dies:

1. every service is held (stopped, not restarted: :meth:`Supervisor.hold`), so
   nothing publishes into the new broker before the store is republished and no
   consumer reads a half-republished log;
2. the broker is started again on the same port (retried with backoff);
3. outbox rows the old broker acknowledged but the event store never received are
   marked unsent again (:mod:`services.common.rearm`): acknowledged is never lost;
4. migrations (a no-op), the catalogue's topics, the republish of the store
   (``rehydrate_if_empty``: in store order, so in order per key);
5. the services are released: consumers start against the new log with no
   committed offsets, so they read it from the start and deduplicate by
   ``event_id``; intake's relay drains its outbox (after the republish); each
   gateway sees new partition markers, so every client position has a new epoch
   and clients get a fresh snapshot;
6. "ready" again once every service serves (:func:`wait_serving`).

When the embedded PostgreSQL dies it is started again on its data directory
(crash recovery replays its WAL); the services keep running and reconnect with
their own retry, as they do for an external database that restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import asyncpg

from infra.embedded.broker import EmbeddedBroker
from infra.embedded.postgres import EmbeddedPostgres
from infra.embedded.processes import EmbeddedError
from infra.settings import Settings
from infra.stackstate import StackState
from infra.status import service_parts
from infra.supervisor import Supervisor
from services.broadcaster.dispatch import BROADCAST_OUTBOX
from services.common.rearm import rearm_unrecorded
from services.intake.store import OUTBOX

log = logging.getLogger(__name__)

__all__ = ["Healer", "wait_serving"]

WATCH_EVERY = 0.2
"""Seconds between looks at the embedded parts."""
_RETRY_MAX = 5.0


async def wait_serving(state: StackState, supervisor: Supervisor, stop: asyncio.Event,
                       out: TextIO) -> bool:
    """Poll every service's health check until all serve (True) or ``stop`` is set.

    Every 15 s without success it names the services still not serving, so a stack
    that cannot come up says why instead of staying silent.
    """
    last_report = time.monotonic()
    while not stop.is_set():
        state.services = supervisor.pids()
        parts = await service_parts(state)
        waiting = [p for p in parts if not p.ok]
        if not waiting:
            return True
        if time.monotonic() - last_report >= 15.0:
            last_report = time.monotonic()
            out.write("  waiting for " + "; ".join(f"{p.name} ({p.detail})" for p in waiting)
                      + "\n")
            out.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    return False


@dataclass
class Healer:
    """Watches the embedded broker and PostgreSQL of one ``sonae up`` and replaces them."""

    settings: Settings
    state: StackState
    data_dir: Path
    supervisor: Supervisor
    broker: EmbeddedBroker | None
    postgres: EmbeddedPostgres | None
    stop: asyncio.Event
    out: TextIO
    prepare: Callable[[Settings, TextIO], Awaitable[None]]
    """Migrations, topics and the republish (``sonae.stack.prepare``)."""

    async def watch(self) -> None:
        """Heal whichever embedded part dies, until ``stop``."""
        while not self.stop.is_set():
            if self.postgres is not None and not self.postgres.alive():
                await self._heal_postgres(self.postgres)
            if self.broker is not None and not self.broker.alive():
                await self._heal_broker(self.broker)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), WATCH_EVERY)

    def _say(self, text: str) -> None:
        self.out.write(f"  {text}\n")
        self.out.flush()

    def _mark(self, status: str) -> None:
        self.state.status = status
        self.state.write(self.data_dir)

    async def _heal_broker(self, broker: EmbeddedBroker) -> None:
        began = time.monotonic()
        self._say(f"kafka       the embedded broker (pid {broker.pid}) exited with status "
                  f"{broker.exit_status()}; holding the services and restarting it")
        log.warning("embedded broker died; healing")
        self._mark("healing")
        await self.supervisor.hold()
        if not await self._retry("the embedded broker", broker.start, broker.stop):
            return
        self.state.embedded_kafka_pid = broker.pid
        self.state.write(self.data_dir)
        if not await self._retry("the republish", self._republish):
            return
        self.supervisor.release()
        if await wait_serving(self.state, self.supervisor, self.stop, self.out):
            self._mark("ready")
            self._say(f"healed      broker replaced, log republished, services serving in "
                      f"{time.monotonic() - began:.1f} s")

    async def _republish(self) -> None:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            rearmed = 0
            for table in (OUTBOX, BROADCAST_OUTBOX):
                rearmed += await rearm_unrecorded(conn, table, self.settings.namespace)
        finally:
            await conn.close()
        if rearmed:
            self._say(f"outbox      {rearmed} acknowledged events the store lacks will be "
                      "published again")
        began = time.monotonic()
        await self.prepare(self.settings, self.out)
        self._say(f"republish   topics and event store in {time.monotonic() - began:.2f} s")

    async def _heal_postgres(self, postgres: EmbeddedPostgres) -> None:
        began = time.monotonic()
        self._say(f"postgresql  the embedded PostgreSQL (pid {postgres.pid}) exited with status "
                  f"{postgres.exit_status()}; restarting it")
        log.warning("embedded PostgreSQL died; healing")
        self._mark("healing")
        if not await self._retry("the embedded PostgreSQL", postgres.start, postgres.stop):
            return
        self.state.embedded_postgres_pid = postgres.pid
        self.state.write(self.data_dir)
        if await wait_serving(self.state, self.supervisor, self.stop, self.out):
            self._mark("ready")
            self._say(f"healed      PostgreSQL restarted, services serving in "
                      f"{time.monotonic() - began:.1f} s")

    async def _retry(self, what: str, action: Callable[[], object],
                     cleanup: Callable[[], None] | None = None) -> bool:
        """Run ``action`` (sync or async) until it succeeds (True) or ``stop`` (False).

        A sync action runs on this thread on purpose: an embedded part started from a
        worker thread would get its parent-death signal when that thread exits.
        """
        delay = 0.2
        while not self.stop.is_set():
            if cleanup is not None:
                cleanup()  # reap what is left of the dead process group
            try:
                result = action()
                if asyncio.iscoroutine(result):
                    await result
                return True
            except (EmbeddedError, OSError, asyncpg.PostgresError, TimeoutError) as exc:
                self._say(f"retrying    {what} failed ({exc}); again in {delay:.1f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
            delay = min(delay * 2, _RETRY_MAX)
        return False
