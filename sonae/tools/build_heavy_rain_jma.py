"""Write ``chiyoda-heavy-rain-jma.jsonl``: the heavy-rain drill with its warnings as JMA XML.

    .venv/bin/python -m sonae.tools.build_heavy_rain_jma

The same afternoon as :mod:`sonae.tools.build_heavy_rain` (the same gauges, reports,
shelters and HQ commands, in the same order), except that its three warnings
arrive as 気象庁防災情報XML messages — ILLUSTRATIVE, written by us for 千代田区's
codes after the structure of JMA's samples, and saying so in their headline
(``services/drill/scenarios/chiyoda-heavy-rain-jma/``):

- ``1240_VPWW54_advisory.xml`` — 東京都気象警報・注意報: 大雨注意報 for 千代田区 (1310100);
- ``1445_VXWW50_alert.xml`` — 東京都土砂災害警戒情報: 警戒 for 千代田区, which the pack's
  ``landslide_municipalities`` narrows to 麹町 and 富士見;
- ``1640_VXWW50_ended.xml`` — its 解除.

Each message becomes events exactly as ``POST /v1/jma`` makes them (intake's own
:func:`~services.intake.jma.map_bytes` and :func:`~services.intake.jma.jma_events`),
so the decisions must be those of the JSON scenario; ``tests/unit/test_heavy_rain_jma.py``
compares them. The rationales differ only in citing the JMA message (title,
office, report time in JST).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from schemas.events import decode_event, encode_event
from schemas.jma import load_jma_table
from services.drill.logformat import DrillLog
from services.drill.scenarios import SCENARIOS, scenario_path
from services.intake.domain import SenderBinding
from services.intake.jma import jma_events, jma_scope, map_bytes
from sonae.tools.build_heavy_rain import Run, build, write

__all__ = ["MESSAGES", "NAME", "JmaRun", "build_jma", "main"]

NAME: Final = "chiyoda-heavy-rain-jma"
OUTPUT: Final = scenario_path(NAME)
MESSAGES: Final = SCENARIOS / NAME
"""The illustrative JMA messages, named ``HHMM_<data type>_<what>.xml`` (JST)."""
TABLE = load_jma_table("chiyoda")


class JmaRun(Run):
    """The heavy-rain run whose warnings are the JMA messages of :data:`MESSAGES`."""

    def warning(self, when: datetime, warning_id: str, kind: str, name: str, level: int,
                areas: list[str], hazard: str | None, action: str = "issued") -> None:
        [path] = MESSAGES.glob(f"{when:%H%M}_*.xml")
        mapped = map_bytes(path.read_bytes(), TABLE, max_bytes=4 * 1024 * 1024)
        signals = mapped.signals
        scope = jma_scope(signals)  # recorded as intake would: bound to JMA's office
        for made in jma_events(mapped, scope, signals.message_id, when + timedelta(seconds=2),
                               binding=SenderBinding(scope)):
            event = decode_event(encode_event(made))
            self.inputs.append(event)
            self._decide(event)


def build_jma() -> DrillLog:
    """The JMA variant as a drill log."""
    return build(JmaRun(), generator="sonae/tools/build_heavy_rain_jma.py", description=(
        "大雨の午後（千代田区）— 気象庁防災情報XML版: 大雨注意報・土砂災害警戒情報とその解除を"
        "JMA XML 電文で受ける（電文は例示：気象庁の発表ではない）。判断は JSON 版と同じ。"
        "Illustrative data."))


def main() -> None:
    write(build_jma(), OUTPUT)


if __name__ == "__main__":
    main()
