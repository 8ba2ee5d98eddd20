"""Write the golden scenarios' ``input.jsonl`` files (authoring tool, run by hand).

    .venv/bin/python -m tests.golden.evacuation.build_inputs

The checked-in ``input.jsonl`` files are the scenarios; this script only makes
them reproducible and readable. Inputs are what intake, the shelter tracker and
the gateway publish (gauge readings, warnings, seismic intensities, accepted
reports, shelter states, HQ commands), with ids derived from the scenario so the
files are stable. HQ commands must name the recommendation they decide, so the
builder runs the pure engine as it goes to learn those ids. After changing a
scenario, regenerate the expected decisions with ``SONAE_UPDATE_GOLDEN=1`` (see
docs/evacuation-decision.md) and review both diffs.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

from schemas.envelope import Envelope, derive_id, new_event
from schemas.evacuation import EvacuationCommand
from schemas.events import Event, encode_event
from schemas.hazards import GaugeReading, Hazard, HazardWarning, SeismicIntensity
from schemas.region import load_region
from schemas.reports import ReportAccepted
from schemas.shelters import ShelterStatusChanged
from services.evacuation.config import load_config
from services.evacuation.engine import step
from services.evacuation.state import DecisionState, cell_key

HERE = Path(__file__).resolve().parent
JST = timezone(timedelta(hours=9), "JST")
REGION = load_region("chiyoda")
NAMES = REGION.names("ja")


class Scenario:
    """Builds one scenario's input log, running the engine to learn recommendation ids."""

    def __init__(self, name: str, day: tuple[int, int, int]) -> None:
        self.name = name
        self.day = day
        self.events: list[Event] = []
        self.config = load_config("chiyoda")
        self.state = DecisionState()
        self.shelter_versions: dict[str, tuple[int, str]] = {}

    def at(self, hhmm: str, day_offset: int = 0) -> datetime:
        hour, minute = (int(part) for part in hhmm.split(":"))
        y, m, d = self.day
        return datetime(y, m, d, hour, minute, tzinfo=JST) + timedelta(days=day_offset)

    def _add(self, cls: type[Envelope], payload: dict[str, Any], when: datetime,
             source: str) -> Event:
        event_id = derive_id("golden", self.name, len(self.events))
        event = new_event(cls, payload, occurred_at=when, recorded_at=when + timedelta(seconds=2),
                          source=source, event_id=event_id)
        self.events.append(event)  # type: ignore[arg-type]
        self.state, _ = step(self.config, self.state, event)  # type: ignore[arg-type]
        return event  # type: ignore[return-value]

    # --- inputs ---

    def gauge(self, gauge_id: str, level_m: float, when: datetime) -> None:
        self._add(GaugeReading, {"gauge_id": gauge_id, "level_m": level_m, "observed_at": when},
                  when, "gauge-feed")

    def shelter(self, site_id: str, status: str, occupancy: int, when: datetime,
                capacity: int | None = None) -> None:
        site = REGION.site(site_id)
        version, previous = self.shelter_versions.get(site_id, (0, None))  # type: ignore[arg-type]
        self.shelter_versions[site_id] = (version + 1, status)
        self._add(ShelterStatusChanged, {
            "shelter_id": site_id, "version": version + 1, "status": status,
            "previous_status": previous, "name": NAMES[site_id], "occupancy": occupancy,
            "capacity": capacity if capacity is not None else site.capacity,
            "hazards": sorted(h.value for h in site.hazards),
            "last_reported_by": {"team": f"{NAMES[site_id]} 避難所運営班"},
            "last_reported_at": when,
        }, when, "shelter-tracker")

    def warning(self, warning_id: str, kind: str, name: str, level: int, areas: list[str],
                when: datetime, *, hazard: str | None, action: str = "issued",
                source: str = "jma", expires: datetime | None = None,
                cap_identifier: str | None = None) -> None:
        self._add(HazardWarning, {
            "warning_id": warning_id, "action": action, "kind": kind, "name": name,
            "hazard": hazard, "alert_level_equivalent": level, "area_ids": areas,
            "issued_at": when, "expires_at": expires, "source": source,
            "cap_identifier": cap_identifier,
        }, when, "jma-feed" if source == "jma" else "intake")

    def quake(self, quake_id: str, magnitude: float, epicentre: str,
              intensities: dict[str, str], when: datetime) -> None:
        self._add(SeismicIntensity, {
            "quake_id": quake_id, "magnitude": magnitude, "epicentre": epicentre,
            "intensities": [{"area_id": a, "shindo": s} for a, s in intensities.items()],
        }, when, "jma-feed")

    def report(self, client_id: str, area_id: str, category: str, severity: int,
               when: datetime, description: str, team: str = "神田公園地区 防災会") -> None:
        report = {
            "client_report_id": client_id, "category": category, "severity": severity,
            "area_id": area_id, "description": description, "reporter": {"team": team},
        }
        self._add(ReportAccepted, {
            "report_id": derive_id("report", team, client_id),
            "submitted_event_id": derive_id("golden", self.name, "submitted", client_id),
            "report": report, "outside_region": False, "area_id": area_id,
        }, when, "intake")

    def command(self, action: str, when: datetime, *, role: str | None = "hq",
                operator: str = "hq-duty-officer", **fields: Any) -> None:
        payload = {"action": action, "operator": operator, "operator_role": role,
                   **{k: v for k, v in fields.items() if v is not None}}
        self._add(EvacuationCommand, payload, when, "gateway")

    # --- lookups in the engine's state ---

    def rec(self, area_id: str, hazard: str) -> UUID:
        """The open recommendation for (area, hazard)."""
        cell = self.state.cells[cell_key(area_id, Hazard(hazard))]
        assert cell.open_recommendation_id is not None, (area_id, hazard)
        return cell.open_recommendation_id

    def order(self, area_id: str, hazard: str) -> UUID:
        """The active order for (area, hazard)."""
        cell = self.state.cells[cell_key(area_id, Hazard(hazard))]
        assert cell.order_id is not None, (area_id, hazard)
        return cell.order_id

    def write(self) -> None:
        directory = HERE / self.name
        directory.mkdir(exist_ok=True)
        with (directory / "input.jsonl").open("w", encoding="utf-8") as f:
            for event in self.events:
                f.write(json.dumps(json.loads(encode_event(event)), ensure_ascii=False,
                                   sort_keys=True) + "\n")


def heavy_rain() -> Scenario:
    """神田川 rises past 避難判断水位, 氾濫危険水位, to flooding; HQ decides; it falls; lifts."""
    s = Scenario("heavy-rain-kandagawa", (2025, 8, 21))
    at = s.at
    s.shelter("e1310100005201", "open", 120, at("13:50"))    # 神田一橋中学校 (jimbocho)
    s.shelter("e1310100001201", "open", 80, at("13:50"))     # 九段小学校 (fujimi)
    s.shelter("e1310100007201", "full", 300, at("13:50"))    # 神田さくら館 (kanda-koen)
    s.shelter("e1310100006201", "closing", 40, at("13:50"))  # 区立スポーツセンター
    kanda = [
        ("14:00", 3.10), ("14:10", 3.60), ("14:20", 4.05), ("14:30", 4.30), ("14:40", 4.55),
        ("14:50", 4.90), ("15:00", 5.05), ("15:10", 4.70), ("15:20", 4.20), ("15:30", 3.80),
        ("15:40", 3.40), ("15:50", 3.60), ("16:00", 3.30), ("16:10", 3.10), ("16:20", 2.95),
        ("16:30", 2.80), ("16:40", 2.70), ("16:50", 2.60), ("17:00", 2.50), ("17:10", 2.45),
        ("17:20", 2.40), ("17:30", 2.35), ("17:40", 2.30), ("17:50", 2.25), ("18:00", 2.20),
    ]
    # 日本橋川 reports once, falls silent (stale at 14:30), and is back from 15:10.
    nihonbashi = [("14:00", 2.10)] + [
        (f"{h:02d}:{m:02d}", 2.20 - 0.01 * i)
        for i, (h, m) in enumerate((h, m) for h in range(15, 18) for m in range(0, 60, 10)
                                   if (h, m) >= (15, 10))
    ] + [("18:00", 2.00)]
    commands: dict[str, Any] = {}

    def decide_l3() -> None:
        s.command("approve", at("14:35"), recommendation_id=s.rec("jimbocho", "flood"),
                  reason="神保町地区は低地が多く、高齢者等の避難を優先する。")
        s.command("approve", at("14:35"), recommendation_id=s.rec("manseibashi", "flood"))
        s.command("reject", at("14:36"), recommendation_id=s.rec("fujimi", "flood"),
                  reason="富士見地区の浸水想定は限定的。現地確認まで見送る。")
        # A field team's token cannot decide: refused with the reason.
        s.command("approve", at("14:37"), role="field", operator="izumibashi-team-2",
                  recommendation_id=s.rec("izumibashi", "flood"))
        commands["izumibashi-l3"] = s.rec("izumibashi", "flood")

    def decide_l4() -> None:
        for area in ("jimbocho", "manseibashi", "fujimi", "izumibashi"):
            s.command("approve", at("14:55"), recommendation_id=s.rec(area, "flood"))
        # Approving the level-3 recommendation that the level-4 one replaced is refused.
        s.command("approve", at("14:56"), recommendation_id=commands["izumibashi-l3"])

    def decide_lifts() -> None:
        for area in ("fujimi", "jimbocho", "manseibashi", "izumibashi"):
            s.command("approve", at("18:05"), recommendation_id=s.rec(area, "flood"),
                      reason="神田川の水位が氾濫注意水位を2時間以上下回ったため解除。")

    def flooding_reports() -> None:
        # With 神田川 above 氾濫危険水位, flooding reported along it counts as 氾濫発生.
        s.report("flood-101", "manseibashi", "flooding", 4, at("15:02"),
                 "外神田一丁目で神田川から水があふれ道路が冠水。", team="万世橋地区 防災会")
        s.report("flood-102", "manseibashi", "flooding", 5, at("15:05"),
                 "神田須田町で床上浸水。取り残された住民あり。", team="万世橋地区 防災会")

    def decide_l5() -> None:
        s.command("approve", at("15:08"), recommendation_id=s.rec("manseibashi", "flood"))
        s.command("approve", at("15:08"), recommendation_id=s.rec("izumibashi", "flood"))
        for area in ("fujimi", "jimbocho"):
            s.command("reject", at("15:09"), recommendation_id=s.rec(area, "flood"),
                      reason="越水は万世橋付近に限られ、この地区は避難指示で対応する。")

    timeline: list[tuple[datetime, Any]] = []
    timeline += [(at(t), partial(s.gauge, "kandagawa-ochanomizu", v, at(t))) for t, v in kanda]
    timeline += [(at(t), partial(s.gauge, "nihonbashigawa-manaitabashi", v, at(t)))
                 for t, v in nihonbashi]
    timeline += [
        (at("14:35"), decide_l3),
        (at("14:45"), lambda: s.shelter("e1310100001201", "full", 500, s.at("14:45"))),
        (at("14:46"), lambda: s.shelter("e1310100005201", "crowded", 420, s.at("14:46"))),
        (at("14:55"), decide_l4),
        (at("15:02"), flooding_reports),
        (at("15:08"), decide_l5),
        (at("18:05"), decide_lifts),
    ]
    # Stable sort: same-minute entries keep their listed order (kandagawa first).
    for _, add in sorted(timeline, key=lambda item: item[0]):
        add()
    return s


def landslide() -> Scenario:
    """土砂災害警戒情報, then a CAP-ingested 大雨特別警報, manual orders, cancellation and lifts."""
    s = Scenario("landslide-warning", (2025, 9, 3))
    at = s.at
    s.shelter("e1310100001201", "open", 60, at("09:00"))     # 九段小学校 (fujimi)
    s.shelter("e1310100003201", "opening", 0, at("09:00"))   # 麹町中学校 (kojimachi)
    s.shelter("e1310100028201", "full", 500, at("09:00"))    # 麹町小学校 (kojimachi)
    s.warning("jma-20250903-0910-landslide", "landslide_alert", "土砂災害警戒情報", 4,
              ["fujimi", "kojimachi"], at("09:10"), hazard="landslide")
    s.command("approve", at("09:15"), recommendation_id=s.rec("fujimi", "landslide"))
    s.command("approve", at("09:16"), recommendation_id=s.rec("kojimachi", "landslide"),
              reason="紀尾井町周辺の急傾斜地を優先して避難を呼びかける。")
    s.warning("urn:oid:2.49.0.1.392.0.2025.09.03.0940", "heavy_rain_emergency",
              "大雨特別警報（土砂災害）", 5, ["fujimi"], at("09:40"), hazard="landslide",
              source="cap", cap_identifier="urn:oid:2.49.0.1.392.0.2025.09.03.0940")
    s.command("approve", at("09:45"), recommendation_id=s.rec("fujimi", "landslide"))
    # A site not designated for landslides is refused for a landslide order.
    s.command("issue", at("10:00"), area_ids=["jimbocho"], level=3, hazard="landslide",
              designated_shelter_ids=["e1310100016201"],
              reason="神保町地区の崖地に高齢者等避難を手動で発令。")
    s.command("issue", at("10:01"), area_ids=["jimbocho"], level=3, hazard="landslide",
              reason="神保町地区の崖地に高齢者等避難を手動で発令。")
    s.shelter("e1310100003201", "open", 35, at("10:30"))
    s.warning("urn:oid:2.49.0.1.392.0.2025.09.03.0940", "heavy_rain_emergency",
              "大雨特別警報（土砂災害）", 5, ["fujimi"], at("11:00"), hazard="landslide",
              action="cancelled", source="cap",
              cap_identifier="urn:oid:2.49.0.1.392.0.2025.09.03.1100")
    s.warning("jma-20250903-0910-landslide", "landslide_alert", "土砂災害警戒情報", 4,
              ["fujimi", "kojimachi"], at("12:00"), hazard="landslide", action="cancelled")
    s.shelter("e1310100003201", "open", 20, at("12:30"))
    # An hour after the cancellation: the lift recommendations come with this event.
    s.shelter("e1310100001201", "open", 25, at("13:05"))
    s.command("approve", at("13:10"), recommendation_id=s.rec("fujimi", "landslide"),
              reason="警戒情報の解除から1時間、新たな土砂災害の報告なし。")
    s.command("reject", at("13:11"), recommendation_id=s.rec("kojimachi", "landslide"),
              reason="紀尾井町の斜面で亀裂の報告があり、現地確認まで継続する。")
    s.command("lift", at("13:20"), order_id=s.order("jimbocho", "landslide"),
              reason="神保町地区の崖地を点検し、異常なし。")
    s.command("lift", at("14:00"), order_id=s.order("kojimachi", "landslide"),
              reason="紀尾井町の斜面を点検し、亀裂は古いものと確認。")
    return s


def earthquake_fires() -> Scenario:
    """A strong earthquake, then a cluster of fire reports in one district."""
    s = Scenario("earthquake-fires", (2025, 11, 14))
    at = s.at
    s.quake("20251114020012", 7.1, "東京湾北部",
            {"kanda-koen": "6-", "izumibashi": "6-", "manseibashi": "5+", "jimbocho": "5-",
             "kojimachi": "4"}, at("02:00"))
    s.command("approve", at("02:10"), recommendation_id=s.rec("kanda-koen", "earthquake"))
    s.command("approve", at("02:10"), recommendation_id=s.rec("izumibashi", "earthquake"))
    s.command("approve", at("02:11"), recommendation_id=s.rec("manseibashi", "earthquake"))
    s.shelter("e1310100006201", "opening", 0, at("02:12"))
    s.shelter("e1310100011201", "open", 150, at("02:14"))
    izumibashi = "和泉橋地区 防災会"
    s.report("fire-001", "kanda-koen", "fire", 4, at("02:15"),
             "神田司町二丁目で木造住宅が燃えている。")
    s.report("fire-002", "izumibashi", "fire", 4, at("02:20"), "岩本町で火災。延焼のおそれ。",
             team=izumibashi)
    s.report("fire-003", "kanda-koen", "fire", 5, at("02:22"),
             "内神田一丁目で延焼中。逃げ遅れあり。")
    # Accepted twice (a resend): counted once.
    s.report("fire-003", "kanda-koen", "fire", 5, at("02:23"),
             "内神田一丁目で延焼中。逃げ遅れあり。")
    s.report("fire-004", "kanda-koen", "fire", 3, at("02:25"), "神田多町でぼや。")
    s.report("fire-005", "kanda-koen", "fire", 4, at("02:31"), "神田鍛冶町で複数棟が延焼。")
    s.command("approve", at("02:40"), recommendation_id=s.rec("kanda-koen", "large_fire"),
              reason="消防の情報とも一致。延焼拡大に備え避難指示。")
    s.report("fire-006", "izumibashi", "fire", 4, at("02:52"), "東神田で火災。", team=izumibashi)
    s.quake("20251114031545", 5.4, "東京湾北部", {"kanda-koen": "5+", "izumibashi": "5-"},
            at("03:15"))
    s.shelter("e1310100006201", "open", 310, at("03:30"))
    # Three hours after the fire cluster's window closed: a lift is recommended.
    s.shelter("e1310100011201", "crowded", 420, at("05:50"))
    return s


def main() -> None:
    for scenario in (heavy_rain(), landslide(), earthquake_fires()):
        scenario.write()
        print(f"{scenario.name}: {len(scenario.events)} events")


if __name__ == "__main__":
    main()
