"""Write ``chiyoda-quake-commuters.jsonl``: a weekday earthquake and its stranded commuters.

    .venv/bin/python -m sonae.tools.build_quake_commuters

A variant of the shipped drill (:mod:`sonae.tools.build_heavy_rain`: the same
builder, the pure shelter tracker and evacuation engine computing the original
run), on a weekday afternoon in 千代田区 — ILLUSTRATIVE, as are the facilities it
uses (the region pack's ``facilities.json``):

- 14:46 an earthquake, 震度5強 across the ward (the rule ``seismic-5-upper``:
  level 3 for every district); HQ approves the recommendations at 14:52;
- the trains stop: the ward opens stranded-commuter facilities (一時滞在施設) —
  丸の内, 秋葉原, 小川町 — from 15:00; commuters check in one by one (a household of
  one), the head counts fill 丸の内 to crowded by 16:30 and to full by 17:30, when
  九段南 opens as well;
- 丸の内 asks for water and blankets at 15:40 (received by 16:50);
- no shelter opens and no resident shelters: the story is the commuters'.

On the public portal the open facilities join each area's list of places once the
earthquake order is in force, with their crowding.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any, Final
from uuid import UUID

from schemas.envelope import derive_id
from schemas.hazards import SeismicIntensity
from services.drill.logformat import DrillLog, RecordedFrom, build_log
from services.drill.scenarios import scenario_path
from sonae.tools.build_heavy_rain import JST, REGION, Run, write

__all__ = ["DESCRIPTION", "NAME", "QuakeRun", "build", "main"]

NAME: Final = "chiyoda-quake-commuters"
OUTPUT: Final = scenario_path(NAME)
DAY: Final = (2025, 9, 3)  # a Wednesday

MARUNOUCHI = "ts-marunouchi"   # 2,000 places, kojimachi
AKIHABARA = "ts-akihabara"     # 800, manseibashi
OGAWAMACHI = "ts-ogawamachi"   # 500, kanda-koen
KUDAN_SOUTH = "ts-kudan"       # 600, fujimi
QUAKE = "jma-20250903144600"

DESCRIPTION: Final = ("平日午後の地震（千代田区）: 震度5強、鉄道の運転見合わせ、"
                      "帰宅困難者の一時滞在施設の開設と混雑、物資の要請から受領まで。"
                      "Illustrative data.")


def at(hhmm: str) -> datetime:
    """A time of the scenario's day, JST."""
    hour, minute = (int(part) for part in hhmm.split(":"))
    return datetime(*DAY, hour, minute, tzinfo=JST)


class QuakeRun(Run):
    """The builder of the heavy-rain drill, its ids its own, plus an earthquake."""

    def _id(self, *parts: str) -> UUID:
        return derive_id("scenario", NAME, *parts)

    def quake(self, when: datetime, shindo: str) -> None:
        event = self._add(SeismicIntensity, {
            "quake_id": QUAKE, "magnitude": 6.8, "epicentre": "東京湾",
            "intensities": [{"area_id": d.id, "shindo": shindo} for d in REGION.districts],
        }, when, "jma-feed", f"quake-{when:%H%M}")
        self._decide(event)


def timeline(run: QuakeRun) -> list[tuple[datetime, Any]]:
    """Everything that happens, with its time; same-minute entries keep this order."""
    m = run
    events: list[tuple[datetime, Any]] = [
        (at("14:46"), partial(m.quake, at("14:46"), "5+")),
        (at("14:52"), lambda: m.decide_all(at("14:52"), "earthquake",
                                           reason="震度5強。鉄道は運転見合わせ。屋内で安全確保、"
                                                  "帰宅は控える。")),
    ]
    openings = [("15:00", MARUNOUCHI), ("15:05", AKIHABARA), ("15:12", OGAWAMACHI),
                ("17:31", KUDAN_SOUTH)]
    events += [(at(t), partial(m.opening, at(t), site)) for t, site in openings]
    counts = [("15:30", MARUNOUCHI, 640), ("15:30", AKIHABARA, 210), ("15:45", OGAWAMACHI, 120),
              ("16:00", MARUNOUCHI, 1150), ("16:00", AKIHABARA, 420),
              ("16:30", MARUNOUCHI, 1680), ("16:30", AKIHABARA, 560),
              ("17:00", MARUNOUCHI, 1890), ("17:00", OGAWAMACHI, 310),
              ("17:30", MARUNOUCHI, 2000), ("17:30", AKIHABARA, 690),
              ("18:00", KUDAN_SOUTH, 240)]
    events += [(at(t), partial(m.count, at(t), site, n)) for t, site, n in counts]
    # Commuters checked in one by one at the desk (the rest are counted at the door).
    checkins: list[tuple[str, str, str, tuple[str, ...]]] = [
        ("15:07", MARUNOUCHI, "C0MMT001", ()), ("15:08", MARUNOUCHI, "C0MMT002", ("language",)),
        ("15:09", AKIHABARA, "C0MMT003", ("wheelchair",)),
        ("15:14", OGAWAMACHI, "C0MMT004", ()), ("15:21", MARUNOUCHI, "C0MMT005", ("dietary",)),
        ("15:23", AKIHABARA, "C0MMT006", ("medical_care",)),
    ]
    events += [(at(t), partial(m.checkin, at(t), site, code, 1, *needs))
               for t, site, code, needs in checkins]
    events += [(at("17:33"), partial(m.transfer, at("17:33"), MARUNOUCHI, KUDAN_SOUTH,
                                     "C0MMT002", 1, "language"))]
    events += [(at("15:40"), lambda: m.supplies(
        "marunouchi-water", MARUNOUCHI, "kojimachi",
        [{"item": "water", "quantity": 2000, "note": "500 mL"},
         {"item": "blankets", "quantity": 800}], "urgent",
        [(at("15:40"), "requested"), (at("15:48"), "assigned"), (at("16:05"), "dispatched"),
         (at("16:50"), "received")],
        requester_kind="facility"))]
    return events


def build(run: QuakeRun | None = None) -> DrillLog:
    """The scenario as a drill log."""
    run = run or QuakeRun()
    for _, add in sorted(timeline(run), key=lambda item: item[0]):
        add()
    return build_log(
        [*run.inputs, *run.references], region="chiyoda",
        recorded_from=RecordedFrom(kind="scenario",
                                   generator="sonae/tools/build_quake_commuters.py"),
        since=at("14:40"), until=at("18:01"), description=DESCRIPTION,
    )


def main() -> None:
    write(build(), OUTPUT)


if __name__ == "__main__":
    main()
