"""Positions in the log, their epoch, and the bounded history a client resumes from.

A *position* says which records of the COP topics a client's picture includes:
for every partition of every COP topic, the offset of the next record it has
not seen. It is derived from the log alone, so any gateway reading the same log
can tell whether it can continue a client's stream.

Offsets are only meaningful within one *incarnation* of the log: an embedded
broker that restarts empty and is rehydrated from the event store reassigns
offsets. Each partition therefore has a *marker*, a hash of the first record
it holds (offset, producer timestamp, key, value); a rehydrated partition
starts with records produced at a different time, so its marker differs. A
position's *epoch* hashes the namespace and the markers of the partitions the
position has read from (offset > 0). A gateway checks a position by hashing its
own markers for those partitions: a different epoch (or a partition it has not
read yet) means the position is not in its log, and the client gets a fresh
snapshot. Partitions a position has not read from do not take part, so a
partition that receives its first record later changes nothing for positions
issued before.

The wire form is opaque base64url: a format byte, the 8-byte epoch, then
``(topic code, partition, offset)`` varints for every non-zero offset. Topic
codes are a fixed, append-only table, so gateways of different versions agree.

Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from schemas.topics import CATALOGUE
from services.gateway.errors import InvalidPosition

__all__ = [
    "COP_TOPICS",
    "TOPIC_CODES",
    "Entry",
    "History",
    "Partition",
    "Position",
    "decode_position",
    "encode_position",
    "epoch_of",
    "marker_of",
]

Partition = tuple[str, int]
"""A COP partition: (catalogue topic name, partition number)."""

# Append-only: a code, once given, names its topic forever (positions in the wild use it).
TOPIC_CODES: Final[Mapping[str, int]] = {
    "reports": 1,
    "shelters.state": 2,
    "shelters.alerts": 3,
    "hazards.observations": 4,
    "evacuation.recommendations": 5,
    "evacuation.commands": 6,
    "evacuation.orders": 7,
    "broadcasts.requests": 8,
    "broadcasts.deliveries": 9,
    # Announced by the shelter tracker and broadcaster issues; read once they exist.
    "shelters.areas": 10,
    "public.messages": 11,
    "people.athome": 12,
    "supplies.requests": 13,
    "generators": 14,
}
_TOPIC_BY_CODE: Final = {code: name for name, code in TOPIC_CODES.items()}

COP_TOPICS: Final[tuple[str, ...]] = tuple(name for name in TOPIC_CODES if name in CATALOGUE)
"""The catalogue topics the COP is built from (those of the table that exist)."""

_FORMAT: Final = 1
_EPOCH_BYTES: Final = 8


@dataclass(frozen=True)
class Position:
    """An epoch and, per COP partition, the next offset not yet included (0 if absent)."""

    epoch: bytes
    offsets: Mapping[Partition, int]

    def get(self, partition: Partition) -> int:
        """The next offset of ``partition`` (0 when the position has read nothing there)."""
        return self.offsets.get(partition, 0)


def marker_of(offset: int, timestamp: int, key: bytes | None, value: bytes | None) -> bytes:
    """The marker of a partition: a hash of the first record it holds."""
    h = hashlib.blake2b(digest_size=_EPOCH_BYTES)
    h.update(f"{offset}\x1f{timestamp}\x1f".encode())
    h.update(b"\x00" if key is None else b"\x01" + key)
    h.update(b"\x1f")
    h.update(b"\x00" if value is None else b"\x01" + value)
    return h.digest()


def epoch_of(namespace: str, markers: Mapping[Partition, bytes],
             read: Iterable[Partition]) -> bytes | None:
    """The epoch of a position that has read ``read``, or None if a marker is unknown."""
    h = hashlib.blake2b(digest_size=_EPOCH_BYTES)
    h.update(namespace.encode())
    for partition in sorted(read):
        marker = markers.get(partition)
        if marker is None:
            return None
        h.update(f"\x1f{partition[0]}\x1f{partition[1]}\x1f".encode())
        h.update(marker)
    return h.digest()


def _varint(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _read_varint(data: bytes, index: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if index >= len(data) or shift > 63:
            raise InvalidPosition("truncated position")
        byte = data[index]
        index += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, index
        shift += 7


def encode_position(position: Position) -> str:
    """The opaque wire form of ``position``."""
    out = bytearray((_FORMAT,))
    out += position.epoch
    for (topic, partition), offset in sorted(position.offsets.items()):
        if offset > 0:
            _varint(TOPIC_CODES[topic], out)
            _varint(partition, out)
            _varint(offset, out)
    return base64.urlsafe_b64encode(bytes(out)).rstrip(b"=").decode("ascii")


def decode_position(text: str) -> Position:
    """Read a position string; raise :class:`InvalidPosition` if it is not one."""
    if not isinstance(text, str) or not 0 < len(text) <= 4096:
        raise InvalidPosition("a position is a non-empty string of at most 4096 characters")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as e:
        raise InvalidPosition("a position is base64url") from e
    if len(data) < 1 + _EPOCH_BYTES or data[0] != _FORMAT:
        raise InvalidPosition("unknown position format")
    epoch = data[1:1 + _EPOCH_BYTES]
    index = 1 + _EPOCH_BYTES
    offsets: dict[Partition, int] = {}
    while index < len(data):
        code, index = _read_varint(data, index)
        partition, index = _read_varint(data, index)
        offset, index = _read_varint(data, index)
        topic = _TOPIC_BY_CODE.get(code)
        if topic is None:
            raise InvalidPosition(f"unknown topic code {code}")
        offsets[(topic, partition)] = offset
    return Position(epoch, offsets)


# --- history -------------------------------------------------------------------------

D = TypeVar("D")


@dataclass(frozen=True, slots=True)
class Entry(Generic[D]):
    """One applied record that changed the COP: where it was, and what it changed."""

    partition: Partition
    offset: int
    position: str
    """The encoded position right after applying it (what the client is told)."""
    delta: D


@dataclass
class History(Generic[D]):
    """The last ``limit`` entries, and per partition the end of what was evicted.

    A client at position P can be served from here iff nothing it lacks was
    evicted: for every partition, the evicted records all lie below P.
    """

    limit: int
    entries: deque[Entry[D]] = field(default_factory=deque)
    evicted_end: dict[Partition, int] = field(default_factory=dict)

    def append(self, entry: Entry[D]) -> None:
        """Record an entry, evicting the oldest beyond the limit."""
        self.entries.append(entry)
        while len(self.entries) > self.limit:
            old = self.entries.popleft()
            self.evicted_end[old.partition] = old.offset + 1

    def covers(self, position: Position) -> bool:
        """Whether every entry after ``position`` is still held."""
        return all(position.get(p) >= end for p, end in self.evicted_end.items())

    def since(self, position: Position) -> Iterator[Entry[D]]:
        """The entries a client at ``position`` has not seen, in the order they were applied."""
        for entry in self.entries:
            if entry.offset >= position.get(entry.partition):
                yield entry

    def count_since(self, position: Position) -> int:
        """How many entries :meth:`since` would yield."""
        return sum(1 for _ in self.since(position))
