"""The shelter tracker as a worker process for integration tests, and readers of its topics.

A :class:`TrackerWorker` runs ``python -m services.shelter_tracker`` (the same
``main(settings)`` that ``sonae service run shelter-tracker`` calls) with the
test's ``SONAE_*`` settings in its own process group, so a test can SIGKILL it
as a crash would, or SIGTERM it as the supervisor does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from infra.embedded.processes import spawn, stop_group, tail
from infra.kafka import clients, compat
from infra.settings import Settings
from schemas.deadletter import DeadLetter
from schemas.events import Event, decode_event
from schemas.topics import qualified
from services.shelter_tracker.app import app_id
from tests.support import wait_for

REPO = Path(__file__).resolve().parents[3]


class TrackerWorker:
    """One shelter tracker process."""

    def __init__(self, settings: Settings, workdir: Path, name: str = "worker") -> None:
        self.settings = settings
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        # Each worker its own data directory, as separate hosts would have.
        self.env = {**os.environ, **settings.env(),
                    "SONAE_DATA_DIR": str(workdir / f"{name}-data"), "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def app_id(self) -> str:
        return app_id(self.settings.namespace)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = spawn([sys.executable, "-m", "services.shelter_tracker"],
                              log=log, env=self.env, cwd=REPO)

    def kill(self) -> None:
        """SIGKILL the worker's process group, as a crash would."""
        if self.proc is not None:
            stop_group(self.proc, sig=signal.SIGKILL)
            self.proc = None

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, as the supervisor stops a service; return the exit status."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        return stop_group(proc, timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n"
                                 f"{tail(self.log_path, 40)}")

    def log_tail(self) -> str:
        return tail(self.log_path, 40)


@contextlib.asynccontextmanager
async def workers(settings: Settings, workdir: Path) -> AsyncIterator[
        Callable[[str], TrackerWorker]]:
    """A factory of started workers; every one is killed when the block ends."""
    made: list[TrackerWorker] = []

    def make(name: str) -> TrackerWorker:
        worker = TrackerWorker(settings, workdir, name)
        made.append(worker)
        worker.start()
        return worker

    try:
        yield make
    finally:
        for worker in made:
            worker.kill()


class TopicReader:
    """Reads a catalogue topic of the namespace from the beginning, keeps everything read."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.name = qualified(topic, settings.namespace)
        self.consumer: AIOKafkaConsumer = clients.consumer(settings)
        self.records: list[tuple[bytes | None, bytes | None]] = []

    async def start(self) -> None:
        await self.consumer.start()
        partitions = await wait_for(lambda: self.consumer.partitions_for_topic(self.name),
                                    timeout=20, what=f"metadata of {self.name}")
        tps = [TopicPartition(self.name, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def read_to_end(self, timeout: float = 20.0) -> None:
        """Read until every partition's position is at its current end."""
        tps = sorted(self.consumer.assignment())

        async def at_end() -> bool:
            await self.poll()
            ends = await compat.end_offsets(self.consumer, tps)
            return all([await self.consumer.position(tp) >= ends[tp] for tp in tps])

        await wait_for(at_end, timeout=timeout, what=f"the end of {self.name}")

    async def poll(self) -> None:
        batches = await self.consumer.getmany(timeout_ms=100)
        for records in batches.values():
            self.records.extend((r.key, r.value) for r in records)

    @property
    def events(self) -> list[Event]:
        return [decode_event(value) for _, value in self.records if value is not None]

    @property
    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.model_validate_json(value) for _, value in self.records
                if value is not None]

    async def until(self, predicate: Callable[[TopicReader], Any], *, timeout: float,
                    what: str, worker: TrackerWorker | None = None) -> Any:
        """Poll until ``predicate(self)`` is truthy; fail early if ``worker`` died."""

        async def check() -> Any:
            if worker is not None:
                worker.check_alive()
            await self.poll()
            return predicate(self)

        try:
            return await wait_for(check, timeout=timeout, interval=0.01, what=what)
        except AssertionError as exc:
            logs = f"\n--- {worker.name} log ---\n{worker.log_tail()}" if worker else ""
            raise AssertionError(f"{exc}{logs}") from None


@contextlib.asynccontextmanager
async def readers(settings: Settings, *topics: str) -> AsyncIterator[list[TopicReader]]:
    """Started readers of ``topics``; stopped when the block ends."""
    started = [TopicReader(settings, topic) for topic in topics]
    await asyncio.gather(*(reader.start() for reader in started))
    try:
        yield started
    finally:
        await asyncio.gather(*(reader.stop() for reader in started))
