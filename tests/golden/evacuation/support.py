"""Golden scenarios: read a scenario's input log, run it, compare normalised decisions.

A scenario is a directory beside this module with ``input.jsonl`` (one event
per line, in log order) and ``expected.jsonl`` (the decisions, normalised by
:func:`normalise`). The unit tests run each scenario through the pure engine
and the integration test through the real worker; both compare with the same
``expected.jsonl``. Test code only: it lives here, not in the service.
Regenerate deliberately with ``SONAE_UPDATE_GOLDEN=1 pytest
tests/unit/test_evacuation_golden.py`` and review the diff.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from schemas.envelope import Envelope
from schemas.events import Event, decode_event
from services.evacuation.config import EngineConfig
from services.evacuation.engine import replay

__all__ = ["normalise", "read_events", "read_expected", "run", "write_expected"]


def normalise(event: Envelope) -> dict[str, Any]:
    """What a decision is compared on: type, ids, cause, event time and the whole payload.

    ``recorded_at``, ``source`` and the correlation chain are left out: they
    describe the pipeline, not the decision.
    """
    return {
        "type": event.type,
        "event_id": str(event.event_id),
        "causation_id": None if event.causation_id is None else str(event.causation_id),
        "occurred_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "payload": event.payload.model_dump(mode="json"),
    }


def read_events(path: Path) -> list[Event]:
    """The events of a JSONL file, in order."""
    with path.open(encoding="utf-8") as f:
        return [decode_event(line) for line in f if line.strip()]


def read_expected(path: Path) -> list[dict[str, Any]]:
    """Normalised decisions from a JSONL file."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_expected(path: Path, decisions: Iterable[dict[str, Any]]) -> None:
    """Write normalised decisions, one sorted-key JSON object per line (reviewable diffs)."""
    with path.open("w", encoding="utf-8") as f:
        for decision in decisions:
            f.write(json.dumps(decision, ensure_ascii=False, sort_keys=True) + "\n")


def run(config: EngineConfig, events: Iterable[Event]) -> list[dict[str, Any]]:
    """Run events through the pure engine; the normalised decisions in emission order."""
    _, emitted = replay(config, events)
    return [normalise(e) for e in emitted]
