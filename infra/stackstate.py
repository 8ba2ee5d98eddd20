"""What a running ``sonae up`` tells other commands: its state file and its data-directory lock.

``sonae up`` (the composition root, :mod:`sonae.stack`) writes the state file;
``sonae status``, ``sonae down`` and the drill commands read it to find the
broker, database and service processes of the stack that runs. The lock file
keeps two stacks from sharing one data directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infra.embedded.processes import StaleState

__all__ = ["LOCK_FILE", "STATE_FILE", "StackState", "stack_lock"]

STATE_FILE = "stack.json"
LOCK_FILE = "up.lock"


@dataclass
class StackState:
    """What ``sonae up`` wrote about the stack it runs."""

    pid: int
    status: str  # "starting" | "ready" | "healing" | "stopping"
    namespace: str
    kafka_bootstrap: str
    database_url: str
    kafka_profile: str = "embedded"
    embedded_kafka_pid: int | None = None
    embedded_postgres_pid: int | None = None
    services: dict[str, int | None] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    # How `sonae status` asks each service whether it serves (infra.health.check_service).
    health: dict[str, dict[str, str]] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    ready_seconds: float | None = None

    def write(self, data_dir: Path) -> None:
        """Replace the state file atomically."""
        tmp = data_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, data_dir / STATE_FILE)

    @classmethod
    def read(cls, data_dir: Path) -> StackState | None:
        """The state file's contents, or None when no stack has written one."""
        try:
            raw: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        return cls(**raw)


@contextlib.contextmanager
def stack_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's lock; a second ``sonae up`` on it is refused."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 - held for the stack's lifetime
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise StaleState(
                f"another `sonae up` (pid {holder}) is running on {data_dir}. Stop it with "
                "`sonae down`, or use another --data-dir for a second stack."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()
