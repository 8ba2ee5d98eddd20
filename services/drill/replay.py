"""The pure core of a replay: new ids, new times, and the bytes to produce.

No I/O and no clock: the caller passes the anchor (the new event time of the
first input) and the ``recorded_at`` to stamp. :mod:`services.drill.runner`
produces what this module computes.

Rewriting an input event for namespace ``ns``:

- **ids**: every id is mapped through one function,
  ``derive_id("drill", ns, original)`` (:class:`IdMap`): the event's own id, its
  ``correlation_id`` and ``causation_id``, and every uuid in its payload (e.g.
  ``report.accepted``'s ``submitted_event_id``). References inside the log stay
  consistent, a replay into the same namespace gives the same ids (consumers
  deduplicate), and no replayed id can equal a live one — the event store's
  ``event_id`` is unique across namespaces. HQ commands are the exception: the
  recommendation or order they name is resolved against the replayed run
  (:mod:`services.drill.hq`), so they are rendered when they are sent.
- **exercise**: always true.
- **times** (:class:`TimeMode`): with ``shift`` (the default) the first input's
  event time becomes the anchor and every gap between inputs is kept in event
  time, while the *sending* is paced at the gap divided by the speed. The
  decision rules judge in event time (report windows, 2-hour lift hysteresis,
  stale gauges), so a shifted replay decides what the original run decided, at
  any speed. With ``scale`` the event-time gaps are divided by the speed too
  (the drill's event clock then follows the wall clock), which suits a drill
  whose HQ decides live on the dashboard, at the cost of compressing every
  rule window; ``--max-speed`` with ``scale`` puts every event at the anchor,
  one microsecond apart. Times inside the payload (``observed_at``,
  ``issued_at``, ``expires_at``…) move by the same amount as their event's
  ``occurred_at``, so their relations hold.
- **recorded_at**: when the replay sends it (given by the caller).

The key and topic come from the catalogue, as :func:`schemas.topics.route`
computes them for the rewritten event (a key that is a remapped uuid is
remapped too).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import Any, Final, NamedTuple
from uuid import UUID

from schemas.envelope import SONAE_ID_NAMESPACE, Envelope
from schemas.events import Event, encode_event
from schemas.topics import key_for, qualified, topic_for_type
from services.drill.fields import fields_of, locate

__all__ = [
    "COMMAND_TYPE",
    "IdMap",
    "Step",
    "Template",
    "TimeMode",
    "event_times",
    "format_time",
    "plan",
    "prepare",
    "render",
    "send_offsets",
]

COMMAND_TYPE: Final = "evacuation.command"
"""HQ commands are rendered when sent: the ids they name belong to the replayed run."""


class TimeMode(StrEnum):
    """How a replay maps recorded event times (see the module docstring)."""

    SHIFT = "shift"
    """Keep event-time gaps; only the sending is paced by the speed."""
    SCALE = "scale"
    """Divide event-time gaps by the speed as well (event time follows the wall clock)."""


class IdMap:
    """``original → derive_id("drill", namespace[, salt], original)``, fast and cached.

    Equal to :func:`schemas.envelope.derive_id` with those parts (a unit test
    checks it), computed straight to text and cached, because a replay maps
    several ids per event at tens of thousands of events per second. ``salt``
    separates runs replayed into the same namespace (the demo, which replays into
    a stack that may already hold an earlier demo).
    """

    def __init__(self, namespace: str, salt: str | None = None) -> None:
        parts = ("drill", namespace) if salt is None else ("drill", namespace, salt)
        self.namespace = namespace
        self.salt = salt
        prefix = "\x1f".join(parts) + "\x1f"
        self._prefix = SONAE_ID_NAMESPACE.bytes + prefix.encode("utf-8")
        self._cache: dict[str, str] = {}

    def text(self, original: str) -> str:
        """The replayed id of ``original`` (a uuid in canonical text form), as text."""
        mapped = self._cache.get(original)
        if mapped is None:
            # One fresh SHA-1 over prefix + id: cheaper than copying a primed state.
            raw = bytearray(hashlib.sha1(self._prefix + original.encode("ascii"),
                                         usedforsecurity=False).digest()[:16])
            raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
            raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
            h = raw.hex()
            mapped = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
            self._cache[original] = mapped
        return mapped

    def __call__(self, original: UUID) -> UUID:
        """The replayed id of ``original``."""
        return UUID(self.text(str(original)))


def format_time(moment: datetime) -> str:
    """A UTC datetime as the contracts encode it (``2025-08-21T05:03:00Z``)."""
    return moment.isoformat().replace("+00:00", "Z")


# --- times ----------------------------------------------------------------------------


def send_offsets(times: Sequence[datetime], speed: float | None) -> list[float]:
    """Seconds after the replay starts at which each event is due (all 0 at max speed)."""
    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    if not times:
        return []
    if speed is None:
        return [0.0] * len(times)
    first = times[0]
    return [(t - first).total_seconds() / speed for t in times]


def event_times(times: Sequence[datetime], *, anchor: datetime, speed: float | None,
                mode: TimeMode) -> list[datetime]:
    """The new ``occurred_at`` of each event (``times`` in event-time order)."""
    if anchor.tzinfo is None:
        raise ValueError("anchor must be timezone-aware")
    if not times:
        return []
    first = times[0]
    if mode is TimeMode.SHIFT:
        return [anchor + (t - first) for t in times]
    if speed is None:
        # Everything "now", still strictly in event-time order for every reader.
        return [anchor + timedelta(microseconds=i) for i in range(len(times))]
    return [anchor + (t - first) / speed for t in times]


# --- rendering ------------------------------------------------------------------------

_SLOT: Final = re.compile(rb"\\u0000(\d+)\\u0000")
_ID, _TIME, _RECORDED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Template:
    """An event's encoding with holes for its ids and times, filled by :func:`render`.

    ``chunks`` has one more element than ``slots``; each slot is ``(kind, value)``
    with kind 0 = an id to map (canonical text), 1 = a time to shift (naive UTC),
    2 = ``recorded_at``.
    """

    chunks: tuple[bytes, ...]
    slots: tuple[tuple[int, Any], ...]
    event_id: str
    """The recorded event id (canonical text)."""
    key: bytes
    """The recorded Kafka key; when ``key_remapped``, a uuid the replay maps."""
    key_remapped: bool


def _naive_utc(moment: datetime) -> datetime:
    # Formatting a naive datetime is several times faster than an aware one whose tzinfo
    # is pydantic's (utcoffset() crosses into Rust per call); render appends the "Z".
    return moment.astimezone(UTC).replace(tzinfo=None)


def _template(event: Envelope) -> Template:
    document = json.loads(encode_event(event))
    slots: list[tuple[int, Any]] = []

    def hole(kind: int, value: Any) -> str:
        # A NUL-delimited marker: JSON escapes NUL, so the marker cannot occur in any
        # real string of the event, and splitting on it is exact.
        slots.append((kind, value))
        return f"\x00{len(slots) - 1}\x00"

    # Ids are kept as the canonical text JSON already holds: mapping text to text
    # spares a UUID round trip per id on the hot path.
    document["event_id"] = hole(_ID, document["event_id"])
    document["correlation_id"] = hole(_ID, document["correlation_id"])
    if document["causation_id"] is not None:
        document["causation_id"] = hole(_ID, document["causation_id"])
    document["occurred_at"] = hole(_TIME, _naive_utc(event.occurred_at))
    document["recorded_at"] = hole(_RECORDED, None)
    document["exercise"] = True
    fields = fields_of(event.type)
    payload = document["payload"]
    for path in fields.uuids:
        for container, key in locate(payload, path):
            container[key] = hole(_ID, str(UUID(container[key])))
    for path in fields.times:
        for container, key in locate(payload, path):
            container[key] = hole(_TIME, _naive_utc(datetime.fromisoformat(container[key])))
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    parts = _SLOT.split(text)
    # split() with one group alternates text and slot numbers: t0, n0, t1, n1, ..., tk.
    chunks = tuple(parts[0::2])
    order = [int(n) for n in parts[1::2]]
    key, remapped = _original_key(event)
    return Template(chunks, tuple(slots[i] for i in order), str(event.event_id), key, remapped)


def prepare(events: Sequence[Event]) -> list[Template | None]:
    """A template per event (None for HQ commands, which are rendered when sent)."""
    return [None if e.type == COMMAND_TYPE else _template(e) for e in events]


def render(template: Template, ids: IdMap, delta: timedelta, recorded_at: str) -> bytes:
    """The replayed event's bytes: ids mapped, times moved by ``delta``, exercise true."""
    # The hot path of a max-speed replay: locals only, one join.
    cached = ids._cache.get  # a hit needs no method call: most ids repeat (chains, keys)
    text = ids.text
    chunks = template.chunks
    out = [chunks[0]]
    append = out.append
    index = 1
    for kind, value in template.slots:
        if kind == _ID:
            append((cached(value) or text(value)).encode("ascii"))
        elif kind == _TIME:
            append(((value + delta).isoformat() + "Z").encode("ascii"))
        else:
            append(recorded_at.encode("ascii"))
        append(chunks[index])
        index += 1
    return b"".join(out)


# --- the plan -------------------------------------------------------------------------


class Step(NamedTuple):
    """One input of the replay: where it goes, when, and how to render it.

    (A named tuple: a replay plans tens of thousands per second.)"""

    position: int
    """Position among the log's inputs."""
    original: Event
    """The recorded event."""
    event_id: str
    """Its replayed id (canonical text)."""
    topic: str
    """The qualified topic it is produced to."""
    key: bytes
    """Its Kafka key (the aggregate id)."""
    at: float
    """Seconds after the replay's start when it is due."""
    occurred_at: datetime
    """Its replayed event time."""
    delta: timedelta
    """``occurred_at`` minus the recorded one (applied to every time in the payload)."""
    template: Template | None
    """None for an HQ command."""


@dataclass(frozen=True)
class _KeyPath:
    attributes: tuple[str, ...]
    remapped: bool
    """The field is a uuid the rewrite maps (or the event id itself)."""


@functools.cache
def _key_paths(event_type: str) -> tuple[_KeyPath, ...]:
    spec = topic_for_type(event_type)
    uuid_paths = {("payload", *p) for p in fields_of(event_type).uuids}
    return tuple(_KeyPath(tuple(path.split(".")),
                          path == "event_id" or tuple(path.split(".")) in uuid_paths)
                 for path in spec.key_paths[event_type])


def _original_key(event: Envelope) -> tuple[bytes, bool]:
    """The recorded event's key, and whether the rewrite maps it (a uuid field's value)."""
    # The catalogue keys by the first non-null of its paths (schemas.topics.key_for);
    # when that is a uuid field the rewritten event carries the mapped uuid, so the key
    # is mapped as well. A unit test checks every key against route() of the rewrite.
    for key_path in _key_paths(event.type):
        value: Any = event
        for attribute in key_path.attributes:
            value = getattr(value, attribute)
            if value is None:
                break
        if value is None:
            continue
        if isinstance(value, Enum):
            value = value.value
        return str(value).encode("utf-8"), key_path.remapped
    return key_for(event), False  # key_for raises: every key path ends in a required field


def _replayed_key(key: bytes, remapped: bool, ids: IdMap) -> bytes:
    return ids.text(key.decode("ascii")).encode("ascii") if remapped else key


def plan(events: Sequence[Event], templates: Sequence[Template | None], *, namespace: str,
         ids: IdMap, anchor: datetime, speed: float | None,
         mode: TimeMode = TimeMode.SHIFT) -> list[Step]:
    """The steps of a replay of ``events`` (inputs, in event-time order) into ``namespace``."""
    if len(events) != len(templates):
        raise ValueError("one template per event")
    times = [e.occurred_at for e in events]
    offsets = send_offsets(times, speed)
    new_times = event_times(times, anchor=anchor, speed=speed, mode=mode)
    topics: dict[str, str] = {}
    steps: list[Step] = []
    for index, (event, template) in enumerate(zip(events, templates, strict=True)):
        topic = topics.get(event.type)
        if topic is None:
            topic = topics[event.type] = qualified(topic_for_type(event.type).name, namespace)
        if template is not None:
            original_id, key, remapped = template.event_id, template.key, template.key_remapped
        else:
            original_id, (key, remapped) = str(event.event_id), _original_key(event)
        new_time = new_times[index]
        steps.append(Step(index, event, ids.text(original_id), topic,
                          _replayed_key(key, remapped, ids), offsets[index], new_time,
                          new_time - event.occurred_at, template))
    return steps
