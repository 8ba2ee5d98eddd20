"""The replayer: produces a drill log's inputs into a namespace, paced or at max speed.

:mod:`services.drill.replay` computes what to send and when; this module sends
it, and keeps the order the decision service reads it in.

**Why order needs care.** The evacuation decision merges four topics of four
partitions into one input log and decides in that log's order. Kafka keeps order
only within a partition, so events produced back to back on different
partitions may be merged in either order, and the decisions would differ from
run to run. Paced at a speed factor, inputs are normally far enough apart; at
max speed they are not. So when a decision service consumes the namespace, the
replayer is *synchronised* (``sync``): before it sends an input to another
topic or key than the inputs still in flight, it waits until those have reached
the decision service's input log (a shelter update: until the shelter state it
caused has). Inputs to one topic and key are pipelined, since the partition
keeps their order. This costs about one hop per change of key; without a
decision service (benchmark, raw replays) everything is pipelined, in batches
per partition built here (:class:`_Batches`).

**HQ commands** are sent at their place in event-time order, once the replayed
recommendation or order they answer has appeared (:mod:`services.drill.hq`), and
never sooner after it than the recorded delay divided by the speed.

**Stopping**: setting ``stop`` ends the replay after the event being sent;
what was sent is acknowledged, and the result says how far it got.

Why one file over ~500 lines: the sequencer, the per-partition batches and the
three send paths (synchronised, bulk, HQ commands) all keep one
:class:`ReplayResult` and one ordering argument (above); split apart, the
argument would be spread over modules that only make sense together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from infra.kafka import clients
from infra.settings import Settings
from infra.topics import ensure_topics
from schemas.common import utc_now
from schemas.evacuation import EvacuationCommand
from schemas.topics import (
    LIVE,
    evacuation_input_log,
    route,
    shelter_tracker_changelog,
    validate_namespace,
)
from services.common.retry import sleep_until
from services.drill.errors import NotIsolated, ServicesFailed
from services.drill.hq import (
    CommandMatcher,
    HqMode,
    Resolved,
    Unresolvable,
    passthrough_command,
    rewrite_command,
)
from services.drill.logformat import DrillLog
from services.drill.replay import (
    IdMap,
    Step,
    Template,
    TimeMode,
    format_time,
    plan,
    prepare,
    render,
)
from services.drill.watch import NamespaceWatcher, watching

__all__ = [
    "ProgressFn",
    "ReplayOptions",
    "ReplayResult",
    "SkippedCommand",
    "detect_services",
    "replay",
]

log = logging.getLogger(__name__)

_DIRECT_INPUTS: Final = frozenset({
    "hazard.gauge_reading", "hazard.warning", "hazard.seismic_intensity", "report.accepted",
    "evacuation.command",
})
"""Inputs the decision service reads straight from their topics."""
_SHELTER_UPDATES: Final = frozenset({
    "shelter.opened", "shelter.closed", "shelter.occupancy_reported", "shelter.needs_reported",
    "shelter.household_checked_in", "shelter.household_checked_out",
})
"""Inputs it reads through the shelter tracker (as ``shelter.status_changed``)."""
_WINDOW: Final = 2000
"""Acknowledgements awaited per window at max speed: bounds memory, keeps the pipeline full."""


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay (see docs/drills.md)."""

    speed: float | None = None
    """Speed factor (60 = an hour in a minute); None = as fast as the broker takes it."""
    time_mode: TimeMode = TimeMode.SHIFT
    hq: HqMode = HqMode.REPLAY
    sync: bool | None = None
    """Keep the decision order (see the module docstring); None = when a decision
    service consumes the namespace."""
    anchor: datetime | None = None
    """New event time of the first input; None = now."""
    salt: str | None = None
    """Separates runs replayed into one namespace (see :class:`services.drill.replay.IdMap`)."""
    allow_live: bool = False
    """Only the demo replays into a stack's own (possibly live) namespace."""
    first_timeout: float = 120.0
    """How long the first input may take to reach a service that is still starting."""
    step_timeout: float = 30.0
    """How long any later input may take to reach the decision service's log."""
    shelter_timeout: float = 5.0
    """How long to wait for a shelter update's state change before taking it as no change."""
    resolve_timeout: float = 30.0
    """Longest wait for the recommendation or order a recorded command answers."""
    resolve_idle: float = 3.0
    """Stop waiting for it once the services have been idle this long."""


@dataclass(frozen=True)
class SkippedCommand:
    """A recorded HQ command the replay did not send."""

    index: int
    original_id: str
    action: str
    reason: str


@dataclass
class ReplayResult:
    """How a replay went."""

    namespace: str
    total: int
    sent: int = 0
    stopped: bool = False
    anchor: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_original_at: datetime | None = None
    """Recorded event time of the last input sent."""
    last_replayed_at: datetime | None = None
    """Its replayed event time."""
    synced: bool = False
    decision_service: bool = False
    shelter_tracker: bool = False
    commands_replayed: int = 0
    commands_unresolved: int = 0
    """Commands sent with mapped ids because no decision service could be matched against."""
    commands_left_to_hq: int = 0
    skipped: list[SkippedCommand] = field(default_factory=list)
    options: ReplayOptions = field(default_factory=ReplayOptions)

    def manifest(self) -> dict[str, Any]:
        """A JSON-ready summary (written next to the after-action report)."""
        def t(value: datetime | None) -> str | None:
            return None if value is None else format_time(value)
        return {
            "namespace": self.namespace, "total": self.total, "sent": self.sent,
            "stopped": self.stopped, "anchor": t(self.anchor),
            "started_at": t(self.started_at), "finished_at": t(self.finished_at),
            "last_original_at": t(self.last_original_at),
            "last_replayed_at": t(self.last_replayed_at),
            "speed": self.options.speed, "time_mode": self.options.time_mode.value,
            "hq": self.options.hq.value, "salt": self.options.salt, "synced": self.synced,
            "decision_service": self.decision_service, "shelter_tracker": self.shelter_tracker,
            "commands_replayed": self.commands_replayed,
            "commands_unresolved": self.commands_unresolved,
            "commands_left_to_hq": self.commands_left_to_hq,
            "skipped_commands": [s.__dict__ for s in self.skipped],
        }


ProgressFn = Callable[[int, int, float, "Step | None"], None]
"""``(sent, total, seconds behind schedule, last step sent)``."""


async def detect_services(settings: Settings, namespace: str) -> tuple[bool, bool]:
    """(decision service, shelter tracker) have run in ``namespace`` (their topics exist)."""
    admin = clients.admin(settings)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    return evacuation_input_log(namespace) in topics, shelter_tracker_changelog(namespace) in topics


class _Sequencer:
    """Holds an input back until the in-flight inputs of other keys reached the decision log."""

    def __init__(self, watcher: NamespaceWatcher, result: ReplayResult, options: ReplayOptions,
                 stop: asyncio.Event, where: str) -> None:
        self.watcher = watcher
        self.result = result
        self.options = options
        self.stop = stop
        self.where = where
        self.group: list[Step] = []
        self.sent_at: dict[int, float] = {}
        self.first_direct = True
        self.first_shelter = True

    def relevant(self, step: Step) -> bool:
        kind = step.original.type
        if kind in _DIRECT_INPUTS:
            return self.result.decision_service
        if kind in _SHELTER_UPDATES:
            return self.result.shelter_tracker
        return False

    def confirmed(self, step: Step, now: float) -> bool:
        event_id = step.event_id
        if step.original.type in _DIRECT_INPUTS:
            return event_id in self.watcher.merged
        state = self.watcher.state_for.get(event_id)
        if state is None:
            # An update that changes nothing yields no state: after a while, take it so.
            waited = now - self.sent_at.get(step.position, now)
            return not self.first_shelter and waited >= self.options.shelter_timeout
        return not self.result.decision_service or state in self.watcher.merged

    async def before(self, step: Step) -> None:
        # Only inputs the decision service reads need a place in its order.
        if self.group and self.relevant(step) \
                and (self.group[0].topic, self.group[0].key) != (step.topic, step.key):
            await self.settle()

    def sent(self, step: Step) -> None:
        if self.relevant(step):
            self.group.append(step)
            self.sent_at[step.position] = time.monotonic()

    def _group_confirmed(self) -> bool:
        now = time.monotonic()
        return all(self.confirmed(s, now) for s in self.group)

    async def settle(self) -> None:
        """Wait until every input in flight has reached the decision log (or raise)."""
        while self.group and not self.stop.is_set():
            first = (self.first_shelter and any(s.original.type in _SHELTER_UPDATES
                                                for s in self.group)) \
                or (self.first_direct and any(s.original.type in _DIRECT_INPUTS
                                              for s in self.group))
            timeout = self.options.first_timeout if first else self.options.step_timeout
            group = self.group
            ok = await self.watcher.wait_until(self._group_confirmed, timeout=timeout,
                                               stop=self.stop)
            if ok:
                if any(s.original.type in _DIRECT_INPUTS for s in group):
                    self.first_direct = False
                if any(s.original.type in _SHELTER_UPDATES for s in group):
                    self.first_shelter = False
                self.group = []
                return
            if self.stop.is_set():
                return
            self._give_up(group)

    def _give_up(self, group: list[Step]) -> None:
        missing = [s for s in group if not self.confirmed(s, time.monotonic())]
        shelters = [s for s in missing if s.original.type in _SHELTER_UPDATES
                    and str(s.event_id) not in self.watcher.state_for]
        if shelters and self.first_shelter and len(shelters) == len(missing):
            # The tracker's topics exist but it produced nothing: it is not running.
            log.warning("no shelter state came back for %s in %s; replaying shelter updates "
                        "without waiting for the shelter tracker", shelters[0].original.type,
                        self.where)
            self.result.shelter_tracker = False
            self.first_shelter = False
            self.group = [s for s in group if s not in shelters]
            return
        step = missing[0]
        raise ServicesFailed(
            f"{step.original.type} #{step.position} did not reach the evacuation decision's input "
            f"log in {self.where} in time; is the decision service running there? (see its "
            "log, or replay with --no-sync to send without keeping the decision order)"
        )


async def replay(settings: Settings, drill_log: DrillLog, namespace: str,
                 options: ReplayOptions = ReplayOptions(), *,
                 stop: asyncio.Event | None = None, progress: ProgressFn | None = None,
                 services: tuple[bool, bool] | None = None,
                 templates: Sequence[Template | None] | None = None) -> ReplayResult:
    """Replay ``drill_log``'s inputs into ``namespace``; return how it went.

    ``services``: (decision service, shelter tracker) known to run in the namespace
    (the caller started them); None detects them from their topics. ``templates``:
    :func:`services.drill.replay.prepare` output computed beforehand (benchmarks).
    """
    validate_namespace(namespace)
    if namespace == LIVE and not options.allow_live:
        raise NotIsolated("a drill never replays into the live namespace; choose a drill "
                          "namespace such as drill.2025-08-21")
    stop = stop if stop is not None else asyncio.Event()
    await ensure_topics(settings, namespace)
    decisions, tracker = services if services is not None \
        else await detect_services(settings, namespace)
    inputs = drill_log.inputs
    result = ReplayResult(namespace=namespace, total=len(inputs), options=options,
                          decision_service=decisions, shelter_tracker=tracker)
    result.synced = (decisions and options.sync is not False) or bool(options.sync)
    ids = IdMap(namespace, options.salt)
    anchor = options.anchor if options.anchor is not None else utc_now()
    result.anchor = anchor
    prepared = templates if templates is not None else prepare(inputs)
    steps = plan(inputs, prepared, namespace=namespace, ids=ids, anchor=anchor,
                 speed=options.speed, mode=options.time_mode)
    matcher = CommandMatcher(drill_log.references, ids)
    needs_watcher = result.synced or (decisions and options.hq is HqMode.REPLAY)
    # Larger batches at max speed: this is a bulk load; paced events go out at once.
    tuning: dict[str, Any] = ({"linger_ms": 5, "max_batch_size": 256 * 1024}
                              if options.speed is None and not result.synced else {})
    producer = clients.producer(settings, **tuning)
    await producer.start()
    result.started_at = utc_now()
    try:
        if needs_watcher:
            async with watching(settings, namespace, matcher.observe) as watcher:
                await _send(producer, steps, result, options, ids, matcher, watcher, stop,
                            progress)
        else:
            await _send(producer, steps, result, options, ids, matcher, None, stop, progress)
    finally:
        await producer.stop()
        result.finished_at = utc_now()
    return result


async def _send(producer: AIOKafkaProducer, steps: list[Step], result: ReplayResult,
                options: ReplayOptions, ids: IdMap, matcher: CommandMatcher,
                watcher: NamespaceWatcher | None, stop: asyncio.Event,
                progress: ProgressFn | None) -> None:
    namespace = result.namespace
    sequencer = _Sequencer(watcher, result, options, stop, namespace) \
        if watcher is not None and result.synced else None
    if options.speed is None and sequencer is None:
        await _send_bulk(producer, steps, result, options, ids, matcher, watcher, stop,
                         progress)
        return
    pending: list[asyncio.Future[Any]] = []
    started = time.monotonic()
    last: Step | None = None
    behind = 0.0

    async def drain() -> None:
        nonlocal pending
        if pending:
            await asyncio.gather(*pending)
            result.sent += len(pending)
            pending = []

    for step in steps:
        if stop.is_set():
            break
        if options.speed is not None:
            due = started + step.at
            behind = max(0.0, time.monotonic() - due)
            if not await _sleep_until(due, stop):
                break
        if step.template is None:
            if sequencer is not None:
                await sequencer.settle()  # what the command answers can only follow those
            sent = await _command(step, result, options, ids, matcher, watcher, stop, started)
            if sent is None:
                continue
            topic, key, value = sent
        else:
            topic, key = step.topic, step.key
            value = render(step.template, ids, step.delta, format_time(utc_now()))
        if sequencer is not None:
            await sequencer.before(step)
        pending.append(await producer.send(topic, value, key=key))
        last = step
        result.last_original_at = step.original.occurred_at
        result.last_replayed_at = step.occurred_at
        if sequencer is not None:
            sequencer.sent(step)
        if len(pending) >= _WINDOW:
            await drain()
        if progress is not None:
            progress(result.sent + len(pending), result.total, behind, last)
    await _finish(drain, result, stop)
    if sequencer is not None and not stop.is_set():
        await sequencer.settle()
    if progress is not None:
        progress(result.sent, result.total, behind, last)


class _Batches:
    """Records grouped into one open batch per partition (aiokafka's batch API).

    At max speed the per-record cost of ``producer.send`` (metadata wait, partitioner,
    accumulator, one future each) is most of a replay's time; building the partition
    batches here and handing each over whole costs a fraction. Partitions come from the
    producer's default partitioner class, so every key lands where ``send`` would put it
    (and where the services' own producers put theirs); each partition's batches are
    handed over in order, and the producer sends them in order.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.partitioner = DefaultPartitioner()
        self.partitions: dict[str, list[int]] = {}
        self.open: dict[tuple[str, int], tuple[Any, int]] = {}
        self.in_flight: list[tuple[asyncio.Future[Any], int]] = []

    async def add(self, topic: str, key: bytes, value: bytes) -> None:
        partitions = self.partitions.get(topic)
        if partitions is None:
            partitions = self.partitions[topic] = sorted(
                await self.producer.partitions_for(topic))
        partition = self.partitioner(key, partitions, partitions)
        tp = (topic, partition)
        batch, count = self.open.get(tp) or (self.producer.create_batch(), 0)
        if batch.append(key=key, value=value, timestamp=None) is None:
            if count:
                await self._hand_over(tp, batch, count)
                batch, count = self.producer.create_batch(), 0
            if batch.append(key=key, value=value, timestamp=None) is None:
                # Larger than a whole batch: let the producer handle it alone.
                self.in_flight.append((await self.producer.send(topic, value, key=key), 1))
                return
        self.open[tp] = (batch, count + 1)

    async def _hand_over(self, tp: tuple[str, int], batch: Any, count: int) -> None:
        future = await self.producer.send_batch(batch, tp[0], partition=tp[1])
        self.in_flight.append((future, count))
        self.open.pop(tp, None)

    async def flush(self) -> None:
        """Hand over every open batch."""
        for tp, (batch, count) in list(self.open.items()):
            await self._hand_over(tp, batch, count)

    async def acknowledged(self) -> int:
        """Await the batches handed over; return how many records they held."""
        flying, self.in_flight = self.in_flight, []
        await asyncio.gather(*(f for f, _ in flying))
        return sum(n for _, n in flying)


async def _send_bulk(producer: AIOKafkaProducer, steps: list[Step], result: ReplayResult,
                     options: ReplayOptions, ids: IdMap, matcher: CommandMatcher,
                     watcher: NamespaceWatcher | None, stop: asyncio.Event,
                     progress: ProgressFn | None) -> None:
    """Max speed with nobody to keep in step with: batched per partition, acknowledged per
    window.

    ``recorded_at`` is stamped once per window (a few milliseconds of sending): the hot
    loop does nothing but render and batch.
    """
    batches = _Batches(producer)
    stamp = format_time(utc_now())
    started = time.monotonic()
    last: Step | None = None
    window = 0

    async def drain() -> None:
        await batches.flush()
        result.sent += await batches.acknowledged()

    for step in steps:
        if step.template is None:
            sent = await _command(step, result, options, ids, matcher, watcher, stop, started)
            if sent is None:
                continue
            topic, key, value = sent
        else:
            topic, key = step.topic, step.key
            value = render(step.template, ids, step.delta, stamp)
        await batches.add(topic, key, value)
        last = step
        window += 1
        if window >= _WINDOW:
            window = 0
            result.sent += await batches.acknowledged()  # full batches; open ones go on
            stamp = format_time(utc_now())
            if progress is not None:
                progress(result.sent, result.total, 0.0, last)
            if stop.is_set():
                break
    if last is not None:
        result.last_original_at = last.original.occurred_at
        result.last_replayed_at = last.occurred_at
    await _finish(drain, result, stop)
    if progress is not None:
        progress(result.sent, result.total, 0.0, last)


async def _finish(drain: Callable[[], Awaitable[None]], result: ReplayResult,
                  stop: asyncio.Event) -> None:
    """Await what is in flight; a stopped replay gives the broker a bounded time."""
    if stop.is_set():
        result.stopped = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drain(), 15)
    else:
        await drain()


async def _sleep_until(due: float, stop: asyncio.Event) -> bool:
    """Sleep until the monotonic time ``due``; False if ``stop`` was set meanwhile."""
    delay = due - time.monotonic()
    if delay <= 0:
        return not stop.is_set()
    await sleep_until(stop, delay)
    return not stop.is_set()


async def _command(step: Step, result: ReplayResult, options: ReplayOptions, ids: IdMap,
                   matcher: CommandMatcher, watcher: NamespaceWatcher | None,
                   stop: asyncio.Event, started: float) -> tuple[str, bytes, bytes] | None:
    """The topic, key and bytes of a recorded HQ command, or None when it is not sent."""
    command = step.original
    assert isinstance(command, EvacuationCommand)
    action = command.payload.action.value
    if options.hq is HqMode.INTERACTIVE:
        result.commands_left_to_hq += 1
        return None
    recorded_at = utc_now()
    if watcher is None or not result.decision_service:
        sent = passthrough_command(command, event_id=UUID(step.event_id), ids=ids,
                                   occurred_at=step.occurred_at, recorded_at=recorded_at)
        result.commands_unresolved += 1
        routed = route(sent, result.namespace)
        return routed.topic, routed.key, routed.value
    resolved = matcher.resolve(command)
    if resolved is None:
        await watcher.wait_until(lambda: matcher.resolve(command) is not None,
                                 timeout=options.resolve_timeout, idle=options.resolve_idle,
                                 stop=stop)
        resolved = matcher.resolve(command) or matcher.resolve(command, final=True)
    if not isinstance(resolved, Resolved):
        reason = resolved.reason if isinstance(resolved, Unresolvable) else (
            "the replayed run made no matching recommendation or order")
        result.skipped.append(SkippedCommand(step.position, str(command.event_id), action, reason))
        log.info("skipped recorded %s command %s: %s", action, command.event_id, reason)
        return None
    occurred_at = step.occurred_at
    if resolved.cause is not None and resolved.recorded_cause_at is not None:
        delay = command.occurred_at - resolved.recorded_cause_at
        factor = _event_time_factor(options)
        occurred_at = max(occurred_at, resolved.cause.occurred_at + delay * factor)
        seen = watcher.seen_at.get(str(resolved.cause.event_id))
        if options.speed is not None and seen is not None:
            # The recorded delay after the recommendation, scaled, even when the replayed
            # run decided later than the original did.
            due = max(started + step.at, seen + delay.total_seconds() / options.speed)
            if not await _sleep_until(due, stop):
                return None
    sent = rewrite_command(command, resolved, event_id=UUID(step.event_id), ids=ids,
                           occurred_at=occurred_at, recorded_at=utc_now())
    result.commands_replayed += 1
    routed = route(sent, result.namespace)
    return routed.topic, routed.key, routed.value


def _event_time_factor(options: ReplayOptions) -> float:
    if options.time_mode is TimeMode.SHIFT:
        return 1.0
    return 0.0 if options.speed is None else 1.0 / options.speed

