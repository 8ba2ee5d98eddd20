"""faust table recovery that cannot drop records around a rebalance.

faust-streaming 0.15.3 loses records when a worker starts or takes over
partitions while records are waiting, in two ways (both reproduced by
tests/integration/test_shelter_recovery.py, which lost an update in 8 of 23
runs before this module and none in 38 after; the lost update was never
applied and the partition's committed offset stuck before it). These are
faust bugs, not the embedded broker's, so :func:`infra.kafka.compat.faust_settings`
applies the fix in both profiles:

1. **The queue clearing.** When table recovery ends,
   ``Recovery.on_recovery_completed`` resumes the stream partitions, seeks them
   to the committed offsets, and then resumes the app's flow control, which
   clears every stream queue. Records fetched after the seek and queued
   before the clearing are thrown away, while the consumer's position is
   already past them.
2. **The empty partition set.** faust hands aiokafka its *live* set of active
   partitions for each fetch. When recovery pauses the changelog partitions
   during a fetch, the set becomes empty, and aiokafka reads an empty set as
   "every partition": it returns the stream partitions' records too, which
   faust then drops as inactive, again with the position past them.

Fixes, both around faust rather than inside it:

- :class:`HoldStreamsRecovery` keeps the stream partitions paused until
  faust's completion (seek, then clearing) is over, after waiting until no
  fetch that could include them is in flight; then it resumes them. Their
  first records are read from the committed offsets, in order. Records the
  previous owner processed but had not committed come again and are
  ignored as duplicates by the services (every Sonae faust agent is
  idempotent by event id).
- :class:`FetchGuard` fetches a snapshot of the active partitions (never the
  live set) and nothing at all when none is active, and counts the fetches in
  flight for the recovery to wait on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Set
from typing import Any

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

__all__ = ["FetchGuard", "HoldStreamsRecovery", "HoldStreamsTableManager"]

# A fetch waits at most faust's getmany timeout (1 s) plus a request; after this
# long something else is wrong, and the seek that follows still repairs the
# positions of anything fetched before it.
_DRAIN_TIMEOUT = 5.0


class FetchGuard:
    """Wraps a faust consumer's ``_getmany``: fetch a snapshot of the active partitions."""

    def __init__(self, consumer: Any) -> None:
        self._fetch = consumer._getmany
        self._in_flight: list[frozenset[TP]] = []
        self._finished = asyncio.Event()
        consumer._getmany = self._getmany

    async def _getmany(self, active_partitions: Set[TP] | None, timeout: float) -> Any:
        if active_partitions is None:  # a client-only app: every partition
            return await self._fetch(active_partitions=None, timeout=timeout)
        snapshot = frozenset(active_partitions)
        if not snapshot:
            return {}  # not "every partition", as aiokafka would read an empty set
        self._in_flight.append(snapshot)
        try:
            return await self._fetch(active_partitions=snapshot, timeout=timeout)
        finally:
            self._in_flight.remove(snapshot)
            self._finished.set()

    async def drained(self, partitions: Set[TP]) -> None:
        """Wait until no fetch in flight includes any of ``partitions``."""
        deadline = time.monotonic() + _DRAIN_TIMEOUT
        while any(fetch & partitions for fetch in self._in_flight):
            self._finished.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), remaining)


class HoldStreamsRecovery(Recovery):
    """faust's recovery, resuming the stream partitions only after its seek and clearing."""

    guard: FetchGuard | None = None

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """Finish recovery as faust does, then resume the stream partitions it would have."""
        consumer: Any = self.app.consumer
        streams = {tp for tp in consumer.assignment() if not self._is_changelog_tp(tp)}
        if self.guard is not None:
            await self.guard.drained(streams)
        held: set[TP] = set()
        # faust calls consumer.resume_partitions(stream partitions) before it seeks;
        # record the call instead, for the duration of faust's own completion.
        consumer.resume_partitions = held.update
        try:
            await super().on_recovery_completed(generation_id)
        finally:
            del consumer.resume_partitions  # the class's method again
        if held and self.app.consumer_generation_id == generation_id:
            consumer.resume_partitions(held & consumer.assignment())


class HoldStreamsTableManager(TableManager):
    """faust's table manager with both fixes (pass as the faust setting ``TableManager``)."""

    @property
    def recovery(self) -> Recovery:
        """The recovery service, created on first use as faust does."""
        if self._recovery is None:
            recovery = HoldStreamsRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
            self._recovery = recovery
        return self._recovery

    async def on_start(self) -> None:
        """Guard the consumer's fetches before the first rebalance, then start as faust does."""
        recovery = self.recovery
        if isinstance(recovery, HoldStreamsRecovery) and recovery.guard is None:
            recovery.guard = FetchGuard(self.app.consumer)
        await super().on_start()
