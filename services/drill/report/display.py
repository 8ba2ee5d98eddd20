"""Display helpers the Markdown and HTML writers share: durations, ``T+`` offsets,
step headings and the region's names and clock."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

from schemas.region import RegionPackError, load_region
from services.drill.report.model import Report, language_order

__all__ = ["Names", "duration", "offset", "step_columns", "step_label"]


def duration(seconds: float | None, *, wall: bool = False) -> str:
    """``12m05s``, ``1h02m`` (or ``0.42s`` for a short wall time); ``–`` for none."""
    if seconds is None:
        return "–"
    if wall and abs(seconds) < 60:
        return f"{seconds:.2f}s"
    sign = "-" if seconds < 0 else ""
    total = round(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes:02d}m"
    return f"{sign}{minutes}m{secs:02d}s"


def offset(report: Report, at: datetime | None) -> str:
    """``T+…`` from the report's start; ``–`` when either is unknown."""
    if at is None or report.start is None:
        return "–"
    return "T+" + duration((at - report.start).total_seconds())


class Names:
    """Display names of areas, shelters and gauges in the region's language."""

    def __init__(self, region: str) -> None:
        self.names: Mapping[str, str] = {}
        self.tz: ZoneInfo = ZoneInfo("UTC")
        self.thresholds: dict[str, dict[str, float]] = {}
        try:
            pack = load_region(region)
        except RegionPackError:
            return
        self.names = pack.names(pack.default_language)
        self.tz = ZoneInfo(pack.pack.timezone)
        self.thresholds = {g.id: g.thresholds.model_dump() for g in pack.gauges}

    def __call__(self, key: str) -> str:
        """The display name of an id (each part of a comma-joined key), else the id."""
        return ", ".join(f"{self.names.get(part, part)}" for part in key.split(","))

    def clock(self, at: datetime | None) -> str:
        """``MM-DD HH:MM:SS`` in the region's time zone; ``–`` for none."""
        return "–" if at is None else at.astimezone(self.tz).strftime("%m-%d %H:%M:%S")


_STEP_LABELS: Final = {"recommendation": "→ recommendation", "approval": "→ approval",
                       "order": "→ order"}


def step_label(step: str) -> str:
    """The column heading of a step (``→ order``, ``→ message ja``)."""
    if step.startswith("message_"):
        return f"→ message {step.removeprefix('message_')}"
    return _STEP_LABELS[step]


def step_columns(report: Report) -> list[str]:
    """The steps the latency tables show: the decision steps, then each language found."""
    languages = sorted({lang for c in report.chains for lang in c.messages}, key=language_order)
    return ["recommendation", "approval", "order", *(f"message_{lang}" for lang in languages)]
