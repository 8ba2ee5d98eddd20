"""The shipped drill scenarios (JSONL drill logs), found by name.

``chiyoda-heavy-rain.jsonl`` is written by ``sonae/tools/build_heavy_rain.py``,
``chiyoda-heavy-rain-jma.jsonl`` (the same drill, its warnings arriving as the
illustrative JMA XML messages of ``chiyoda-heavy-rain-jma/``) by
``sonae/tools/build_heavy_rain_jma.py`` (run by hand; the output is checked in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["SCENARIOS", "scenario_path"]

SCENARIOS: Final = Path(__file__).resolve().parent
"""The folder of the shipped scenarios."""


def scenario_path(name: str) -> Path:
    """Where the shipped scenario ``name`` (without ``.jsonl``) lives."""
    return SCENARIOS / f"{name}.jsonl"
