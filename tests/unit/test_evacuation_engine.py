"""The pure evacuation decision engine, rule by rule and through the order lifecycle."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.envelope import Envelope, derive_id, new_event
from schemas.evacuation import (
    CommandRejected,
    EvacuationCommand,
    EvacuationRecommended,
    OrderIssued,
    OrderLifted,
    OrderUpdated,
    RecommendationClosed,
)
from schemas.events import Event
from schemas.examples import example
from schemas.hazards import (
    GaugeReading,
    Hazard,
    HazardDataQuality,
    HazardWarning,
    SeismicIntensity,
)
from schemas.region import load_region
from schemas.reports import ReportAccepted
from schemas.shelters import ShelterStatus, ShelterStatusChanged
from services.evacuation.config import EngineConfig, build_config, load_config
from services.evacuation.engine import step
from services.evacuation.shelters import choose_shelters
from services.evacuation.state import DecisionState, ShelterView, cell_key

T0 = datetime(2025, 8, 21, 5, 0, tzinfo=UTC)  # 14:00 JST
KANDA = "kandagawa-ochanomizu"  # affects fujimi, jimbocho, manseibashi, izumibashi
KANDA_AREAS = ["fujimi", "jimbocho", "manseibashi", "izumibashi"]
REGION = load_region("chiyoda")
CHIYODA = load_config("chiyoda")


@pytest.fixture(scope="module")
def chiyoda() -> EngineConfig:
    """Chiyoda's pack and rules."""
    return CHIYODA


def with_rules(config: EngineConfig, **changes: Any) -> EngineConfig:
    """``config`` with top-level parts of its rules replaced."""
    return build_config(REGION, config.rules.model_copy(update=changes))


class Feed:
    """Feeds events to the engine, keeping the state, with readable helpers."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.state = DecisionState()
        self.n = 0
        self.log: list[Event] = []

    def make(self, cls: type[Envelope], payload: dict[str, Any], minutes: float,
             source: str = "test") -> Event:
        self.n += 1
        at = T0 + timedelta(minutes=minutes)
        event = new_event(cls, payload, occurred_at=at, recorded_at=at + timedelta(seconds=1),
                          source=source, event_id=derive_id("engine-test", self.n))
        return cast(Event, event)

    def send(self, event: Event) -> list[Event]:
        self.log.append(event)
        self.state, out = step(self.config, self.state, event)
        return list(out)

    def gauge(self, level: float, minutes: float, gauge_id: str = KANDA) -> list[Event]:
        at = T0 + timedelta(minutes=minutes)
        return self.send(self.make(GaugeReading, {"gauge_id": gauge_id, "level_m": level,
                                                  "observed_at": at}, minutes))

    def warning(self, kind: str, level: int, areas: list[str], minutes: float, *,
                hazard: str | None = None, action: str = "issued", warning_id: str = "w1",
                source: str = "jma", name: str = "警報", sender: str | None = None,
                overridden_by: str | None = None) -> list[Event]:
        at = T0 + timedelta(minutes=minutes)
        return self.send(self.make(HazardWarning, {
            "warning_id": warning_id, "action": action, "kind": kind, "name": name,
            "hazard": hazard, "alert_level_equivalent": level, "area_ids": areas,
            "issued_at": at, "source": source, "sender": sender,
            "overridden_by": overridden_by}, minutes))

    def quake(self, intensities: dict[str, str], minutes: float, quake_id: str = "q1",
              *, withdrawn: bool = False) -> list[Event]:
        return self.send(self.make(SeismicIntensity, {
            "quake_id": quake_id, "withdrawn": withdrawn,
            "intensities": [{"area_id": a, "shindo": s} for a, s in intensities.items()]},
            minutes))

    def report(self, area: str, category: str, severity: int, minutes: float,
               client_id: str) -> list[Event]:
        report = {"client_report_id": client_id, "category": category, "severity": severity,
                  "area_id": area, "reporter": {"team": "team"}}
        return self.send(self.make(ReportAccepted, {
            "report_id": derive_id("report", "team", client_id),
            "submitted_event_id": derive_id("submitted", client_id),
            "report": report, "outside_region": False, "area_id": area}, minutes))

    def shelter(self, site_id: str, status: str, occupancy: int, minutes: float,
                version: int, capacity: int | None = None) -> list[Event]:
        return self.send(self.make(ShelterStatusChanged, {
            "shelter_id": site_id, "version": version, "status": status, "name": "x",
            "occupancy": occupancy, "capacity": capacity}, minutes))

    def command(self, action: str, minutes: float, *, role: str | None = "hq",
                **fields: Any) -> list[Event]:
        return self.send(self.make(EvacuationCommand, {
            "action": action, "operator": "hq-duty-officer", "operator_role": role,
            **fields}, minutes))

    def open_rec(self, area: str, hazard: str = "flood") -> UUID:
        rec = self.state.cells[cell_key(area, Hazard(hazard))].open_recommendation_id
        assert rec is not None
        return rec

    def order(self, area: str, hazard: str = "flood") -> UUID:
        order = self.state.cells[cell_key(area, Hazard(hazard))].order_id
        assert order is not None
        return order


def only(events: Iterable[Event], cls: type[Envelope]) -> list[Any]:
    """The events of one type (typed loosely: tests read payload fields)."""
    return [e for e in events if isinstance(e, cls)]


# --- river gauges -----------------------------------------------------------------


def test_judgement_level_recommends_level_3_for_every_affected_area(chiyoda: EngineConfig
                                                                    ) -> None:
    """避難判断水位 reached: one level-3 flood recommendation per area the gauge affects."""
    feed = Feed(chiyoda)
    assert feed.gauge(4.19, 0) == []
    out = feed.gauge(4.20, 10)
    recs = only(out, EvacuationRecommended)
    assert [r.payload.area_ids[0] for r in recs] == KANDA_AREAS
    for rec in recs:
        p = rec.payload
        assert (p.kind, p.level, p.hazard, p.rule_id) == ("issue", 3, "flood",
                                                          "river-evacuation-judgement")
        assert p.evidence_event_ids == (out[0].causation_id,)
        assert "神田川（お茶の水橋）の水位 4.20 m" in p.rationale and "避難判断水位" in p.rationale
        assert rec.occurred_at == T0 + timedelta(minutes=10)


def exercise_copy(event: Event) -> Event:
    """``event`` flagged exercise (a new id, same time and payload)."""
    return cast(Event, new_event(type(event), event.payload.model_dump(mode="json"),
                                 occurred_at=event.occurred_at, recorded_at=event.recorded_at,
                                 source=event.source, exercise=True))


def test_exercise_inputs_in_live_raise_nothing_and_leave_the_state(chiyoda: EngineConfig
                                                                   ) -> None:
    """Live ignores exercise gauges, warnings, quakes and reports; a drill decides on them."""
    probe = Feed(chiyoda)
    inputs = [probe.make(GaugeReading, {"gauge_id": KANDA, "level_m": 6.0,
                                        "observed_at": T0}, 0),
              probe.make(HazardWarning, {
                  "warning_id": "w-x", "action": "issued", "kind": "heavy_rain_emergency",
                  "name": "大雨特別警報", "hazard": None, "alert_level_equivalent": 5,
                  "area_ids": KANDA_AREAS, "issued_at": T0, "source": "jma"}, 1),
              probe.make(SeismicIntensity, {"quake_id": "q-x", "intensities": [
                  {"area_id": KANDA_AREAS[0], "shindo": "6+"}]}, 2)]
    exercises = [exercise_copy(e) for e in inputs]
    live = Feed(chiyoda)
    for event in exercises:
        assert live.send(event) == []
    assert live.state == DecisionState()
    drill = Feed(replace(chiyoda, drill=True))
    decided = [out for event in exercises for out in drill.send(event)]
    assert only(decided, EvacuationRecommended)
    assert all(e.exercise for e in decided)


def test_danger_level_recommends_4_and_bank_full_recommends_5(chiyoda: EngineConfig) -> None:
    """氾濫危険水位 calls for level 4 directly; the overtopping level for level 5."""
    feed = Feed(chiyoda)
    recs = only(feed.gauge(4.85, 0), EvacuationRecommended)
    assert {(r.payload.level, r.payload.rule_id) for r in recs} == {(4, "river-flood-danger")}
    recs = only(feed.gauge(5.60, 10), EvacuationRecommended)
    assert {(r.payload.level, r.payload.rule_id) for r in recs} == {(5, "river-overtopping")}
    closed = only(feed.log and feed.send(feed.make(GaugeReading, {
        "gauge_id": KANDA, "level_m": 5.7, "observed_at": T0 + timedelta(minutes=20)}, 20)),
        RecommendationClosed)
    assert closed == []  # no higher level than 5: nothing new


def test_flooding_reports_count_as_flooding_only_with_the_river_high(chiyoda: EngineConfig
                                                                     ) -> None:
    """Flooding reports along a river at 氾濫危険水位 recommend level 5; below it they do not."""
    feed = Feed(chiyoda)
    feed.gauge(4.5, 0)
    feed.report("manseibashi", "flooding", 4, 1, "f1")
    assert only(feed.report("manseibashi", "flooding", 5, 2, "f2"), EvacuationRecommended) == []
    recs = only(feed.gauge(4.9, 10), EvacuationRecommended)
    assert {(r.payload.level, r.payload.rule_id) for r in recs} == {
        (5, "river-flooding-observed")}
    assert len(recs) == 4  # every area the river's flooding affects
    assert len(recs[0].payload.evidence_event_ids) == 3  # the 2 reports + the reading


# --- warnings, seismic, clusters ----------------------------------------------------


def test_warning_kinds_map_to_their_levels_and_hazards(chiyoda: EngineConfig) -> None:
    """土砂災害警戒情報 → 4 (landslide); a CAP 大雨特別警報 → 5; a level-2 advisory → nothing."""
    feed = Feed(chiyoda)
    assert feed.warning("heavy_rain_advisory", 2, ["fujimi"], 0, hazard="landslide",
                        warning_id="adv") == []
    (rec,) = only(feed.warning("landslide_alert", 4, ["fujimi"], 1, name="土砂災害警戒情報"),
                  EvacuationRecommended)
    assert (rec.payload.level, rec.payload.hazard) == (4, "landslide")
    assert "土砂災害警戒情報（気象庁" in rec.payload.rationale
    (rec,) = only(feed.warning("heavy_rain_emergency", 5, ["fujimi"], 2, source="cap",
                               warning_id="cap-1", name="大雨特別警報"), EvacuationRecommended)
    assert (rec.payload.kind, rec.payload.level) == ("issue", 5)
    assert "CAP受信" in rec.payload.rationale


def test_a_warning_that_names_its_hazard_keeps_it_and_unknown_kinds_use_the_equivalent(
    chiyoda: EngineConfig,
) -> None:
    """The warning's own hazard wins over the rule's; an unlisted kind counts at its level."""
    feed = Feed(chiyoda)
    (rec,) = only(feed.warning("heavy_rain_emergency", 5, ["kanda-koen"], 0,
                               hazard="inland_flood"), EvacuationRecommended)
    assert (rec.payload.hazard, rec.payload.level) == ("inland_flood", 5)
    (rec,) = only(feed.warning("tsunami_warning", 4, ["izumibashi"], 1, hazard="tsunami",
                               warning_id="w2"), EvacuationRecommended)
    assert (rec.payload.hazard, rec.payload.rule_id) == ("tsunami", "warning-tsunami_warning")
    ignoring = with_rules(chiyoda, warnings=chiyoda.rules.warnings.model_copy(
        update={"unknown_kinds": "ignore"}))
    assert Feed(ignoring).warning("tsunami_warning", 4, ["izumibashi"], 1,
                                  hazard="tsunami") == []


def test_seismic_intensity_per_area(chiyoda: EngineConfig) -> None:
    """震度6- → level 4, 震度5+ → level 3, 震度5- → nothing, per area."""
    out = Feed(chiyoda).quake({"kanda-koen": "6-", "manseibashi": "5+", "jimbocho": "5-"}, 0)
    got = {(r.payload.area_ids[0], r.payload.level, r.payload.hazard)
           for r in only(out, EvacuationRecommended)}
    assert got == {("kanda-koen", 4, "earthquake"), ("manseibashi", 3, "earthquake")}


def test_a_withdrawn_quake_no_longer_counts(chiyoda: EngineConfig) -> None:
    """A quake's withdrawal (a JMA 取消) forgets it: its pending recommendation is
    withdrawn; another quake is untouched."""
    feed = Feed(chiyoda)
    feed.quake({"kanda-koen": "6-"}, 0)
    feed.quake({"manseibashi": "6-"}, 1, quake_id="q2")
    rec = feed.open_rec("kanda-koen", "earthquake")
    other = feed.open_rec("manseibashi", "earthquake")
    (closed,) = only(feed.quake({}, 5, withdrawn=True), RecommendationClosed)
    assert (closed.payload.recommendation_id, closed.payload.outcome) == (rec, "withdrawn")
    assert "取消" in closed.payload.reason  # type: ignore[operator]
    assert feed.open_rec("manseibashi", "earthquake") == other
    # A late copy of the withdrawn quake's report changes nothing; a withdrawal of a
    # quake never seen neither.
    assert feed.quake({"kanda-koen": "6-"}, 6) == []
    assert feed.quake({}, 7, quake_id="never-seen", withdrawn=True) == []


def test_a_cluster_of_severe_reports_in_one_area_within_the_window(chiyoda: EngineConfig
                                                                   ) -> None:
    """3 fire reports of severity >= 4 in 30 minutes in one area → 大規模な火事, level 4."""
    feed = Feed(chiyoda)
    assert feed.report("kanda-koen", "fire", 4, 0, "a") == []
    assert feed.report("kanda-koen", "fire", 3, 5, "b") == []  # too mild to count
    assert feed.report("kanda-koen", "fire", 5, 6, "c") == []
    assert feed.report("kanda-koen", "fire", 5, 7, "c") == []  # the same report again
    assert feed.report("jimbocho", "fire", 5, 8, "d") == []  # another area
    (rec,) = only(feed.report("kanda-koen", "fire", 4, 29, "e"), EvacuationRecommended)
    p = rec.payload
    assert (p.area_ids, p.level, p.hazard, p.rule_id) == (("kanda-koen",), 4, "large_fire",
                                                          "cluster-fire")
    assert len(p.evidence_event_ids) == 3 and "30分以内に3件" in p.rationale
    # No site in Chiyoda is designated for large fires: the rationale says so.
    assert p.suggested_shelter_ids == () and p.shelters_to_open == ()
    assert "大規模な火事の指定緊急避難場所がありません" in p.rationale


def test_reports_spread_wider_than_the_window_do_not_cluster(chiyoda: EngineConfig) -> None:
    """Three reports 40 minutes apart in all never make a 30-minute cluster."""
    feed = Feed(chiyoda)
    out = [*feed.report("kanda-koen", "fire", 4, 0, "a"),
           *feed.report("kanda-koen", "fire", 4, 20, "b"),
           *feed.report("kanda-koen", "fire", 4, 40, "c")]
    assert only(out, EvacuationRecommended) == []


# --- shelters ---------------------------------------------------------------------


def test_open_designated_shelters_with_room_are_suggested(chiyoda: EngineConfig) -> None:
    """Open sites designated for the hazard with free capacity; full ones are left out."""
    feed = Feed(chiyoda)
    feed.shelter("e1310100005201", "open", 100, 0, 1)      # jimbocho, flood
    feed.shelter("e1310100031201", "full", 500, 0, 1)      # jimbocho, flood, full
    feed.shelter("e1310100010201", "open", 0, 0, 1)        # izumibashi, not flood
    recs = {r.payload.area_ids[0]: r.payload
            for r in only(feed.gauge(4.3, 1), EvacuationRecommended)}
    assert recs["jimbocho"].suggested_shelter_ids == ("e1310100005201",)
    assert recs["jimbocho"].shelters_to_open == ()
    assert "神田一橋中学校（地区内、空き400人）" in recs["jimbocho"].rationale
    # Nothing open for floods in or near 和泉橋: designated flood sites to open instead,
    # never ちよだパークサイドプラザ (open, but not designated for floods).
    assert recs["izumibashi"].suggested_shelter_ids == ()
    assert recs["izumibashi"].shelters_to_open
    assert "e1310100010201" not in recs["izumibashi"].shelters_to_open
    assert "開設を推奨" in recs["izumibashi"].rationale


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(
    st.sampled_from([s.id for s in REGION.sites]),
    st.tuples(st.sampled_from(list(ShelterStatus)), st.integers(0, 1200)),
    max_size=len(REGION.sites),
), st.sampled_from([d.id for d in REGION.districts]), st.sampled_from(list(Hazard)))
def test_no_site_is_ever_named_for_a_hazard_it_is_not_designated_for(
    views: dict[str, tuple[ShelterStatus, int]], area: str, hazard: Hazard
) -> None:
    """Whatever the shelters' states, suggestions and openings are designated for the hazard."""
    config = CHIYODA
    shelters = {sid: ShelterView(shelter_id=sid, version=1, status=status, occupancy=occ,
                                 capacity=None) for sid, (status, occ) in views.items()}
    choice = choose_shelters(config, shelters, area, hazard)
    for site_id in choice.suggested + choice.to_open:
        assert hazard in REGION.site(site_id).hazards
    for site_id in choice.suggested:
        status, occupancy = views[site_id]
        assert status in (ShelterStatus.OPEN, ShelterStatus.CROWDED)
        assert occupancy < REGION.site(site_id).capacity
    assert not (choice.suggested and choice.to_open)


# --- HQ decisions -------------------------------------------------------------------


def test_approval_issues_an_order_and_a_higher_level_updates_it(chiyoda: EngineConfig) -> None:
    """approve → order_issued v1; the next level's raise, approved → order_updated v2."""
    feed = Feed(chiyoda)
    feed.shelter("e1310100005201", "open", 100, 0, 1)
    feed.gauge(4.3, 1)
    rec = feed.open_rec("jimbocho")
    (issued,) = feed.command("approve", 2, recommendation_id=rec)
    assert isinstance(issued, OrderIssued)
    p = issued.payload
    assert (p.version, p.level, p.area_ids, p.recommendation_id, p.issued_by, p.automatic) == (
        1, 3, ("jimbocho",), rec, "hq-duty-officer", False)
    assert p.designated_shelter_ids == ("e1310100005201",)
    assert p.approved_at == T0 + timedelta(minutes=2)
    raises = [r for r in only(feed.gauge(4.9, 10), EvacuationRecommended)
              if r.payload.area_ids == ("jimbocho",)]
    assert [(r.payload.kind, r.payload.order_id) for r in raises] == [("raise", p.order_id)]
    (updated,) = feed.command("approve", 11, recommendation_id=raises[0].payload.recommendation_id)
    assert isinstance(updated, OrderUpdated)
    assert (updated.payload.order_id, updated.payload.version, updated.payload.level,
            updated.payload.supersedes_version) == (p.order_id, 2, 4, 1)


def test_rejection_is_recorded_and_only_a_higher_level_is_recommended_again(
    chiyoda: EngineConfig,
) -> None:
    """reject → recommendation_closed with the reason; same level again → nothing; higher → new."""
    feed = Feed(chiyoda)
    feed.gauge(4.3, 0)
    rec = feed.open_rec("fujimi")
    (closed,) = feed.command("reject", 1, recommendation_id=rec, reason="現地確認まで見送り")
    assert isinstance(closed, RecommendationClosed)
    assert (closed.payload.outcome, closed.payload.reason, closed.payload.operator) == (
        "rejected", "現地確認まで見送り", "hq-duty-officer")
    assert not [r for r in only(feed.gauge(4.5, 10), EvacuationRecommended)
                if r.payload.area_ids == ("fujimi",)]
    again = [r for r in only(feed.gauge(4.9, 20), EvacuationRecommended)
             if r.payload.area_ids == ("fujimi",)]
    assert [(r.payload.kind, r.payload.level) for r in again] == [("issue", 4)]


def test_a_newer_recommendation_supersedes_the_pending_one(chiyoda: EngineConfig) -> None:
    """A pending level 3 is closed as superseded by level 4; approving it is refused."""
    feed = Feed(chiyoda)
    feed.gauge(4.3, 0)
    old = feed.open_rec("izumibashi")
    out = feed.gauge(4.9, 10)
    closed = [c for c in only(out, RecommendationClosed) if c.payload.recommendation_id == old]
    assert closed[0].payload.outcome == "superseded"
    assert closed[0].payload.superseded_by == feed.open_rec("izumibashi")
    (refused,) = feed.command("approve", 11, recommendation_id=old)
    assert isinstance(refused, CommandRejected) and refused.payload.code == "superseded"


def test_manual_issue_creates_or_updates_per_area_and_checks_designations(
    chiyoda: EngineConfig,
) -> None:
    """HQ issues manually; an order per area; a site not designated for the hazard is refused."""
    feed = Feed(chiyoda)
    (refused,) = feed.command("issue", 0, area_ids=["jimbocho"], level=3, hazard="landslide",
                              designated_shelter_ids=["e1310100016201"])  # 専修大学: flood only
    assert isinstance(refused, CommandRejected) and refused.payload.code == "not_designated"
    assert feed.state.orders == {}
    out = feed.command("issue", 1, area_ids=["jimbocho", "fujimi"], level=3, hazard="landslide",
                       designated_shelter_ids=["e1310100005201"])
    assert [(e.type, e.payload.area_ids) for e in out] == [
        ("evacuation.order_issued", ("jimbocho",)), ("evacuation.order_issued", ("fujimi",))]
    (updated,) = feed.command("issue", 2, area_ids=["fujimi"], level=4, hazard="landslide")
    assert isinstance(updated, OrderUpdated)
    assert (updated.payload.version, updated.payload.level) == (2, 4)
    assert all("landslide" in REGION.site(s).hazards
               for s in updated.payload.designated_shelter_ids)
    (refused,) = feed.command("issue", 3, area_ids=["atlantis"], level=3, hazard="flood")
    assert refused.payload.code == "unknown_area"  # type: ignore[union-attr]


def test_manual_orders_supersede_pending_recommendations(chiyoda: EngineConfig) -> None:
    """A manual order for an area closes its pending recommendation as superseded."""
    feed = Feed(chiyoda)
    feed.gauge(4.3, 0)
    rec = feed.open_rec("jimbocho")
    out = feed.command("issue", 1, area_ids=["jimbocho"], level=3, hazard="flood")
    closed = only(out, RecommendationClosed)
    assert [(c.payload.recommendation_id, c.payload.outcome) for c in closed] == [
        (rec, "superseded")]


@pytest.mark.parametrize(("role", "code"), [("field", "forbidden_role"),
                                            ("shelter_staff", "forbidden_role"),
                                            (None, "role_missing")])
def test_commands_from_anyone_but_hq_are_refused_with_the_reason(
    chiyoda: EngineConfig, role: str | None, code: str
) -> None:
    """Only role hq decides; others get evacuation.command_rejected and nothing changes."""
    feed = Feed(chiyoda)
    feed.gauge(4.3, 0)
    before = feed.state
    (refused,) = feed.command("approve", 1, role=role, recommendation_id=feed.open_rec("fujimi"))
    assert isinstance(refused, CommandRejected)
    assert (refused.payload.code, refused.payload.operator_role) == (code, role)
    assert "hq" in refused.payload.reason
    assert feed.state.orders == before.orders and feed.state.cells == before.cells


def test_lift_commands_check_the_order(chiyoda: EngineConfig) -> None:
    """Lifting an unknown or lifted order is refused; the same lift delivered twice is a no-op."""
    feed = Feed(chiyoda)
    (refused,) = feed.command("lift", 0, order_id=derive_id("nope"), reason="r")
    assert refused.payload.code == "unknown_order"  # type: ignore[union-attr]
    feed.command("issue", 1, area_ids=["jimbocho"], level=3, hazard="flood")
    order = feed.order("jimbocho")
    lift = feed.make(EvacuationCommand, {"action": "lift", "operator": "hq-duty-officer",
                                         "operator_role": "hq", "order_id": order,
                                         "reason": "点検済み"}, 2)
    (lifted,) = feed.send(lift)
    assert isinstance(lifted, OrderLifted)
    assert (lifted.payload.version, lifted.payload.lifted_by, lifted.payload.reason) == (
        2, "hq-duty-officer", "点検済み")
    assert feed.send(lift) == []
    (refused,) = feed.command("lift", 3, order_id=order, reason="again")
    assert refused.payload.code == "already_lifted"  # type: ignore[union-attr]


def test_the_same_approval_delivered_twice_issues_one_order(chiyoda: EngineConfig) -> None:
    """A redelivered approve command (same event id) changes nothing the second time."""
    feed = Feed(chiyoda)
    feed.gauge(4.3, 0)
    approve = feed.make(EvacuationCommand, {"action": "approve", "operator": "hq-duty-officer",
                                            "operator_role": "hq",
                                            "recommendation_id": feed.open_rec("jimbocho")}, 1)
    assert [e.type for e in feed.send(approve)] == ["evacuation.order_issued"]
    assert feed.send(approve) == []
    (refused,) = feed.command("approve", 2, recommendation_id=approve.payload.recommendation_id)  # type: ignore[union-attr]
    assert refused.payload.code == "already_decided"  # type: ignore[union-attr]


def test_an_old_command_redelivered_after_later_changes_is_not_applied_again(
    chiyoda: EngineConfig,
) -> None:
    """A manual issue redelivered after a newer update does not roll the order back."""
    feed = Feed(chiyoda)
    first = feed.make(EvacuationCommand, {"action": "issue", "operator": "hq-duty-officer",
                                          "operator_role": "hq", "area_ids": ["jimbocho"],
                                          "level": 3, "hazard": "flood"}, 0)
    feed.send(first)
    feed.command("issue", 1, area_ids=["jimbocho"], level=5, hazard="flood")
    assert feed.send(first) == []
    order = feed.state.orders[str(feed.order("jimbocho"))]
    assert (order.level, order.version) == (5, 2)


# --- lifting and hysteresis -----------------------------------------------------------


def approved_l3_in_jimbocho(config: EngineConfig) -> Feed:
    feed = Feed(config)
    feed.gauge(2.0, 0, gauge_id="nihonbashigawa-manaitabashi")
    feed.gauge(4.3, 0)
    feed.command("approve", 1, recommendation_id=feed.open_rec("jimbocho"))
    return feed


def both_gauges(feed: Feed, kanda: float, minutes: float) -> list[Event]:
    """A reading of 神田川 and a quiet one of 日本橋川 (both affect jimbocho)."""
    return [*feed.gauge(kanda, minutes),
            *feed.gauge(2.0, minutes, gauge_id="nihonbashigawa-manaitabashi")]


def lifts_for(events: list[Event], area: str) -> list[Any]:
    return [r for r in only(events, EvacuationRecommended)
            if r.payload.kind == "lift" and r.payload.area_ids == (area,)]


def test_lifting_waits_for_the_period_below_the_lower_threshold(chiyoda: EngineConfig) -> None:
    """Below 避難判断水位 is not enough; below 氾濫注意水位 for 2 hours recommends the lift."""
    feed = approved_l3_in_jimbocho(chiyoda)
    # 4.0 is below 避難判断水位 but not below 氾濫注意水位 (3.5): not clear yet.
    for minutes, level in ((10, 4.0), (20, 3.6), (30, 3.4)):
        assert only(both_gauges(feed, level, minutes), EvacuationRecommended) == []
    for minutes in range(40, 150, 10):  # clear since 30, for less than two hours
        assert only(both_gauges(feed, 3.0, minutes), EvacuationRecommended) == []
    lifts = lifts_for(both_gauges(feed, 3.0, 150), "jimbocho")
    assert [r.payload.order_id for r in lifts] == [feed.order("jimbocho")]
    assert "2時間" in lifts[0].payload.rationale
    (lifted,) = feed.command("approve", 151, recommendation_id=lifts[0].payload.recommendation_id)
    assert isinstance(lifted, OrderLifted) and lifted.payload.version == 2


def test_rising_above_the_lower_threshold_restarts_the_period(chiyoda: EngineConfig) -> None:
    """A reading back above 氾濫注意水位 resets the clear spell: no lift at the old time."""
    feed = approved_l3_in_jimbocho(chiyoda)
    both_gauges(feed, 3.0, 10)  # clear from 10 ...
    both_gauges(feed, 3.6, 60)  # ... but back above 氾濫注意水位 at 60
    both_gauges(feed, 3.0, 70)  # clear again from 70
    for minutes in range(80, 190, 10):
        assert lifts_for(both_gauges(feed, 3.0, minutes), "jimbocho") == [], minutes
    assert len(lifts_for(both_gauges(feed, 3.0, 190), "jimbocho")) == 1


def test_an_order_issued_in_clear_conditions_waits_a_full_period_before_a_lift(
    chiyoda: EngineConfig,
) -> None:
    """A manual order while the river is low: no instant lift, one after the period."""
    feed = Feed(chiyoda)
    for minutes in range(0, 210, 10):  # low and reporting: clear since 0
        both_gauges(feed, 2.0, minutes)
    out = feed.command("issue", 200, area_ids=["jimbocho"], level=3, hazard="flood")
    assert only(out, EvacuationRecommended) == []
    for minutes in range(210, 320, 10):
        assert lifts_for(both_gauges(feed, 2.0, minutes), "jimbocho") == [], minutes
    assert len(lifts_for(both_gauges(feed, 2.0, 320), "jimbocho")) == 1


def test_a_rejected_lift_is_not_recommended_again_in_the_same_clear_spell(
    chiyoda: EngineConfig,
) -> None:
    """HQ keeps the order: no second lift recommendation until conditions return and clear."""
    config = with_rules(chiyoda, warnings=chiyoda.rules.warnings.model_copy(
        update={"lift_after_minutes": 30}))
    feed = Feed(config)
    feed.warning("landslide_alert", 4, ["fujimi"], 0)
    feed.command("approve", 1, recommendation_id=feed.open_rec("fujimi", "landslide"))
    feed.warning("landslide_alert", 4, ["fujimi"], 10, action="cancelled")
    assert only(feed.shelter("e1310100001201", "open", 1, 39, 1), EvacuationRecommended) == []
    (lift,) = only(feed.shelter("e1310100001201", "open", 2, 40, 2), EvacuationRecommended)
    feed.command("reject", 41, recommendation_id=lift.payload.recommendation_id, reason="継続")
    assert only(feed.shelter("e1310100001201", "open", 3, 200, 3), EvacuationRecommended) == []


def test_a_pending_recommendation_is_withdrawn_when_its_conditions_clear(
    chiyoda: EngineConfig,
) -> None:
    """No decision yet and the warning is cancelled: the recommendation is withdrawn."""
    feed = Feed(chiyoda)
    feed.warning("landslide_alert", 4, ["fujimi"], 0)
    rec = feed.open_rec("fujimi", "landslide")
    (closed,) = only(feed.warning("landslide_alert", 4, ["fujimi"], 5, action="cancelled"),
                     RecommendationClosed)
    assert (closed.payload.recommendation_id, closed.payload.outcome) == (rec, "withdrawn")
    (refused,) = feed.command("approve", 6, recommendation_id=rec)
    assert refused.payload.code == "withdrawn"  # type: ignore[union-attr]


def test_only_the_warnings_own_sender_can_cancel_it(chiyoda: EngineConfig) -> None:
    """Another sender's cancellation with the same warning id changes nothing; HQ's can."""
    feed = Feed(chiyoda)
    jma = "jma:気象庁本庁"
    feed.warning("landslide_alert", 4, ["fujimi"], 0, warning_id="w-jma", sender=jma)
    rec = feed.open_rec("fujimi", "landslide")
    assert only(feed.warning("landslide_alert", 4, ["fujimi"], 5, warning_id="w-jma",
                             action="cancelled", sender="token:rogue-feed"),
                RecommendationClosed) == []
    kept = feed.state.warnings[f"{jma} w-jma"]
    assert kept.cancelled_at is None and kept.sender == jma
    assert feed.open_rec("fujimi", "landslide") == rec
    # HQ's override is sent under the warning's own sender, naming HQ.
    (closed,) = only(feed.warning("landslide_alert", 4, ["fujimi"], 6, warning_id="w-jma",
                                  action="cancelled", sender=jma, overridden_by="hq-duty"),
                     RecommendationClosed)
    assert closed.payload.recommendation_id == rec
    assert feed.state.warnings[f"{jma} w-jma"].cancelled_at is not None


# --- automatic level 5 ------------------------------------------------------------------


def test_level_5_is_recommended_not_issued_by_default(chiyoda: EngineConfig) -> None:
    """With the flag off (the default) an overtopping river only recommends level 5."""
    out = Feed(chiyoda).gauge(5.7, 0)
    assert only(out, OrderIssued) == []
    assert {r.payload.level for r in only(out, EvacuationRecommended)} == {5}


def test_a_rule_pre_authorised_for_level_5_issues_automatically_and_says_so(
    chiyoda: EngineConfig,
) -> None:
    """auto_issue_level_5 on: the order is issued at once, automatic, by the rule."""
    river = chiyoda.rules.river
    assert river is not None and river.overtopping is not None
    config = with_rules(chiyoda, river=river.model_copy(update={
        "overtopping": river.overtopping.model_copy(update={"auto_issue_level_5": True})}))
    out = Feed(config).gauge(5.7, 0)
    recs, issued = only(out, EvacuationRecommended), only(out, OrderIssued)
    assert len(recs) == len(issued) == 4
    for rec, order in zip(recs, issued, strict=True):
        assert "自動発令" in rec.payload.rationale
        assert (order.payload.automatic, order.payload.issued_by, order.payload.level) == (
            True, "river-overtopping", 5)
        assert order.payload.recommendation_id == rec.payload.recommendation_id


# --- data quality --------------------------------------------------------------------


def test_a_silent_gauge_is_flagged_and_blocks_lifting_until_it_reports(
    chiyoda: EngineConfig,
) -> None:
    """Silent > 2 reporting periods: hazard.data_quality stale; its return: restored."""
    feed = approved_l3_in_jimbocho(chiyoda)
    feed.gauge(3.0, 10)
    feed.gauge(2.0, 10, gauge_id="nihonbashigawa-manaitabashi")
    stale: list[Any] = []
    lifts: list[Any] = []
    for minutes in range(20, 200, 10):
        out = feed.gauge(3.0, minutes)
        stale += only(out, HazardDataQuality)
        lifts += lifts_for(out, "jimbocho")
    assert lifts == []
    assert [(d.payload.gauge_id, d.payload.status) for d in stale] == [
        ("nihonbashigawa-manaitabashi", "stale")]
    assert stale[0].occurred_at == T0 + timedelta(minutes=40)  # 30 > 20 minutes allowed
    assert stale[0].payload.silent_seconds == 30 * 60
    # 神田川 has been clear for over two hours, but 日本橋川 is silent: no lift.
    assert not feed.state.cells[cell_key("jimbocho", Hazard.FLOOD)].lift_recommended
    out = feed.gauge(2.0, 200, gauge_id="nihonbashigawa-manaitabashi")
    assert [(d.payload.status) for d in only(out, HazardDataQuality)] == ["restored"]
    assert not [r for r in only(out, EvacuationRecommended) if r.payload.kind == "lift"]


# --- ordering and duplicates -----------------------------------------------------------


def test_older_readings_updates_and_versions_do_not_override_newer_ones(
    chiyoda: EngineConfig,
) -> None:
    """Out of order: a late older reading, warning update or shelter version is ignored."""
    feed = Feed(chiyoda)
    feed.gauge(4.3, 10)
    before = feed.state
    assert feed.gauge(2.0, 5) == []
    assert feed.state.gauges == before.gauges
    feed.shelter("e1310100005201", "open", 100, 11, 5)
    feed.shelter("e1310100005201", "closed", 0, 12, 4)
    assert feed.state.shelters["e1310100005201"].status is ShelterStatus.OPEN
    feed.warning("landslide_alert", 4, ["fujimi"], 20, warning_id="w9")
    assert feed.warning("landslide_alert", 4, ["fujimi"], 15, warning_id="w9",
                        action="cancelled") == []
    assert feed.state.warnings["w9"].cancelled_at is None
    assert feed.state.watermark == T0 + timedelta(minutes=20)


def test_a_late_report_older_than_anything_kept_is_ignored(chiyoda: EngineConfig) -> None:
    """A report far behind the clock cannot form a cluster."""
    feed = Feed(chiyoda)
    feed.gauge(2.0, 4 * 24 * 60)
    for i in range(3):
        feed.report("kanda-koen", "fire", 5, i, f"late-{i}")
    assert feed.state.reports == {}


def test_every_event_delivered_twice_gives_the_same_decisions(chiyoda: EngineConfig) -> None:
    """At-least-once delivery: duplicates (same event id) add no decisions."""
    source = Feed(chiyoda)
    source.shelter("e1310100005201", "open", 100, 0, 1)
    source.gauge(4.3, 1)
    source.command("approve", 2, recommendation_id=source.open_rec("jimbocho"))
    source.report("kanda-koen", "fire", 5, 3, "a")
    source.report("kanda-koen", "fire", 5, 4, "b")
    source.report("kanda-koen", "fire", 5, 5, "c")
    source.gauge(4.9, 11)
    once = Feed(chiyoda)
    twice = Feed(chiyoda)
    single = [e for event in source.log for e in once.send(event)]
    double = [e for event in source.log for e in (*twice.send(event), *twice.send(event))]
    assert double == single
    assert twice.state == once.state


def test_events_the_rules_do_not_read_change_nothing(chiyoda: EngineConfig) -> None:
    """A submitted (not yet accepted) report or an order event leaves the state as it was."""
    state = DecisionState()
    for event_type in ("report.submitted", "evacuation.order_issued", "shelter.opened"):
        assert step(chiyoda, state, example(event_type)) == (state, ())
