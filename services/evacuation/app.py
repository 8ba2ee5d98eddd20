"""The faust app around the pure engine: one ordered input log, one partition of state.

Partitioning, and why: the engine decides per area, but its inputs arrive keyed
by gauge, warning, quake, report area, shelter and recommendation, on four
topics of four partitions each; a decision for one area needs all of them (a
gauge affects several areas, a command refers to a recommendation a gauge
produced). faust tables must be co-partitioned with their source, so:

1. ``merge`` reads the four input topics, drops what the engine does not read
   (including its own ``hazard.data_quality`` and ``evacuation.command_rejected``
   coming back), dead-letters what does not decode, and appends the rest to one
   internal topic of **one partition** (``<app id>-input``). That topic is the
   decision service's input log: its order is the order decisions are made in,
   and replaying it gives the same decisions (see the engine).
2. ``decide`` reads that log, one event at a time, runs
   :func:`services.evacuation.engine.step`, produces the output events to their
   catalogue topics and waits for the broker's acknowledgement, and only then
   records the changed state entries in the ``decision-state`` table (one
   partition; its changelog restores it after a crash). A crash between the two
   replays the event: the engine derives the same output ids, so consumers
   deduplicate them, and it recognises the redelivered input.

Scaling limit: one partition means one worker does all decisions. A ward (six
areas, three gauges, tens of shelters, a few events per second at the worst
moment) needs a small fraction of one core; measured faust throughput with a
table update here is ~2.3k events/s. A region many times larger would
partition the log by an independent unit (e.g. by river basin), not by area.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from faust.types import StreamT

from infra.kafka.compat import SonaeFaustApp, make_app
from infra.settings import Settings
from schemas.errors import InvalidEvent, SchemaError
from schemas.events import Event, decode_event
from schemas.topics import app_id as faust_app_id
from schemas.topics import evacuation_input_log, is_drill, qualified, route
from services.common.deadletter import FaustDeadLetters
from services.evacuation.config import EngineConfig
from services.evacuation.engine import INPUT_TYPES, SOURCE, step
from services.evacuation.state import DecisionState, changes, encode_entry, unflatten

__all__ = ["INPUT_TOPICS", "OUTPUT_TOPICS", "app_id", "build_app", "input_log_topic"]

log = logging.getLogger(__name__)

INPUT_TOPICS: Final = ("hazards.observations", "reports", "shelters.state", "evacuation.commands")
"""Catalogue topics the decision service reads."""
OUTPUT_TOPICS: Final = (
    "evacuation.recommendations",
    "evacuation.orders",
    "evacuation.commands",
    "hazards.observations",
)
"""Catalogue topics it writes (refusals go beside the commands, data quality beside readings)."""
_LOG_KEY: Final = b"decisions"
"""Every record of the input log has this key: one log, one order."""


def app_id(namespace: str) -> str:
    """The faust app id (and consumer group) for a namespace."""
    return faust_app_id("evacuation", namespace)


def input_log_topic(namespace: str) -> str:
    """The internal single-partition topic the inputs are merged into."""
    return evacuation_input_log(namespace)


class _StateStore:
    """The decision state in a faust table, as many small entries, with an in-memory copy.

    The copy is rebuilt from the table after a (re)assignment, so it always
    reflects what the changelog restored.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self.cached: DecisionState | None = None

    def load(self) -> DecisionState:
        if self.cached is None:
            self.cached = unflatten({
                k.decode() if isinstance(k, bytes) else str(k): v for k, v in self.table.items()
            })
        return self.cached

    def save(self, before: DecisionState, after: DecisionState) -> None:
        written, deleted = changes(before, after)
        for key, value in written.items():
            self.table[key] = encode_entry(value)
        for key in deleted:
            del self.table[key]
        self.cached = after

    def forget(self) -> None:
        self.cached = None


def build_app(settings: Settings, config: EngineConfig, **options: Any) -> SonaeFaustApp:
    """The decision service's faust app for ``settings.namespace`` (nothing connects yet).

    Exercise inputs are decided on only in a drill namespace (``config.drill``).
    """
    namespace = settings.namespace
    config = replace(config, drill=is_drill(namespace))
    app = make_app(app_id(namespace), settings, topic_partitions=1, **options)
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    sources = app.topic(*(qualified(name, namespace) for name in INPUT_TOPICS), **raw)
    input_log = app.topic(input_log_topic(namespace), partitions=1, internal=True, **raw)
    outputs = {qualified(name, namespace): app.topic(qualified(name, namespace), **raw)
               for name in OUTPUT_TOPICS}
    deadletters = FaustDeadLetters(app.topic(qualified("deadletter", namespace), **raw),
                                   SOURCE)
    # Keys are entry names (str); values JSON documents (the app's default serializer).
    store = _StateStore(app.Table("decision-state", partitions=1, default=None, key_type=str))

    @app.agent(sources)
    async def merge(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            value = event.value
            if value is None:
                continue  # a tombstone on the compacted shelters.state: nothing to decide
            try:
                decoded = decode_event(value)
            except (InvalidEvent, SchemaError) as e:
                await deadletters.send(event.message, e)
                continue
            if decoded.type in INPUT_TYPES:
                # Not awaited one by one: faust flushes the producer before it commits
                # the source offsets, so nothing is committed that was not forwarded.
                await input_log.send(key=_LOG_KEY, value=value)

    @app.agent(input_log)
    async def decide(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            try:
                decoded = decode_event(event.value)
                before = store.load()
                after, emitted = step(config, before, decoded)
            except Exception as e:  # a bug must not stop every later decision
                log.exception("cannot decide on %s@%d", event.message.topic,
                              event.message.offset)
                await deadletters.send(event.message, e)
                continue
            pending = []
            for out in emitted:
                routed = route(out, namespace)
                pending.append(await outputs[routed.topic].send(key=routed.key,
                                                               value=routed.value))
            for future in pending:
                await future  # outputs acknowledged before the state records them
            store.save(before, after)
            for out in emitted:
                _log_decision(out)

    # After any rebalance the table is what the changelog restored; the in-memory
    # copy may be older (another worker may have decided meanwhile), so drop it.
    @app.on_partitions_revoked.connect
    async def _forget_on_revoke(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        store.forget()

    @app.on_partitions_assigned.connect
    async def _forget_on_assign(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        store.forget()

    return app


def _log_decision(event: Event) -> None:
    payload: Mapping[str, Any] = event.payload.model_dump(mode="json")
    summary = " ".join(f"{k}={payload[k]}" for k in ("area_ids", "kind", "level", "hazard",
                                                       "version", "outcome", "code", "gauge_id",
                                                       "status") if k in payload)
    log.info("%s %s", event.type, summary, extra={"event_id": str(event.event_id)})
