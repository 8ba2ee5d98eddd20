"""Runs services as supervised child processes.

Each service is its own process (so a crash in one never takes another down),
in its own process group with a parent-death signal (so nothing outlives the
supervisor). A service that exits unexpectedly is restarted with exponential
backoff; one that stays up for a while gets its backoff reset. Output is
prefixed with the service name, one line at a time. Shutdown is in reverse
start order, SIGTERM first and SIGKILL after a bounded grace period.

:meth:`Supervisor.hold` stops every service (reverse order) and keeps them down
until :meth:`Supervisor.release` starts them again: what ``sonae up`` does while
it replaces a broker that died, so that nothing publishes into the new broker
before the event store is republished (per-key order) and every consumer starts
against the new log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from infra.embedded.processes import death_signal_setter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessSpec:
    """A command to keep running."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Backoff:
    """Restart delays: ``initial`` doubling up to ``maximum``; reset after ``stable`` s up."""

    initial: float = 0.5
    maximum: float = 30.0
    stable: float = 60.0

    def delay(self, failures: int) -> float:
        """Delay before restart number ``failures`` (1-based)."""
        return float(min(self.maximum, self.initial * 2 ** max(0, failures - 1)))


@dataclass
class _Child:
    spec: ProcessSpec
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    failures: int = 0
    stopping: bool = False
    exited: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Keep a set of processes running until :meth:`stop`."""

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        backoff: Backoff | None = None,
        grace: float = 10.0,
        out: TextIO | None = None,
    ) -> None:
        self._children = [_Child(s) for s in specs]
        self._backoff = backoff or Backoff()
        self._grace = grace
        self._out = out or sys.stdout
        self._stop = asyncio.Event()
        self._running = asyncio.Event()  # cleared while held
        self._running.set()
        self._width = max((len(s.name) for s in specs), default=0)

    def pids(self) -> dict[str, int | None]:
        """Current process id of each service (None while it is being restarted)."""
        return {c.spec.name: (c.proc.pid if c.proc and c.proc.returncode is None else None)
                for c in self._children}

    def restarts(self) -> dict[str, int]:
        """How many times each service has been restarted."""
        return {c.spec.name: max(0, c.starts - 1) for c in self._children}

    async def run(self) -> None:
        """Start every process and keep them running until :meth:`stop` is called."""
        async with asyncio.TaskGroup() as tg:
            for child in self._children:
                tg.create_task(self._keep_running(child), name=f"supervise-{child.spec.name}")
            await self._stop.wait()
            # Reverse order: consumers stop before the things they depend on.
            for child in reversed(self._children):
                await self._terminate(child)

    def stop(self) -> None:
        """Ask :meth:`run` to stop every process and return."""
        self._stop.set()
        self._running.set()  # a held child waits on this: let it see the stop

    async def hold(self, grace: float = 2.0) -> None:
        """Stop every process at once (SIGKILL after ``grace``) and keep them down.

        All at once and with a short grace: a service held because its broker died
        cannot commit or flush anything more (a faust worker waits on the dead broker
        until killed), and everything it acknowledged is already durable.
        """
        self._running.clear()
        async with asyncio.TaskGroup() as tg:
            for child in self._children:
                tg.create_task(self._signal_stop(child, grace))

    def release(self) -> None:
        """Start the held processes again (at once: a hold is not a failure)."""
        self._running.set()

    async def _keep_running(self, child: _Child) -> None:
        while not self._stop.is_set():
            await self._running.wait()
            if self._stop.is_set():
                return
            started = time.monotonic()
            await self._start(child)
            assert child.proc is not None
            pump = asyncio.create_task(self._pump(child))
            if not self._running.is_set():  # held while it was being started
                await self._signal_stop(child, 3.0)
            code = await child.proc.wait()
            await pump
            child.exited.set()
            if self._stop.is_set() or child.stopping:
                return
            if not self._running.is_set():
                self._write(child.spec.name, "stopped (held)")
                continue
            if time.monotonic() - started >= self._backoff.stable:
                child.failures = 0
            child.failures += 1
            delay = self._backoff.delay(child.failures)
            log.warning("service %s exited with status %s; restarting in %.1fs",
                        child.spec.name, code, delay)
            self._write(child.spec.name, f"exited with status {code}; restart in {delay:.1f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _start(self, child: _Child) -> None:
        child.exited.clear()
        env = {**os.environ, **child.spec.env, "PYTHONUNBUFFERED": "1"}
        child.proc = await asyncio.create_subprocess_exec(
            *child.spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            process_group=0,
            preexec_fn=death_signal_setter(signal.SIGTERM),
        )
        child.starts += 1
        log.info("started service %s (pid %s)", child.spec.name, child.proc.pid)

    async def _pump(self, child: _Child) -> None:
        assert child.proc is not None and child.proc.stdout is not None
        while line := await child.proc.stdout.readline():
            self._write(child.spec.name, line.decode("utf-8", "replace").rstrip("\n"))

    def _write(self, name: str, text: str) -> None:
        self._out.write(f"{name.ljust(self._width)} | {text}\n")
        self._out.flush()

    async def _terminate(self, child: _Child) -> None:
        child.stopping = True
        await self._signal_stop(child, self._grace)

    async def _signal_stop(self, child: _Child, grace: float) -> None:
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log.warning("service %s did not stop within %.0fs; killing it",
                        child.spec.name, grace)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
