"""What the drill namespace's services have done so far, read back from the broker.

A replay that must decide in the same order every time (see
:mod:`services.drill.runner`) needs to know when an input has reached the
evacuation decision's input log, and which shelter state an update produced;
HQ command replay needs the replayed recommendations and orders; ``verify``
needs to know when the services have gone quiet. One watcher reads all of it:

- the decision service's input log (``sonae-evacuation[-<ns>]-input``, one
  partition, named by :func:`schemas.topics.evacuation_input_log`): the ids
  of the events it has merged, in its decision order;
- ``shelters.state``: the state change each shelter update caused (by
  ``causation_id``);
- ``evacuation.recommendations``, ``evacuation.orders``,
  ``evacuation.commands`` and ``public.messages``: every decision, handed to a
  callback, and the time of the last one (quiescence).

It reads with plain assigned consumers (no group), from the beginning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from infra.kafka import clients
from infra.settings import Settings
from schemas.errors import InvalidEvent
from schemas.events import Event, decode_event
from schemas.topics import CATALOGUE, evacuation_input_log, qualified

__all__ = ["WATCHED_TOPICS", "NamespaceWatcher", "watching"]

log = logging.getLogger(__name__)

WATCHED_TOPICS: Final = (
    "shelters.state",
    "evacuation.recommendations",
    "evacuation.orders",
    "evacuation.commands",
    "public.messages",
)
"""Catalogue topics whose events the watcher follows."""

_POLL_MS: Final = 200
_LOG_PROBE_S: Final = 0.5


class NamespaceWatcher:
    """Follows a namespace's decision topics; use :func:`watching` to run it."""

    def __init__(self, settings: Settings, namespace: str,
                 on_event: Callable[[Event, float], None] | None = None) -> None:
        self.settings = settings
        self.namespace = namespace
        self.on_event = on_event
        self.merged: set[str] = set()
        """Ids of the events in the decision service's input log."""
        self.state_for: dict[str, str] = {}
        """Shelter update id → id of the ``shelter.status_changed`` it caused."""
        self.seen_at: dict[str, float] = {}
        """Decision event id → monotonic time the watcher first read it."""
        self.last_activity = time.monotonic()
        """Monotonic time of the last record read on any watched topic."""
        self._changed = asyncio.Event()

    # --- waiting --------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], *, timeout: float,
                         idle: float | None = None, stop: asyncio.Event | None = None) -> bool:
        """Wait until ``predicate()`` holds; False after ``timeout`` s, after ``idle`` s
        without any new record (when given), or when ``stop`` is set."""
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while True:
            if predicate():
                return True
            now = time.monotonic()
            if now >= deadline or (stop is not None and stop.is_set()):
                return False
            if idle is not None and now - max(started, self.last_activity) >= idle:
                return False
            changed = self._changed
            wait = min(deadline - now, 0.25)
            with contextlib.suppress(TimeoutError):
                if stop is None:
                    await asyncio.wait_for(changed.wait(), wait)
                else:
                    await _first(changed, stop, wait)

    async def quiet(self, seconds: float, *, timeout: float,
                    stop: asyncio.Event | None = None) -> bool:
        """Wait until nothing new has been read for ``seconds``; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() - self.last_activity < seconds:
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                return False
            await asyncio.sleep(min(0.2, seconds))
        return True

    # --- reading --------------------------------------------------------------------

    def _take(self, records: list[object], *, from_log: bool) -> None:
        now = time.monotonic()
        for record in records:
            value = getattr(record, "value", None)
            if value is None:
                continue
            try:
                event = decode_event(value)
            except InvalidEvent:
                continue  # another service's dead letter material: not ours to judge
            event_id = str(event.event_id)
            if from_log:
                self.merged.add(event_id)
                continue
            if event_id in self.seen_at:
                continue  # at-least-once: a redelivered decision is the same decision
            self.seen_at[event_id] = now
            if event.type == "shelter.status_changed" and event.causation_id is not None:
                self.state_for.setdefault(str(event.causation_id), event_id)
            if self.on_event is not None:
                self.on_event(event, now)
        if records:
            self.last_activity = now
            self._notify()

    async def _follow(self, consumer: AIOKafkaConsumer, *, from_log: bool) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=_POLL_MS)
            for records in batches.values():
                self._take(list(records), from_log=from_log)

    async def _follow_log(self) -> None:
        topic = evacuation_input_log(self.namespace)
        consumer = clients.consumer(self.settings)
        await consumer.start()
        try:
            # The decision service creates its input log when it starts; until then
            # there is nothing to follow.
            while True:
                if topic in await consumer.topics():
                    break
                await asyncio.sleep(_LOG_PROBE_S)
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            self._notify()
            await self._follow(consumer, from_log=True)
        finally:
            await consumer.stop()

    async def _follow_decisions(self, ready: asyncio.Event) -> None:
        consumer = clients.consumer(self.settings)
        await consumer.start()
        try:
            await consumer.topics()  # refresh metadata
            tps = [TopicPartition(qualified(name, self.namespace), p)
                   for name in WATCHED_TOPICS for p in range(CATALOGUE[name].partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ready.set()
            await self._follow(consumer, from_log=False)
        finally:
            await consumer.stop()


async def _first(changed: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    waits = {asyncio.ensure_future(changed.wait()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


@contextlib.asynccontextmanager
async def watching(settings: Settings, namespace: str,
                   on_event: Callable[[Event, float], None] | None = None
                   ) -> AsyncIterator[NamespaceWatcher]:
    """Run a watcher over ``namespace`` (whose catalogue topics must exist) for the block."""
    watcher = NamespaceWatcher(settings, namespace, on_event)
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(watcher._follow_decisions(ready), name="drill-watch-decisions"),
                 tg.create_task(watcher._follow_log(), name="drill-watch-log")]
        try:
            waiter = asyncio.ensure_future(ready.wait())
            done, _ = await asyncio.wait({waiter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                waiter.cancel()
                for task in done:
                    task.result()  # a watcher task failed to start: raise its error
            yield watcher
        finally:
            for task in tasks:
                task.cancel()
