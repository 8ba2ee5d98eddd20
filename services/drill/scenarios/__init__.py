"""The shipped drill scenarios (JSONL drill logs), found by name.

``chiyoda-heavy-rain.jsonl`` is written by ``sonae/tools/build_heavy_rain.py``,
``chiyoda-heavy-rain-jma.jsonl`` (the same drill, its warnings arriving as the
illustrative JMA XML messages of ``chiyoda-heavy-rain-jma/``) by
``sonae/tools/build_heavy_rain_jma.py``, ``chiyoda-quake-commuters.jsonl`` (a weekday
earthquake: stranded commuters filling the ward's facilities) by
``sonae/tools/build_quake_commuters.py`` (run by hand; the output is checked in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["DEFAULT", "SCENARIOS", "SHIPPED", "scenario_path"]

SCENARIOS: Final = Path(__file__).resolve().parent
"""The folder of the shipped scenarios."""


SHIPPED: Final = ("chiyoda-heavy-rain", "chiyoda-heavy-rain-jma", "chiyoda-quake-commuters")
"""The shipped scenarios' names."""
DEFAULT: Final = "chiyoda-heavy-rain"
"""The scenario ``sonae up --demo`` plays unless told another."""


def scenario_path(name: str) -> Path:
    """Where the shipped scenario ``name`` (without ``.jsonl``) lives."""
    return SCENARIOS / f"{name}.jsonl"
