"""The gateway's live state: the picture, its position in the log, history, and fan-out.

:class:`Hub` is fed records in the order the gateway reads them
(:meth:`Hub.apply`), folds them with the pure reducer, remembers each change in
a bounded history and fans it out to every attached :class:`Client`. It never
awaits: a change reaches every client's queue (or write list) synchronously, so
a client attached between two records gets a snapshot or a resume that is exact
— no gap, no duplicate — and one slow client cannot delay the others.

Per client, the bounded queue is an ``asyncio.Queue`` drained by the client's
writer task. While a client keeps up (its queue is empty and its socket's
write buffer below the high-water mark) a message goes straight to the socket
without the queue, as ``websockets.broadcast`` does, which keeps fan-out close
to the cost of a raw broadcast: the messages offered in one turn of the event
loop (the changes of one fetched batch) are framed and written in one socket
write at the end of the turn (:class:`Flusher`). Every write wakes the reader,
and on a small machine those wake-ups, not the bytes, are the cost. Otherwise
a message waits in the queue. A client whose queue
overflows is marked for closing with 1013 (try again later) and can resume
from its last position.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from schemas.events import Event
from services.gateway.cop import COP, Delta
from services.gateway.positions import (
    Entry,
    History,
    Partition,
    Position,
    encode_position,
    epoch_of,
)
from services.gateway.reducer import reduce
from services.gateway.views import Viewer, view_delta, view_state

log = logging.getLogger(__name__)

__all__ = [
    "CLIENT_QUEUE_SIZE",
    "HISTORY_SIZE",
    "WRITE_BUFFER_HIGH",
    "Client",
    "Flusher",
    "Hub",
    "Resume",
    "encode",
]

HISTORY_SIZE: Final = 10_000
"""Changes kept for resuming clients (about 10 MB at ~1 KB each)."""
CLIENT_QUEUE_SIZE: Final = 1_000
"""Messages a client may have waiting before it is closed with 1013."""
WRITE_BUFFER_HIGH: Final = 64 * 1024
"""Bytes in a socket's write buffer above which messages wait in the client's queue."""
OVERLOAD: Final = 1013
"""Close code for a client that fell too far behind (RFC 6455: try again later)."""


def encode(message: Mapping[str, Any]) -> bytes:
    """A protocol message as compact UTF-8 JSON."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Flusher:
    """Writes, once per turn of the event loop, what clients were offered during it.

    One scheduled callback for all clients of a hub rather than one per client.
    """

    def __init__(self) -> None:
        self._clients: list[Client] = []

    def add(self, client: Client) -> None:
        """Flush ``client`` at the end of this turn (it has just got its first message)."""
        if not self._clients:
            asyncio.get_running_loop().call_soon(self.flush)
        self._clients.append(client)

    def flush(self) -> None:
        """Write every waiting client's messages."""
        clients, self._clients = self._clients, []
        for client in clients:
            client.flush()


class Client:
    """One connected viewer: its view, its bounded queue and its writer."""

    def __init__(self, ws: ServerConnection, viewer: Viewer, *,
                 queue_size: int = CLIENT_QUEUE_SIZE,
                 write_buffer_high: int = WRITE_BUFFER_HIGH) -> None:
        self.ws = ws
        self.viewer = viewer
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_size)
        self.write_buffer_high = write_buffer_high
        self.overflowed = asyncio.Event()
        """Set when the queue overflowed; the connection handler closes with 1013."""
        self._pending: list[bytes] = []
        self.flusher = Flusher()
        """Who writes this client's messages after the turn (the hub's, once attached)."""

    def offer(self, data: bytes) -> None:
        """Queue (or write) one message without waiting; mark the client on overflow."""
        if self.overflowed.is_set():
            return
        if (self.queue.empty() and self.ws.protocol.state is State.OPEN
                and self.ws.transport.get_write_buffer_size() < self.write_buffer_high):
            # Nothing is waiting ahead of this message, so writing it next keeps the order;
            # the writer task is only woken for clients that fall behind. Messages offered
            # in one turn of the event loop (a fetched batch) leave in one write.
            if not self._pending:
                self.flusher.add(self)
            self._pending.append(data)
            return
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.overflowed.set()
            self._pending.clear()
            while not self.queue.empty():  # free the memory now; the client resumes later
                self.queue.get_nowait()

    def flush(self) -> None:
        """Write the messages offered since the last flush, as frames in one socket write."""
        pending, self._pending = self._pending, []
        protocol = self.ws.protocol
        if not pending or protocol.state is not State.OPEN:
            return
        try:
            for data in pending:
                protocol.send_text(data)
            chunks = protocol.data_to_send()
            if len(chunks) == 1 and chunks[0]:
                self.ws.transport.write(chunks[0])
            elif all(chunks):
                self.ws.transport.write(b"".join(chunks))
            else:  # the protocol also asked for a half-close: let the connection do both
                protocol.writes[:0] = chunks
                self.ws.send_data()
        except Exception as e:
            # One broken connection must not stop the flush of the others: as
            # websockets.broadcast does, the failure is logged, not raised, and the
            # connection is dropped so that the client reconnects and resumes.
            log.warning("could not write to a client (%s: %s); dropping its connection",
                        type(e).__name__, e)
            self.ws.transport.abort()

    async def write_loop(self) -> None:
        """Send queued messages, waiting for the socket to drain between them."""
        try:
            while True:
                data = await self.queue.get()
                self.flush()  # anything offered before the queue was used goes first
                await self.ws.send(data, text=True)
        except ConnectionClosed:
            return


class Resume(Enum):
    """What a hub can do for a client that presents a position."""

    EXACT = "exact"
    """Send the changes after it from history."""
    BEHIND = "behind"
    """This gateway has not read that far yet: wait, then decide again."""
    SNAPSHOT = "snapshot"
    """Another log, or older than history: send a fresh snapshot."""


@dataclass(frozen=True)
class Attached:
    """How a client was started: from a snapshot, or resumed with ``count`` changes."""

    snapshot: bool
    count: int
    position: str


class Hub:
    """The picture, its log position, history and attached clients."""

    def __init__(self, cop: COP, namespace: str, partitions: Iterable[Partition] = (), *,
                 history_size: int = HISTORY_SIZE, resume_limit: int | None = None) -> None:
        self.cop = cop
        self.namespace = namespace
        self.partitions = frozenset(partitions)
        """The COP partitions of the log (set by the source once it knows them)."""
        self.offsets: dict[Partition, int] = {}
        self.markers: dict[Partition, bytes] = {}
        self.history: History[tuple[Delta, ...]] = History(history_size)
        self.clients: set[Client] = set()
        self.ready = asyncio.Event()
        """Set once the source has read up to the log's end as of start-up."""
        self.resume_limit = resume_limit if resume_limit is not None else CLIENT_QUEUE_SIZE // 2
        self.applied = 0
        self.skipped = 0
        self.overflows = 0
        self._epochs: dict[frozenset[Partition], bytes | None] = {}
        self._position: str | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self.flusher = Flusher()

    def advanced(self) -> asyncio.Future[None]:
        """A future resolved when the next record has been applied."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return future

    # --- the log ----------------------------------------------------------------

    def set_marker(self, partition: Partition, marker: bytes) -> None:
        """Record the marker of a partition's first record (see positions.py)."""
        if self.markers.get(partition) != marker:
            self.markers[partition] = marker
            self._epochs.clear()
            self._position = None

    def position(self) -> Position:
        """Where the picture is: the epoch and the next offset of every partition read."""
        offsets = {p: o for p, o in self.offsets.items() if o > 0}
        epoch = self._epoch(frozenset(offsets))
        return Position(epoch if epoch is not None else bytes(8), offsets)

    def position_text(self) -> str:
        """:meth:`position`, encoded (cached until the next record)."""
        if self._position is None:
            self._position = encode_position(self.position())
        return self._position

    def _epoch(self, read: frozenset[Partition]) -> bytes | None:
        if read not in self._epochs:
            self._epochs[read] = epoch_of(self.namespace, self.markers, read)
        return self._epochs[read]

    def reset(self) -> None:
        """Forget everything read (the log was replaced); clients must reconnect."""
        self.cop = COP.empty(self.cop.region, drill=self.cop.drill)
        self.offsets.clear()
        self.markers.clear()
        self.history = History(self.history.limit)
        self.clients.clear()
        self._epochs.clear()
        self._position = None
        self.ready.clear()

    def seed(self, cop: COP, offsets: Mapping[Partition, int]) -> None:
        """Start from a picture folded elsewhere (the event store) at ``offsets``."""
        self.cop = cop
        self.offsets.update(offsets)
        self._position = None

    def apply(self, partition: Partition, offset: int, event: Event | None) -> None:
        """Fold the record at ``partition``/``offset`` (``None``: unreadable, skip it)."""
        if offset < self.offsets.get(partition, 0):
            return  # already folded (a re-read after a reconnect)
        self.offsets[partition] = offset + 1
        self._position = None
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters.clear()
        if event is None:
            self.skipped += 1
            return
        self.applied += 1
        self.cop, deltas = reduce(self.cop, event)
        if not deltas:
            return
        position = self.position_text()
        self.history.append(Entry(partition, offset, position, deltas))
        self._fan_out(position, deltas)

    def _fan_out(self, position: str, deltas: tuple[Delta, ...]) -> None:
        encoded: dict[Viewer, bytes | None] = {}
        for client in self.clients:
            viewer = client.viewer
            if viewer not in encoded:
                encoded[viewer] = _delta_message(position, deltas, viewer)
            data = encoded[viewer]
            if data is not None and not client.overflowed.is_set():
                client.offer(data)
                if client.overflowed.is_set():
                    self.overflows += 1
                    log.info("client queue overflowed; closing it with %d", OVERLOAD)

    def heartbeat(self) -> None:
        """Tell every client the current position (keeps idle positions fresh)."""
        if not self.clients:
            return
        data = encode({"type": "heartbeat", "position": self.position_text()})
        for client in self.clients:
            client.offer(data)

    # --- clients ----------------------------------------------------------------

    def check(self, position: Position) -> Resume:
        """Whether a client at ``position`` can be resumed here exactly."""
        read = frozenset(p for p, o in position.offsets.items() if o > 0)
        if not read <= self.partitions:
            return Resume.SNAPSHOT
        if any(position.get(p) > self.offsets.get(p, 0) for p in read):
            return Resume.BEHIND
        epoch = self._epoch(read)
        if epoch is None:
            return Resume.BEHIND  # a partition read there but whose start we have not seen
        if epoch != position.epoch or not self.history.covers(position):
            return Resume.SNAPSHOT
        if self.history.count_since(position) > self.resume_limit:
            return Resume.SNAPSHOT  # cheaper, and it cannot overflow the queue
        return Resume.EXACT

    def attach(self, client: Client, position: Position | None,
               welcome: Mapping[str, Any]) -> Attached:
        """Greet a client, start it from ``position`` (or a snapshot), add it to the fan-out.

        Synchronous on purpose: nothing can be applied between the snapshot (or
        the replayed changes) and the client joining the fan-out. ``welcome`` is
        sent first, with ``resume`` set to ``"exact"`` or ``"snapshot"``.
        """
        exact = position is not None and self.check(position) is Resume.EXACT
        client.flusher = self.flusher
        client.offer(encode({**welcome, "resume": "exact" if exact else "snapshot"}))
        if position is not None and exact:
            count = 0
            for entry in self.history.since(position):
                data = _delta_message(entry.position, entry.delta, client.viewer)
                if data is not None:
                    client.offer(data)
                    count += 1
            self.clients.add(client)
            return Attached(False, count, self.position_text())
        current = self.position_text()
        client.offer(encode({"type": "snapshot", "position": current,
                             "state": view_state(self.cop, client.viewer)}))
        self.clients.add(client)
        return Attached(True, 0, current)

    def detach(self, client: Client) -> None:
        """Stop sending to a client."""
        self.clients.discard(client)


def _delta_message(position: str, deltas: tuple[Delta, ...], viewer: Viewer) -> bytes | None:
    changes = []
    for delta in deltas:
        seen = view_delta(delta, viewer)
        if seen is not None:
            kind, key, value = seen
            changes.append({"kind": kind.value, "id": key, "value": value})
    if not changes:
        return None
    return encode({"type": "delta", "position": position, "changes": changes})
