"""The drill log: a versioned JSONL file of recorded events (format ``sonae-drill``).

Line 1 is the header::

    {"format": "sonae-drill", "version": 1, "region": "chiyoda",
     "recorded_from": {"kind": "event-store", "namespace": "", "database": "127.0.0.1:15432/sonae"},
     "since": "2025-08-21T04:00:00Z", "until": "2025-08-21T10:00:00Z",
     "count": 212, "inputs": 180, "references": 32, "description": "..."}

Every further line is one event envelope, canonical JSON as ``schemas.events``
encodes it, in event-time order (``occurred_at``; the file order breaks ties).
Two kinds of line, told apart by the event type:

- **inputs** (:data:`INPUT_TYPES`): what enters the system from outside — field
  reports (``report.submitted`` and intake's ``report.accepted``), shelter
  updates and households checked in and out, residents at home and welfare checks,
  supply requests and their steps, community generators, hazard observations, HQ
  commands. These are replayed.
- **references** (:data:`REFERENCE_TYPES`): the original run's decisions —
  recommendations, their closing, orders, refused commands, published messages.
  Never replayed: they let a replay match each recorded HQ command to what it
  decided about, and let the after-action report compare the drill with the
  original run without access to the original database.

Versioning: ``version`` is the version of this *file format*. A reader
upcasts older headers with pure functions registered in :data:`UPCASTERS`
(none yet: version 1 is the first) and refuses newer ones with a message
saying so. The events inside carry their own ``schema_version`` and are
upcast by :func:`schemas.events.decode_event` like any other event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.common import UtcDatetime
from schemas.envelope import Envelope
from schemas.errors import InvalidEvent
from schemas.events import Event, decode_event, encode_event
from services.drill.errors import InvalidDrillLog, UnsupportedLogVersion

__all__ = [
    "CURRENT_VERSION",
    "FORMAT",
    "INPUT_TYPES",
    "REFERENCE_TYPES",
    "UPCASTERS",
    "DrillLog",
    "LogHeader",
    "RecordedFrom",
    "read_log",
    "write_log",
]

FORMAT: Final = "sonae-drill"
CURRENT_VERSION: Final = 1

INPUT_TYPES: Final = frozenset({
    "report.submitted",
    "report.accepted",
    "shelter.opened",
    "shelter.closed",
    "shelter.occupancy_reported",
    "shelter.needs_reported",
    "shelter.household_checked_in",
    "shelter.household_checked_out",
    "people.at_home_reported",
    "people.welfare_checked",
    "supply.requested",
    "supply.assigned",
    "supply.dispatched",
    "supply.received",
    "supply.cancelled",
    "generator.registered",
    "generator.status_reported",
    "hazard.gauge_reading",
    "hazard.warning",
    "hazard.seismic_intensity",
    "evacuation.command",
})
"""Event types a drill replays: the system's inputs (what people and feeds send)."""

REFERENCE_TYPES: Final = frozenset({
    "evacuation.recommended",
    "evacuation.recommendation_closed",
    "evacuation.command_rejected",
    "evacuation.order_issued",
    "evacuation.order_updated",
    "evacuation.order_lifted",
    "broadcast.published",
})
"""Event types a drill log carries from the original run but never replays."""


class RecordedFrom(BaseModel):
    """Where a log came from (never credentials)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["event-store", "scenario"]
    """``event-store``: recorded by ``sonae drill record``; ``scenario``: written by a generator."""
    namespace: str | None = None
    """The namespace recorded (``""`` for live operations)."""
    database: str | None = None
    """``host:port/database`` of the event store, without user or password."""
    generator: str | None = None
    """For a scenario, the script that wrote it."""


class LogHeader(BaseModel):
    """The first line of a drill log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["sonae-drill"] = FORMAT
    version: Literal[1] = CURRENT_VERSION
    region: str = Field(min_length=1, max_length=200)
    """The region pack the events belong to (e.g. ``chiyoda``)."""
    recorded_from: RecordedFrom
    since: UtcDatetime | None
    """Inclusive start of the recorded window (event time); null when open."""
    until: UtcDatetime | None
    """Exclusive end of the recorded window (event time); null when open."""
    count: int = Field(ge=0)
    """Number of event lines after the header."""
    inputs: int = Field(ge=0)
    """How many of them are inputs (replayed)."""
    references: int = Field(ge=0)
    """How many are references (the original run's decisions)."""
    description: str = Field(default="", max_length=2000)
    """What the log is, in words."""


@dataclass(frozen=True)
class DrillLog:
    """A read (or built) drill log: its header, and its events split by kind."""

    header: LogHeader
    inputs: tuple[Event, ...]
    """Replayable events, in event-time order (file order breaks ties)."""
    references: tuple[Event, ...]
    """The original run's decisions, in event-time order."""

    @property
    def start(self) -> datetime | None:
        """Event time of the first input (None for a log without inputs)."""
        return self.inputs[0].occurred_at if self.inputs else None

    @property
    def end(self) -> datetime | None:
        """Event time of the last input."""
        return self.inputs[-1].occurred_at if self.inputs else None


HeaderUpcaster = Callable[[dict[str, Any]], dict[str, Any]]

UPCASTERS: Mapping[int, HeaderUpcaster] = {}
"""from_version → pure function lifting a header document to ``from_version + 1``.

Empty while version 1 is the only version; version 2 will register ``1: up_1_2``
here (and, if its lines change too, a line upcaster beside it)."""


def _upcast_header(document: dict[str, Any], where: str) -> dict[str, Any]:
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UnsupportedLogVersion(f"{where}: header 'version' must be a positive integer, "
                                    f"got {version!r}")
    if version > CURRENT_VERSION:
        raise UnsupportedLogVersion(
            f"{where}: drill log format version {version} is newer than this Sonae reads "
            f"(up to {CURRENT_VERSION}); upgrade Sonae to replay it"
        )
    while version < CURRENT_VERSION:
        step = UPCASTERS.get(version)
        if step is None:
            raise UnsupportedLogVersion(f"{where}: no upcaster from drill log format "
                                        f"version {version}")
        document = {**step(dict(document)), "version": version + 1}
        version += 1
    return document


def _header(line: str, where: str) -> LogHeader:
    try:
        document = json.loads(line)
    except json.JSONDecodeError:
        document = None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidDrillLog(
            f"{where}: not a Sonae drill log (line 1 must be a header like "
            f'{{"format": "{FORMAT}", "version": {CURRENT_VERSION}, ...}})'
        )
    document = _upcast_header(document, where)
    try:
        return LogHeader.model_validate(document)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                             for err in e.errors())
        raise InvalidDrillLog(f"{where}: invalid header: {problems}") from None


def _event(line: str, where: str) -> Event:
    try:
        event = decode_event(line)
    except InvalidEvent as e:
        raise InvalidDrillLog(f"{where}: {e}") from None
    if event.type not in INPUT_TYPES and event.type not in REFERENCE_TYPES:
        raise InvalidDrillLog(
            f"{where}: event type {event.type} does not belong in a drill log (inputs: "
            f"{', '.join(sorted(INPUT_TYPES))}; references: {', '.join(sorted(REFERENCE_TYPES))})"
        )
    return event


def _in_time_order(events: Iterable[Event]) -> tuple[Event, ...]:
    # sorted() is stable: events at the same instant keep their file order.
    return tuple(sorted(events, key=lambda e: e.occurred_at))


def read_log(path: Path) -> DrillLog:
    """Read and validate a drill log; raise InvalidDrillLog naming the file, line and field."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as e:
        raise InvalidDrillLog(f"cannot read drill log {path}: {e.strerror or e}") from None
    with handle:
        return parse_log(handle, name=str(path))


def parse_log(lines: Iterable[str], *, name: str = "drill log") -> DrillLog:
    """Parse a drill log from its lines (see :func:`read_log`)."""
    iterator: Iterator[str] = iter(lines)
    try:
        first = next(iterator)
    except StopIteration:
        raise InvalidDrillLog(f"{name}: empty file, expected a drill log header") from None
    except UnicodeDecodeError:
        raise InvalidDrillLog(f"{name}: not UTF-8 text") from None
    header = _header(first, f"{name} line 1")
    inputs: list[Event] = []
    references: list[Event] = []
    number = 1
    try:
        for number, line in enumerate(iterator, start=2):
            if not line.strip():
                continue
            event = _event(line, f"{name} line {number}")
            (inputs if event.type in INPUT_TYPES else references).append(event)
    except UnicodeDecodeError:
        raise InvalidDrillLog(f"{name} line {number + 1}: not UTF-8 text") from None
    counted = (len(inputs) + len(references), len(inputs), len(references))
    declared = (header.count, header.inputs, header.references)
    if counted != declared:
        raise InvalidDrillLog(
            f"{name}: the header declares {header.count} events ({header.inputs} inputs, "
            f"{header.references} references) but the file has {counted[0]} ({counted[1]} "
            f"inputs, {counted[2]} references); is it truncated or edited?"
        )
    return DrillLog(header, _in_time_order(inputs), _in_time_order(references))


def build_log(events: Iterable[Envelope], *, region: str, recorded_from: RecordedFrom,
              since: datetime | None = None, until: datetime | None = None,
              description: str = "") -> DrillLog:
    """A drill log of ``events`` (inputs and references; any other type is an error)."""
    inputs: list[Event] = []
    references: list[Event] = []
    for event in events:
        decoded = decode_event(encode_event(event))  # the union member, validated
        if decoded.type in INPUT_TYPES:
            inputs.append(decoded)
        elif decoded.type in REFERENCE_TYPES:
            references.append(decoded)
        else:
            raise InvalidDrillLog(f"event type {decoded.type} does not belong in a drill log")
    header = LogHeader(region=region, recorded_from=recorded_from, since=since, until=until,
                       count=len(inputs) + len(references), inputs=len(inputs),
                       references=len(references), description=description)
    return DrillLog(header, _in_time_order(inputs), _in_time_order(references))


def write_log(log: DrillLog, out: IO[bytes]) -> int:
    """Write ``log`` as JSONL (header, then every event in event-time order); return the count."""
    out.write(log.header.model_dump_json().encode("utf-8") + b"\n")
    merged = sorted((*log.inputs, *log.references), key=lambda e: e.occurred_at)
    for event in merged:
        out.write(encode_event(event) + b"\n")
    out.flush()
    return len(merged)
