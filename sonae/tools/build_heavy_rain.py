"""Write the shipped demo scenario ``chiyoda-heavy-rain.jsonl`` (run by hand, output checked in).

It lives in the composition root because it runs two services' pure cores (the
shelter tracker and the evacuation engine) to compute the reference decisions.

    .venv/bin/python -m sonae.tools.build_heavy_rain

A heavy-rain afternoon in 千代田区, 12:40–18:00 JST (illustrative: the gauge and
its thresholds are the region pack's illustrative ones):

- 大雨注意報 at 12:40 (level 2: informs, decides nothing);
- 神田川 at お茶の水橋 (``kandagawa-ochanomizu``, every 10 minutes) rises through
  氾濫注意水位 3.5 m, 避難判断水位 4.2 m (level 3 for its four districts) and
  氾濫危険水位 4.8 m (level 4), peaks at 5.1 m, and falls below 氾濫注意水位 at 15:40;
- flooding reported in 万世橋 and 和泉橋 with the river above 氾濫危険水位
  (flooding observed: level 5), water on roads in 神保町;
- four flood shelters open and fill (one becomes crowded, one full), and empty
  again in the evening;
- 土砂災害警戒情報 for 富士見 and 麹町 (level 4, landslide), cancelled at 16:40;
- HQ approves most recommendations within minutes, rejects one, and approves
  the lifts proposed two hours (flood) and one hour (landslide) after the all-clear;
- people and supplies (illustrative households, no real person): households check
  in at 区立スポーツセンター and 神田一橋中学校 beside the typed head counts, one is
  transferred to 九段小学校 and some go home; residents sheltering at home in 神保町
  and 万世橋 report their needs, one asks for a welfare check and is visited; two
  supply requests (water, then blankets and toilets) go from requested to received;
  a 町会's generator runs, runs low on fuel and gets its fuel; with 総武線 stopped,
  stranded commuters fill the (illustrative) facility at 秋葉原 to crowded.

The log is what a recorded day would be: the inputs (reports as submitted and
accepted, shelter updates, hazard observations, HQ commands) and, as references,
the decisions of an "original run". That run is computed here with the pure
shelter tracker and the pure evacuation engine, which is also how the HQ
commands learn the recommendation ids they answer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any, Final
from uuid import UUID

from schemas.envelope import Envelope, derive_id, new_event
from schemas.evacuation import EvacuationCommand, RecommendationKind
from schemas.events import Event, decode_event, encode_event
from schemas.hazards import GaugeReading, Hazard, HazardWarning
from schemas.people import AtHomeReported, HouseholdCheckedIn, HouseholdCheckedOut, WelfareChecked
from schemas.region import load_pack_section, load_region
from schemas.reports import ReportAccepted, ReportSubmitted
from schemas.shelters import ShelterNeedsReported, ShelterOccupancyReported, ShelterOpened
from schemas.supplies import (
    GeneratorRegistered,
    GeneratorStatusReported,
    SupplyAssigned,
    SupplyDispatched,
    SupplyReceived,
    SupplyRequested,
)
from services.drill.logformat import DrillLog, RecordedFrom, build_log, write_log
from services.drill.scenarios import scenario_path
from services.evacuation.config import load_config
from services.evacuation.engine import step
from services.evacuation.state import DecisionState, RecommendationStatus
from services.shelter_tracker.domain import (
    ShelterPackSection,
    ShelterUpdate,
    Tracked,
    decide,
    shelter_sites,
)

__all__ = ["DESCRIPTION", "NAME", "Run", "build", "main", "write"]

NAME: Final = "chiyoda-heavy-rain"
OUTPUT: Final = scenario_path(NAME)
JST: Final = timezone(timedelta(hours=9), "JST")
DAY: Final = (2025, 8, 21)
GAUGE: Final = "kandagawa-ochanomizu"
HQ: Final = "hq-duty-officer"

REGION = load_region("chiyoda")
NAMES = REGION.names("ja")
SITES = shelter_sites(REGION)
THRESHOLDS = load_pack_section("chiyoda", "shelters.toml", ShelterPackSection).thresholds


def at(hhmm: str) -> datetime:
    """A time of the scenario's day, JST."""
    hour, minute = (int(part) for part in hhmm.split(":"))
    return datetime(*DAY, hour, minute, tzinfo=JST)


class Run:
    """The scenario as it unfolds: inputs in order, and the original run's decisions."""

    def __init__(self) -> None:
        self.config = load_config("chiyoda")
        self.state = DecisionState()
        self.tracked: dict[str, Tracked] = {}
        self.inputs: list[Envelope] = []
        self.references: list[Envelope] = []

    def _id(self, *parts: str) -> UUID:
        return derive_id("scenario", NAME, *parts)

    def _decide(self, event: Event) -> None:
        """Feed an event to the pure engine, as the decision service would."""
        self.state, emitted = step(self.config, self.state, event)
        self.references.extend(e for e in emitted if e.type != "hazard.data_quality")

    def _add(self, cls: type[Envelope], payload: dict[str, Any], when: datetime, source: str,
             name: str, cause: Envelope | None = None) -> Event:
        made = new_event(cls, payload, occurred_at=when, source=source, cause=cause,
                         recorded_at=when + timedelta(seconds=2), event_id=self._id(name))
        event = decode_event(encode_event(made))  # as the union member, canonical
        self.inputs.append(event)
        return event

    # --- inputs ---------------------------------------------------------------------

    def gauge(self, when: datetime, level_m: float) -> None:
        event = self._add(GaugeReading, {"gauge_id": GAUGE, "level_m": level_m,
                                         "observed_at": when}, when, "gauge-feed",
                          f"gauge-{when:%H%M}")
        self._decide(event)

    def warning(self, when: datetime, warning_id: str, kind: str, name: str, level: int,
                areas: list[str], hazard: str | None, action: str = "issued") -> None:
        event = self._add(HazardWarning, {
            "warning_id": warning_id, "action": action, "kind": kind, "name": name,
            "hazard": hazard, "alert_level_equivalent": level, "area_ids": areas,
            "issued_at": when, "source": "jma",
        }, when, "jma-feed", f"warning-{warning_id}-{action}-{when:%H%M}")
        self._decide(event)

    def report(self, when: datetime, client_id: str, area_id: str, severity: int,
               description: str, team: str, category: str = "flooding") -> None:
        body = {"client_report_id": client_id, "category": category, "severity": severity,
                "area_id": area_id, "description": description, "reporter": {"team": team}}
        submitted = self._add(ReportSubmitted, body, when, "intake", f"submitted-{client_id}")
        accepted = self._add(ReportAccepted, {
            "report_id": derive_id("report", team, client_id),
            "submitted_event_id": submitted.event_id, "report": body,
            "outside_region": False, "area_id": area_id,
        }, when + timedelta(seconds=1), "intake", f"accepted-{client_id}", cause=submitted)
        self._decide(accepted)

    def _shelter(self, cls: type[Envelope], when: datetime, shelter_id: str, name: str,
                 **fields: Any) -> None:
        team = {"team": f"{NAMES[shelter_id]} 避難所運営班"}
        event = self._add(cls, {"shelter_id": shelter_id, "reported_by": team, **fields},
                          when, "intake", f"{name}-{shelter_id}-{when:%H%M}")
        assert isinstance(event, ShelterUpdate)
        decision = decide(self.tracked.get(shelter_id, Tracked()), event, SITES[shelter_id],
                          recorded_at=event.recorded_at, thresholds=THRESHOLDS)
        assert decision.rejection is None, decision.reason
        self.tracked[shelter_id] = decision.tracked
        changed = decision.state_changed
        if changed is not None:
            self._decide(changed)

    def opening(self, when: datetime, shelter_id: str, stage: str = "open") -> None:
        self._shelter(ShelterOpened, when, shelter_id, f"opened-{stage}", stage=stage)

    def count(self, when: datetime, shelter_id: str, occupancy: int) -> None:
        self._shelter(ShelterOccupancyReported, when, shelter_id, "count", occupancy=occupancy)

    def needs(self, when: datetime, shelter_id: str, **needs: str) -> None:
        self._shelter(ShelterNeedsReported, when, shelter_id, "needs", needs=needs)

    def checkin(self, when: datetime, shelter_id: str, code: str, size: int,
                *needs: str, transferred_from: str | None = None) -> None:
        self._shelter(HouseholdCheckedIn, when, shelter_id, f"checkin-{code}",
                      household_code=code, size=size, needs=list(needs),
                      **({"transferred_from": transferred_from} if transferred_from else {}))

    def checkout(self, when: datetime, shelter_id: str, code: str,
                 transferred_to: str | None = None) -> None:
        self._shelter(HouseholdCheckedOut, when, shelter_id, f"checkout-{code}",
                      household_code=code,
                      **({"transferred_to": transferred_to} if transferred_to else {}))

    def transfer(self, when: datetime, source: str, destination: str, code: str, size: int,
                 *needs: str) -> None:
        """Both halves of a transfer, as intake writes them in one transaction."""
        self.checkout(when, source, code, transferred_to=destination)
        self.checkin(when, destination, code, size, *needs, transferred_from=source)

    def at_home(self, when: datetime, name: str, area_id: str, size: int, *needs: str,
                team: str | None = None) -> None:
        household_id = self._id("at-home", name)
        via = {"via": "field", "reported_by": {"team": team}} if team else {"via": "public"}
        self._add(AtHomeReported, {"household_id": household_id, "area_id": area_id,
                                   "size": size, "needs": list(needs), **via},
                  when, "intake", f"at-home-{name}")

    def welfare(self, when: datetime, household_id: UUID, area_id: str, outcome: str,
                team: str) -> None:
        self._add(WelfareChecked, {"household_id": household_id, "area_id": area_id,
                                   "outcome": outcome, "checked_by": team},
                  when, "intake", f"welfare-{household_id}-{when:%H%M}")

    def supplies(self, name: str, site_id: str, area_id: str, lines: list[dict[str, Any]],
                 urgency: str, steps: list[tuple[datetime, str]],
                 requester_kind: str = "shelter") -> None:
        """A supply request made at ``steps[0]`` and taken through the other steps."""
        request_id = self._id("supply", name)
        made, *rest = steps
        team = {"team": f"{NAMES[site_id]} 運営班"}
        requested = self._add(SupplyRequested, {
            "request_id": request_id, "requester_kind": requester_kind, "site_id": site_id,
            "area_id": area_id, "lines": lines, "urgency": urgency, "requested_by": team,
        }, made[0], "intake", f"supply-{name}")
        classes = {"assigned": SupplyAssigned, "dispatched": SupplyDispatched,
                   "received": SupplyReceived}
        for when, step_name in rest:
            extra = {"assignee": "区役所 備蓄倉庫班"} if step_name == "assigned" else {}
            by = "shelter-staff" if step_name == "received" else HQ
            self._add(classes[step_name], {"request_id": request_id, "by": by, **extra},
                      when, "intake", f"supply-{name}-{step_name}", cause=requested)

    def generator(self, when: datetime, state: str, fuel_hours_left: float | None) -> None:
        self._add(GeneratorStatusReported, {
            "generator_id": GENERATOR, "state": state, "fuel_hours_left": fuel_hours_left,
            "reported_by": {"team": "神田司町二丁目町会"},
        }, when, "intake", f"generator-{state}-{when:%H%M}")

    def register_generator(self, when: datetime) -> None:
        self._add(GeneratorRegistered, {
            "generator_id": GENERATOR, "owner": "神田司町二丁目町会",
            "site_id": KANDA_SPORTS, "area_id": "kanda-koen",
            "location": {"lat": 35.6936, "lon": 139.7676}, "fuel": "gasoline",
            "rated_kva": 2.8, "runtime_full_hours": 8.0, "registered_by": HQ,
        }, when, "intake", "generator-registered")

    def command(self, when: datetime, action: str, reason: str | None = None,
                **fields: Any) -> None:
        payload = {"action": action, "operator": HQ, "operator_role": "hq",
                   **({"reason": reason} if reason else {}), **fields}
        event = self._add(EvacuationCommand, payload, when, "gateway",
                          f"command-{action}-{when:%H%M}-{len(self.inputs)}")
        self._decide(event)

    # --- HQ -------------------------------------------------------------------------

    def open_recommendations(self, hazard: str, kind: RecommendationKind | None = None
                             ) -> list[tuple[str, UUID, int]]:
        """(area, recommendation id, level) of the open recommendations for ``hazard``."""
        out = []
        for rec in self.state.recommendations.values():
            if rec.status is RecommendationStatus.OPEN and rec.hazard is Hazard(hazard) \
                    and (kind is None or rec.kind is kind):
                out.append((rec.area_id, rec.recommendation_id, rec.level))
        return sorted(out)

    def decide_all(self, when: datetime, hazard: str, *, reject: dict[str, str] | None = None,
                   reason: str | None = None, kind: RecommendationKind | None = None) -> None:
        """HQ approves every open recommendation for ``hazard`` (rejecting those named)."""
        reject = reject or {}
        for minute, (area, rec_id, _level) in enumerate(self.open_recommendations(hazard, kind)):
            moment = when + timedelta(seconds=40 * minute)
            if area in reject:
                self.command(moment, "reject", reject[area], recommendation_id=str(rec_id))
            else:
                self.command(moment, "approve", reason, recommendation_id=str(rec_id))


KANDA: Final = [
    ("13:00", 2.40), ("13:10", 2.55), ("13:20", 2.80), ("13:30", 3.15), ("13:40", 3.55),
    ("13:50", 3.90), ("14:00", 4.25), ("14:10", 4.50), ("14:20", 4.85), ("14:30", 5.00),
    ("14:40", 5.10), ("14:50", 4.95), ("15:00", 4.60), ("15:10", 4.20), ("15:20", 3.90),
    ("15:30", 3.60), ("15:40", 3.30), ("15:50", 3.10), ("16:00", 2.95), ("16:10", 2.80),
    ("16:20", 2.70), ("16:30", 2.60), ("16:40", 2.50), ("16:50", 2.45), ("17:00", 2.40),
    ("17:10", 2.35), ("17:20", 2.30), ("17:30", 2.25), ("17:40", 2.20), ("17:50", 2.20),
    ("18:00", 2.15),
]
"""神田川 at お茶の水橋 (m): 避難判断水位 at 14:00, 氾濫危険水位 at 14:20,
below 氾濫注意水位 from 15:40."""

KANDA_SPORTS = "e1310100006201"  # 区立スポーツセンター (神田公園, 800)
HITOTSUBASHI = "e1310100005201"  # 神田一橋中学校 (神保町, 500)
KUDAN = "e1310100001201"         # 九段小学校 (富士見, 500)
JIMBOCHO_2 = "e1310100031201"    # お茶の水小学校 (神保町, 500)
LANDSLIDE_WARNING = "jma-20250821-1445-landslide"
GENERATOR = "kanda-tsukasa-gen-1"  # 神田司町二丁目町会's generator (illustrative)
AKIHABARA_FACILITY = "ts-akihabara"  # a stranded-commuter facility (illustrative, 800)


def people(run: Run) -> list[tuple[str, Callable[[], None]]]:
    """Households at shelters, residents at home, supplies and a generator (illustrative)."""
    m = run
    checkins = [
        ("14:05", KANDA_SPORTS, "4H7K2M9Q", 3, ("infant",)),
        ("14:08", KANDA_SPORTS, "7RX3PZ5N", 1, ("wheelchair",)),
        ("14:10", HITOTSUBASHI, "9B2DW6TA", 4, ()),
        ("14:12", HITOTSUBASHI, "3MQ8VJ4C", 2, ("language",)),
        ("14:40", KANDA_SPORTS, "6FN5GT2W", 2, ("pet",)),
        ("14:41", KANDA_SPORTS, "2KD9RS7E", 5, ("medical_care", "dietary")),
        ("14:52", HITOTSUBASHI, "8YT4HB3X", 3, ("infant",)),
    ]
    out: list[tuple[str, Callable[[], None]]] = [
        (t, partial(m.checkin, at(t), site, code, size, *needs))
        for t, site, code, size, needs in checkins]
    jimbocho_elder = "jimbocho-elder"
    out += [
        ("15:30", lambda: m.transfer(at("15:30"), HITOTSUBASHI, KUDAN, "3MQ8VJ4C", 2,
                                     "language")),
        ("17:10", lambda: m.checkout(at("17:10"), KANDA_SPORTS, "6FN5GT2W")),
        ("17:40", lambda: m.checkout(at("17:40"), HITOTSUBASHI, "9B2DW6TA")),
        ("14:50", lambda: m.at_home(at("14:50"), "manseibashi-upper-floor", "manseibashi", 3,
                                    "water", "food")),
        ("15:10", lambda: m.at_home(at("15:10"), jimbocho_elder, "jimbocho", 1,
                                    "medicine", "medical_power", "welfare_check")),
        ("15:40", lambda: m.at_home(at("15:40"), "jimbocho-family", "jimbocho", 4, "water",
                                    team="神保町地区 防災会")),
        ("16:30", lambda: m.welfare(at("16:30"), m._id("at-home", jimbocho_elder), "jimbocho",
                                    "safe", "jimbocho-team-1")),
        ("15:22", lambda: m.supplies(
            "hitotsubashi-water", HITOTSUBASHI, "jimbocho",
            [{"item": "water", "quantity": 400, "note": "2 L ペットボトル"}], "urgent",
            [(at("15:22"), "requested"), (at("15:28"), "assigned"), (at("15:40"), "dispatched"),
             (at("16:10"), "received")])),
        ("15:50", lambda: m.supplies(
            "sports-blankets", KANDA_SPORTS, "kanda-koen",
            [{"item": "blankets", "quantity": 300}, {"item": "hygiene", "quantity": 40,
                                                     "note": "簡易トイレ"}], "routine",
            [(at("15:50"), "requested"), (at("16:05"), "assigned"), (at("16:25"), "dispatched"),
             (at("17:05"), "received")])),
        # 総武線 stops (water on the tracks at 秋葉原): commuters wait at a facility.
        ("14:42", lambda: m.opening(at("14:42"), AKIHABARA_FACILITY)),
        ("15:02", lambda: m.count(at("15:02"), AKIHABARA_FACILITY, 180)),
        ("15:32", lambda: m.count(at("15:32"), AKIHABARA_FACILITY, 470)),
        ("16:02", lambda: m.count(at("16:02"), AKIHABARA_FACILITY, 660)),
        ("17:02", lambda: m.count(at("17:02"), AKIHABARA_FACILITY, 240)),
        ("12:40", lambda: m.register_generator(at("12:40"))),
        ("14:20", lambda: m.generator(at("14:20"), "running", 8.0)),
        ("16:50", lambda: m.generator(at("16:50"), "fuel_low", 1.5)),
        ("17:20", lambda: m.generator(at("17:20"), "running", 8.0)),
    ]
    return out


def timeline(run: Run) -> list[tuple[datetime, Callable[[], None]]]:
    """Everything that happens, with its time; same-minute entries keep this order."""
    m = run
    events: list[tuple[datetime, Callable[[], None]]] = [
        (at("12:40"), lambda: m.warning(at("12:40"), "jma-20250821-1240-advisory",
                                        "heavy_rain_advisory", "大雨注意報", 2,
                                        [d.id for d in REGION.districts], None)),
    ]
    events += [(at(t), partial(m.gauge, at(t), v)) for t, v in KANDA]
    flooding = [
        ("14:24", "msb-0001", "manseibashi", 4, "外神田一丁目、神田川沿いの道路が冠水。",
         "万世橋地区 防災会"),
        ("14:31", "izb-0001", "izumibashi", 4, "神田佐久間町で道路冠水、車両が立ち往生。",
         "和泉橋地区 防災会"),
        ("14:33", "msb-0002", "manseibashi", 5,
         "神田須田町で神田川から越水、床上浸水。取り残された住民あり。", "万世橋地区 防災会"),
        ("14:38", "izb-0002", "izumibashi", 5, "神田和泉町の地下室に浸水、2名救助要請。",
         "和泉橋地区 防災会"),
        ("14:42", "jbc-0001", "jimbocho", 3, "西神田の交差点で冠水、通行困難。",
         "神保町地区 防災会"),
        ("15:05", "jbc-0002", "jimbocho", 3, "神田三崎町の側溝があふれている。",
         "神保町地区 防災会"),
    ]
    events += [(at(t), partial(m.report, at(t), c, a, s, d, team))
               for t, c, a, s, d, team in flooding]
    shelters = [
        ("13:45", lambda: m.opening(at("13:45"), HITOTSUBASHI, "opening")),
        ("13:45", lambda: m.opening(at("13:45"), KANDA_SPORTS, "opening")),
        ("13:55", lambda: m.opening(at("13:55"), HITOTSUBASHI)),
        ("13:55", lambda: m.opening(at("13:55"), KANDA_SPORTS)),
        ("14:03", lambda: m.opening(at("14:03"), KUDAN)),
        ("14:15", lambda: m.count(at("14:15"), HITOTSUBASHI, 90)),
        ("14:15", lambda: m.count(at("14:15"), KANDA_SPORTS, 140)),
        ("14:26", lambda: m.opening(at("14:26"), JIMBOCHO_2)),
        ("14:35", lambda: m.count(at("14:35"), HITOTSUBASHI, 260)),
        ("14:35", lambda: m.count(at("14:35"), KANDA_SPORTS, 380)),
        ("14:45", lambda: m.count(at("14:45"), KUDAN, 120)),
        ("14:55", lambda: m.count(at("14:55"), HITOTSUBASHI, 410)),
        ("14:55", lambda: m.count(at("14:55"), KANDA_SPORTS, 560)),
        ("15:00", lambda: m.count(at("15:00"), JIMBOCHO_2, 230)),
        ("15:15", lambda: m.count(at("15:15"), HITOTSUBASHI, 500)),
        ("15:15", lambda: m.count(at("15:15"), KANDA_SPORTS, 660)),
        ("15:20", lambda: m.needs(at("15:20"), HITOTSUBASHI, water="low", food="ok")),
        ("15:25", lambda: m.count(at("15:25"), KUDAN, 240)),
        ("15:35", lambda: m.count(at("15:35"), JIMBOCHO_2, 360)),
        ("15:45", lambda: m.count(at("15:45"), KANDA_SPORTS, 700)),
        ("16:15", lambda: m.count(at("16:15"), HITOTSUBASHI, 430)),
        ("16:15", lambda: m.count(at("16:15"), KANDA_SPORTS, 610)),
        ("16:20", lambda: m.needs(at("16:20"), HITOTSUBASHI, water="ok")),
        ("16:45", lambda: m.count(at("16:45"), KUDAN, 150)),
        ("17:00", lambda: m.count(at("17:00"), HITOTSUBASHI, 300)),
        ("17:00", lambda: m.count(at("17:00"), KANDA_SPORTS, 420)),
        ("17:30", lambda: m.count(at("17:30"), JIMBOCHO_2, 180)),
        ("17:55", lambda: m.count(at("17:55"), HITOTSUBASHI, 160)),
        ("17:55", lambda: m.count(at("17:55"), KANDA_SPORTS, 250)),
    ]
    events += [(at(t), add) for t, add in shelters]
    landslide = ["fujimi", "kojimachi"]
    events += [
        (at("14:45"), lambda: m.warning(at("14:45"), LANDSLIDE_WARNING, "landslide_alert",
                                        "土砂災害警戒情報", 4, landslide, "landslide")),
        (at("16:40"), lambda: m.warning(at("16:40"), LANDSLIDE_WARNING, "landslide_alert",
                                        "土砂災害警戒情報", 4, landslide, "landslide",
                                        action="cancelled")),
    ]
    hq = [
        # Level 3 (避難判断水位): 富士見 is rejected; the rest approved.
        ("14:06", lambda: m.decide_all(at("14:06"), "flood", reject={
            "fujimi": "富士見地区の浸水想定区域は限られる。水位の推移を見て判断する。"},
            reason="神田川が避難判断水位に到達。高齢者等の避難を開始する。")),
        # Level 4 (氾濫危険水位): all four, 富士見 included.
        ("14:24", lambda: m.decide_all(at("14:24"), "flood",
                                       reason="神田川が氾濫危険水位を超過。")),
        # Level 5 after flooding reported along the river.
        ("14:36", lambda: m.decide_all(at("14:36"), "flood",
                                       reason="越水・浸水の報告あり。緊急安全確保。")),
        ("14:50", lambda: m.decide_all(at("14:50"), "landslide",
                                       reason="土砂災害警戒情報の発表を受けて避難指示。")),
        # Lifts, proposed by the rules after the hysteresis periods.
        ("17:45", lambda: m.decide_all(at("17:45"), "landslide", kind=RecommendationKind.LIFT,
                                       reason="警戒情報の解除から1時間、土砂災害の報告なし。")),
        ("17:50", lambda: m.decide_all(at("17:50"), "flood", kind=RecommendationKind.LIFT,
                                       reason="神田川が氾濫注意水位を2時間以上下回った。")),
    ]
    events += [(at(t), add) for t, add in hq]
    events += [(at(t), add) for t, add in people(run)]
    return events


DESCRIPTION: Final = ("大雨の午後（千代田区）: 神田川の増水と氾濫危険水位超過、"
                      "万世橋・和泉橋の浸水、避難所の開設と混雑、土砂災害警戒情報、解除まで。"
                      "Illustrative data.")


def build(run: Run | None = None, *, description: str = DESCRIPTION,
          generator: str = "sonae/tools/build_heavy_rain.py") -> DrillLog:
    """The scenario as a drill log (``run``: a variant of how inputs are made)."""
    run = run or Run()
    for _, add in sorted(timeline(run), key=lambda item: item[0]):
        add()
    return build_log(
        [*run.inputs, *run.references], region="chiyoda",
        recorded_from=RecordedFrom(kind="scenario", generator=generator),
        since=at("12:40"), until=at("18:01"), description=description,
    )


def write(log: DrillLog, output: Path) -> None:
    """Write ``log`` to ``output`` and say what it holds."""
    with output.open("wb") as out:
        write_log(log, out)
    kinds: dict[str, int] = {}
    for event in log.references:
        kinds[event.type] = kinds.get(event.type, 0) + 1
    print(f"{output.name}: {log.header.inputs} inputs, {log.header.references} references "
          f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})", file=sys.stderr)


def main() -> None:
    write(build(), OUTPUT)


if __name__ == "__main__":
    main()
