"""Is a service serving: its ``/healthz``, or the beacon a consumer process writes.

``sonae up`` announces "ready" and ``sonae status`` says "healthy" only when every
service serves, not when its process merely exists. Two kinds of check:

- an HTTP service (intake, gateway, broadcaster) answers ``GET /healthz`` with 200;
- a consumer service (recorder, shelter tracker, evacuation) and the JMA poller,
  which listen on no port, write a *beacon*: a small JSON file under
  ``<data dir>/health/`` that the process itself rewrites about every second,
  saying whether it is in its consumer group with partitions assigned. A beacon
  counts only while it is fresh and written by the pid ``sonae up`` runs, so a
  hung process or a dead one's leftover file reads as "not serving".

Why not the broker's group description: the embedded broker (Tansu 0.6.0) still
describes a group as ``Stable`` with its member seconds after that member left
(measured: 4 s after ``consumer.stop()``, and it lists no groups at all), so it
cannot tell a departed consumer from a live one. The member itself can.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from infra.embedded.processes import process_alive

__all__ = ["BEACON_FRESH_SECONDS", "Beacon", "ServiceCheck", "beacon_path", "beat", "check_service",
           "read_beacon", "write_beacon"]

BEACON_FRESH_SECONDS = 5.0
"""A beacon older than this says nothing: its writer stopped beating (hung or gone)."""


@dataclass(frozen=True)
class Beacon:
    """What a service process last said about itself."""

    pid: int
    at: float  # time.time() of the write
    serving: bool
    detail: str


def beacon_path(data_dir: Path, service: str, namespace: str = "") -> Path:
    """Where ``service`` of ``namespace`` writes its beacon."""
    return data_dir / "health" / (namespace or "live") / f"{service}.json"


def write_beacon(path: Path, *, serving: bool, detail: str) -> None:
    """Replace the beacon atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), "serving": serving,
                               "detail": detail}))
    os.replace(tmp, path)


def read_beacon(path: Path) -> Beacon | None:
    """The beacon at ``path``, or None when there is none (or it cannot be read)."""
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        return Beacon(pid=int(raw["pid"]), at=float(raw["at"]), serving=bool(raw["serving"]),
                      detail=str(raw["detail"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class ServiceCheck:
    """The result of one service's check: serving or not, and why."""

    serving: bool
    detail: str


async def check_service(check: dict[str, str], pid: int | None, *,
                        now: float | None = None) -> ServiceCheck:
    """Run one check as ``sonae up`` recorded it: ``{"http": url}`` or ``{"beacon": path}``."""
    if pid is None or not process_alive(pid):
        return ServiceCheck(False, "restarting")
    if "http" in check:
        return await _check_http(check["http"])
    if "beacon" in check:
        return _check_beacon(Path(check["beacon"]), pid, time.time() if now is None else now)
    return ServiceCheck(False, f"no health check recorded ({sorted(check)})")


async def _check_http(url: str) -> ServiceCheck:
    timeout = aiohttp.ClientTimeout(total=3)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.get(url) as response:
            if response.status == 200:
                return ServiceCheck(True, f"{url} answers 200")
            return ServiceCheck(False, f"{url} answers {response.status}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return ServiceCheck(False, f"{url} not answering ({type(exc).__name__})")


def _check_beacon(path: Path, pid: int, now: float) -> ServiceCheck:
    beacon = read_beacon(path)
    if beacon is None:
        return ServiceCheck(False, "no health beacon yet")
    if beacon.pid != pid:
        return ServiceCheck(False, f"health beacon is from pid {beacon.pid}, not {pid}")
    age = now - beacon.at
    if age > BEACON_FRESH_SECONDS:
        return ServiceCheck(False, f"health beacon {age:.0f}s old (process not beating)")
    if not beacon.serving:
        return ServiceCheck(False, beacon.detail)
    return ServiceCheck(True, beacon.detail)


async def beat(path: Path, probe: Any, stop: asyncio.Event, *, every: float = 1.0) -> None:
    """Write the beacon from ``probe() -> (serving, detail)`` every ``every`` s until ``stop``.

    On the way out it says "stopping", so ``sonae status`` does not wait out the
    freshness window to notice a clean stop.
    """
    try:
        while not stop.is_set():
            serving, detail = probe()
            write_beacon(path, serving=serving, detail=detail)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    finally:
        with contextlib.suppress(OSError):
            write_beacon(path, serving=False, detail="stopping")
