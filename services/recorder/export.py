"""Export a window of the event store as JSONL (``sonae events export``).

One event per line, each the canonical encoding ``encode_event(decode_event(stored))``:
byte for byte what a producer writes, current schema versions, so the drill runner
or any consumer reads the file with ``decode_event``. Order: event time
(``occurred_at``), ties by store order (``seq``); the window is event time too,
``since`` inclusive and ``until`` exclusive. Rows are read through a server-side
cursor inside one repeatable-read transaction, so the count and the rows agree
and memory stays flat however large the window.

**Personal data is marked.** Every line stays an event ``decode_event`` reads, so
the marks travel beside the lines: :class:`PersonalTally` counts, per event type,
the exported events that hold a value in a personal field
(:data:`services.recorder.retention.PERSONAL_PATHS`), and its :meth:`manifest
<PersonalTally.manifest>` lists those fields as JSON pointers. ``sonae events
export`` writes the manifest beside the file (``<output>.personal.json``) and says
on stderr how many events hold personal data. ``without_personal`` exports the
events with those fields blanked, as ``sonae people purge`` would leave them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

import asyncpg

from schemas.events import decode_event, encode_event
from schemas.topics import LIVE, validate_namespace
from services.common.cli import parse_instant
from services.recorder.errors import InvalidWindow
from services.recorder.retention import (
    PERSONAL_PATHS,
    holds_personal,
    personal_pointers,
    purge_envelope,
)

__all__ = ["PersonalTally", "Window", "count_window", "export_window", "parse_instant"]

MANIFEST_FORMAT = "sonae-export-personal"

_PREFETCH = 2000


@dataclass(frozen=True)
class Window:
    """Which events to export: a namespace and an event-time range (either end open)."""

    namespace: str = LIVE
    since: datetime | None = None
    """Inclusive lower bound on ``occurred_at``."""
    until: datetime | None = None
    """Exclusive upper bound on ``occurred_at``."""

    def __post_init__(self) -> None:
        validate_namespace(self.namespace)
        for name, value in (("since", self.since), ("until", self.until)):
            if value is not None and value.tzinfo is None:
                raise InvalidWindow(f"{name} must be timezone-aware")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidWindow(
                f"the window is empty: since {self.since.isoformat()} is not before "
                f"until {self.until.isoformat()}"
            )

    def where(self) -> tuple[str, list[object]]:
        """The SQL condition and its arguments (only the bounds that are set, so the
        planner can range-scan the occurred_at index)."""
        clauses: list[str] = ["namespace = $1"]
        args: list[object] = [self.namespace]
        if self.since is not None:
            args.append(self.since)
            clauses.append(f"occurred_at >= ${len(args)}")
        if self.until is not None:
            args.append(self.until)
            clauses.append(f"occurred_at < ${len(args)}")
        return " and ".join(clauses), args


@dataclass
class PersonalTally:
    """The personal data of an export: exported events holding it, per event type."""

    events: dict[str, int] = field(default_factory=dict)
    """Event type → exported events with a value in one of its personal fields."""
    removed: bool = False
    """Whether the export blanked those fields (``without_personal``)."""

    @property
    def total(self) -> int:
        """Exported events that hold personal data."""
        return sum(self.events.values())

    def manifest(self, window: Window, *, exported: int, file: str | None) -> dict[str, Any]:
        """The export's personal-data manifest (JSON): which fields are personal, where."""
        return {
            "format": MANIFEST_FORMAT,
            "version": 1,
            "export": file,
            "namespace": window.namespace,
            "since": window.since.isoformat() if window.since is not None else None,
            "until": window.until.isoformat() if window.until is not None else None,
            "events": exported,
            "personal_data_removed": self.removed,
            "personal_fields": {t: list(personal_pointers(t)) for t in PERSONAL_PATHS},
            "events_with_personal_data": dict(sorted(self.events.items())),
        }

    def summary(self) -> str:
        """One line for the terminal."""
        if self.removed:
            return (f"personal fields blanked in {self.total} events "
                    "(names, contacts, addresses, notes)")
        if not self.total:
            return "no exported event holds personal data"
        kinds = ", ".join(f"{t} {n}" for t, n in sorted(self.events.items()))
        return (f"{self.total} exported events hold personal data ({kinds}): "
                "HQ only, never to the public")


async def count_window(conn: asyncpg.Connection, window: Window) -> int:
    """How many stored events fall in ``window``."""
    where, args = window.where()
    count: int = await conn.fetchval(f"select count(*) from events where {where}", *args)
    return count


async def export_window(
    conn: asyncpg.Connection,
    window: Window,
    out: BinaryIO,
    *,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    personal: PersonalTally | None = None,
    without_personal: bool = False,
) -> int:
    """Write the window's events to ``out`` as JSONL; return how many were written.

    ``on_total`` receives the count before the first line, ``on_progress`` the
    number of lines written since its previous call. ``personal`` is filled with
    the exported events that hold personal data; with ``without_personal`` their
    personal fields are blanked in the file.
    """
    if personal is not None:
        personal.removed = without_personal
    where, args = window.where()
    written = 0
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if on_total is not None:
            on_total(await count_window(conn, window))
        query = (f"select type, envelope::text as envelope from events where {where} "
                 "order by occurred_at, seq")
        pending = 0
        async for row in conn.cursor(query, *args, prefetch=_PREFETCH):
            envelope: str = row["envelope"]
            if row["type"] in PERSONAL_PATHS:
                envelope = _personal(row["type"], envelope, personal, without_personal)
            out.write(encode_event(decode_event(envelope)) + b"\n")
            written += 1
            pending += 1
            if pending == _PREFETCH and on_progress is not None:
                on_progress(pending)
                pending = 0
        if pending and on_progress is not None:
            on_progress(pending)
    out.flush()
    return written


def _personal(event_type: str, envelope: str, tally: PersonalTally | None,
              without_personal: bool) -> str:
    document = json.loads(envelope)
    if not holds_personal(event_type, document):
        return envelope
    if tally is not None:
        tally.events[event_type] = tally.events.get(event_type, 0) + 1
    if without_personal:
        purged = purge_envelope(document)
        if purged is not None:
            return json.dumps(purged, ensure_ascii=False)
    return envelope
