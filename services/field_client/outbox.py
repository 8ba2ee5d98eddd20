"""The field client's local outbox: a JSON-lines file of inputs the device must deliver.

Each input is appended and fsynced *before* anything is sent, so a crash or a
dead battery loses nothing; the file is rewritten atomically (temporary file,
fsync, rename, fsync of the directory) under an exclusive lock, so two commands
at once never interleave. Acknowledged and refused entries are kept for
:data:`KEEP_DONE_FOR`, then dropped. The path is ``SONAE_FIELD_OUTBOX``
(:attr:`infra.settings.Settings.field_outbox`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from infra.settings import Settings
from services.field_client.errors import OutboxCorrupt

__all__ = ["KEEP_DONE_FOR", "Entry", "FieldOutbox"]

KEEP_DONE_FOR: Final = timedelta(days=7)
"""Acknowledged and refused entries stay in the file this long (for the record), then go."""


@dataclass
class Entry:
    """One input the device must deliver."""

    id: str
    kind: str
    path: str
    body: dict[str, Any]
    created_at: str
    status: str = "pending"
    """pending, acknowledged or refused."""
    attempts: int = 0
    last_error: str | None = None
    answer: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    done_at: str | None = None

    @property
    def household_code(self) -> str | None:
        """The household a check-in, check-out or transfer is about (None for other kinds)."""
        if self.kind == "checkin":
            code = self.body.get("household_code")
            return code if isinstance(code, str) else None
        if self.kind in ("checkout", "transfer"):
            return self.path.split("/")[5]  # /v1/shelters/<id>/households/<code>/<action>
        return None

    def summary(self) -> str:
        """A one-line description for listings."""
        body = self.body
        if self.kind == "report":
            return f"{body.get('category')} severity {body.get('severity')}"
        if self.kind == "at_home":
            return f"at home in {body.get('area_id')}, {body.get('size')} people"
        parts = self.path.split("/")  # /v1/shelters/<id>/households[/<code>/<action>]
        if self.kind == "checkin":
            return f"{parts[3]} check-in {body.get('household_code')} ({body.get('size')})"
        if self.kind == "checkout":
            return f"{parts[3]} check-out {parts[5]}"
        if self.kind == "transfer":
            return f"{parts[3]} transfer {parts[5]} to {body.get('to')}"
        return f"{parts[3]} {body.get('action')}"


class FieldOutbox:
    """The JSON-lines file of inputs, rewritten atomically under an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser()

    @classmethod
    def from_settings(cls, settings: Settings) -> FieldOutbox:
        """The outbox named by ``SONAE_FIELD_OUTBOX`` (default ``~/.sonae/field-outbox.jsonl``)."""
        return cls(settings.field_outbox)

    @contextlib.contextmanager
    def locked(self) -> Iterator[list[Entry]]:
        """Hold the lock, yield the entries, and write them back (changed or not)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(self.path.suffix + ".lock"), "a") as lock:
            # Two commands at once (a retry loop and a new report) must not interleave.
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            yield entries
            self._write(entries)

    def entries(self) -> list[Entry]:
        """The entries as they are now (read under the lock)."""
        with self.locked() as entries:
            return list(entries)

    def _read(self) -> list[Entry]:
        if not self.path.exists():
            return []
        entries = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(Entry(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as e:
                raise OutboxCorrupt(
                    f"{self.path}:{number} is not a valid outbox entry ({e}); fix or move the "
                    "file — it may hold unsent reports") from e
        return entries

    def _write(self, entries: list[Entry]) -> None:
        horizon = datetime.now(UTC) - KEEP_DONE_FOR
        kept = [e for e in entries
                if e.status == "pending" or e.done_at is None
                or datetime.fromisoformat(e.done_at) > horizon]
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for e in kept:
                f.write(json.dumps(e.__dict__, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        # Make the rename itself durable.
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
