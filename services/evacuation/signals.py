"""Conditions per (area, hazard): what each rule says about an area right now.

A :class:`Signal` is one rule's reading of one source for one area at the
engine's clock (the watermark): the level it calls for now (0 when none), and
since when it has been *clear* (below the lower, lifting threshold), or ``None``
while it is not. The engine recommends on the highest level and lifts only when
every signal of the cell has been clear for its rule's period (hysteresis).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from schemas.hazards import Hazard
from schemas.reports import ReportCategory
from services.evacuation import text
from services.evacuation.config import EngineConfig, GaugeInfo
from services.evacuation.rules import ClusterRule, SeismicRule, WarningKindRule
from services.evacuation.state import DecisionState, GaugeState, ReportEntry, WarningState

__all__ = ["ReportIndex", "Signal", "index_reports", "signals_for"]

_MAX_EVIDENCE_PER_SIGNAL = 50


@dataclass(frozen=True)
class Signal:
    """One rule's reading of one source for one area."""

    rule_id: str
    level: int
    """Level called for now; 0 when the source is below every trigger."""
    clear_since: datetime | None
    """Since when the source has been clear (below the lifting threshold); None: not clear."""
    lift_after: timedelta
    """How long it must stay clear before a lift is recommended."""
    evidence: tuple[UUID, ...]
    text: str
    """What it says, as a clause of a rationale."""
    auto_issue: bool = False
    """Its rule issues level 5 without waiting for HQ."""

    @property
    def liftable_at(self) -> datetime | None:
        """When the hysteresis period ends, or None while not clear."""
        return None if self.clear_since is None else self.clear_since + self.lift_after


ReportIndex = Mapping[tuple[str, ReportCategory], Sequence[ReportEntry]]
"""Reports by (area, category), each list in event-time order."""


def index_reports(state: DecisionState) -> ReportIndex:
    """Group the kept reports once per evaluation instead of scanning them per cell and rule."""
    index: dict[tuple[str, ReportCategory], list[ReportEntry]] = {}
    for report in state.reports.values():
        index.setdefault((report.area_id, report.category), []).append(report)
    for reports in index.values():
        # The event id breaks ties so the order never depends on how the state was stored.
        reports.sort(key=lambda r: (r.at, r.event_id))
    return index


def signals_for(
    config: EngineConfig, state: DecisionState, area_id: str, hazard: Hazard, now: datetime,
    reports: ReportIndex | None = None,
) -> list[Signal]:
    """Every signal for ``(area_id, hazard)`` at event time ``now``, strongest first.

    ``reports`` is :func:`index_reports` of ``state``, when the caller evaluates many cells.
    """
    if reports is None:
        reports = index_reports(state)
    found: list[Signal] = []
    river = config.rules.river
    if river is not None and river.hazard is hazard:
        for gauge_id in config.gauges_by_area.get(area_id, ()):
            gauge = state.gauges.get(gauge_id)
            if gauge is not None:
                found.extend(_river(config, reports, config.gauges[gauge_id], gauge, now))
    for warning in state.warnings.values():
        signal = _warning(config, warning, area_id, hazard, now)
        if signal is not None:
            found.append(signal)
    for quake in state.quakes.values():
        entry = quake.areas.get(area_id)
        rule = _seismic_rule(config, entry.shindo.rank if entry else -1)
        if entry is None or rule is None or rule.hazard is not hazard:
            continue
        until = quake.at + timedelta(minutes=rule.hold_minutes)
        withdrawn = quake.withdrawn_at is not None and quake.withdrawn_at < until
        if withdrawn:
            assert quake.withdrawn_at is not None
            until = quake.withdrawn_at
        active = now < until
        magnitude = f"M{quake.magnitude:.1f}、" if quake.magnitude is not None else ""
        epicentre = f"{quake.epicentre}を震源とする" if quake.epicentre else ""
        ended = (f"（{text.when(until, config.timezone)}に取消）" if withdrawn
                 else f"（{text.when(until, config.timezone)}に判断期間終了）")
        found.append(Signal(
            rule_id=rule.rule_id,
            level=rule.level if active else 0,
            clear_since=None if active else until,
            lift_after=timedelta(minutes=rule.lift_after_minutes),
            evidence=(entry.event_id,) + ((quake.withdrawal_event_id,)
                                          if withdrawn and quake.withdrawal_event_id else ()),
            text=(f"{epicentre}地震（{magnitude}{text.when(quake.at, config.timezone)}）で"
                  f"{config.area_names_ja[area_id]}の震度{entry.shindo.value}"
                  + ("" if active else ended)),
            auto_issue=rule.auto_issue_level_5,
        ))
    for cluster in config.rules.report_clusters:
        if cluster.hazard is hazard:
            signal = _cluster(config, reports, cluster, area_id, now)
            if signal is not None:
                found.append(signal)
    # Fully ordered (evidence breaks the last ties) so that the rationale does not
    # depend on the order the state's entries were stored or restored in.
    found.sort(key=lambda s: (-s.level, s.rule_id, s.text, tuple(map(str, s.evidence))))
    return found


def _river(
    config: EngineConfig, index: ReportIndex, info: GaugeInfo, gauge: GaugeState, now: datetime
) -> Iterable[Signal]:
    river = config.rules.river
    assert river is not None  # the caller checked
    lift_after = timedelta(minutes=river.lift_after_minutes)
    last = gauge.last
    observed_at = text.when(last.observed_at, config.timezone)
    seen = f"{info.name_ja}の水位 {text.metres(last.level_m)}（{observed_at}観測）"
    if gauge.stale:
        # A silent gauge proves nothing either way: it neither triggers nor lets an
        # order be lifted (the data-quality warning tells HQ).
        yield Signal(
            rule_id=river.stages[0].rule_id, level=0, clear_since=None, lift_after=lift_after,
            evidence=(last.event_id,),
            text=f"{info.name_ja}の水位データが途絶しています（最終観測 "
                 f"{text.when(last.observed_at, config.timezone)}）",
        )
        return
    level, rule_id, clause = 0, river.stages[0].rule_id, ""
    for stage in sorted(river.stages, key=lambda s: s.level):
        threshold = info.thresholds[stage.threshold]
        if last.level_m >= threshold:
            level, rule_id = stage.level, stage.rule_id
            clause = f"が{text.THRESHOLD_LABELS_JA[stage.threshold]} {text.metres(threshold)} 以上"
    auto = False
    overtop = river.overtopping
    if overtop is not None and info.bank_full_m is not None and last.level_m >= info.bank_full_m:
        level, rule_id, auto = overtop.level, overtop.rule_id, overtop.auto_issue_level_5
        clause = f"が{text.THRESHOLD_LABELS_JA['bank_full']} {text.metres(info.bank_full_m)} 以上"
    lift_name = river.lift_below
    lift_m = info.thresholds[lift_name]
    if not clause:
        if gauge.clear_since is not None:
            clause = (f"は{text.when(gauge.clear_since, config.timezone)}以降"
                      f"{text.THRESHOLD_LABELS_JA[lift_name]} {text.metres(lift_m)} 未満")
        else:
            clause = f"は{text.THRESHOLD_LABELS_JA[lift_name]} {text.metres(lift_m)} 以上"
    yield Signal(rule_id=rule_id, level=level, clear_since=gauge.clear_since,
                 lift_after=lift_after, evidence=(last.event_id,), text=seen + clause,
                 auto_issue=auto)

    observed = river.flooding_observed
    if observed is None:
        return
    since = now - timedelta(minutes=observed.window_minutes)
    reports = sorted(
        (r for area_id in info.affected_area_ids
         for r in index.get((area_id, observed.category), ())
         if r.severity >= observed.min_severity and r.at > since),
        key=lambda r: (r.at, r.event_id),
    )
    if not reports:
        return
    gate = info.thresholds[observed.min_threshold]
    active = len(reports) >= observed.count and last.level_m >= gate
    areas = "、".join(dict.fromkeys(config.area_names_ja[r.area_id] for r in reports))
    yield Signal(
        rule_id=observed.rule_id,
        level=observed.level if active else 0,
        # Fresh flooding reports keep the river from counting as clear.
        clear_since=None,
        lift_after=lift_after,
        evidence=(last.event_id, *(r.event_id for r in reports))[:_MAX_EVIDENCE_PER_SIGNAL],
        text=(f"{info.name_ja}の流域（{areas}）で{text.CATEGORY_LABELS_JA[observed.category]}"
              f"（深刻度{observed.min_severity}以上）の報告が{observed.window_minutes}分間に"
              f"{len(reports)}件"
              + (f"（水位は{text.THRESHOLD_LABELS_JA[observed.min_threshold]}以上："
                 "氾濫発生とみなす）" if active else "")),
        auto_issue=observed.auto_issue_level_5,
    )


_Resolved = tuple[int, Hazard, str, WarningKindRule | None]


def _warning_rule(config: EngineConfig, warning: WarningState) -> _Resolved | None:
    rules = config.rules.warnings
    for rule in rules.kinds:
        if rule.kind == warning.kind:
            return rule.level, warning.hazard or rule.hazard, rule.effective_rule_id, rule
    if rules.unknown_kinds == "use_equivalent" and warning.hazard is not None:
        return warning.level_equivalent, warning.hazard, f"warning-{warning.kind}"[:64], None
    return None


def _warning(
    config: EngineConfig, warning: WarningState, area_id: str, hazard: Hazard, now: datetime
) -> Signal | None:
    resolved = _warning_rule(config, warning)
    if resolved is None:
        return None
    level, its_hazard, rule_id, rule = resolved
    # Levels 1-2 (注意報 and the like) are information, not grounds for an order.
    if its_hazard is not hazard or level < 3:
        return None
    if area_id in warning.area_ids:
        ended: datetime | None = warning.cancelled_at
        if warning.expires_at is not None and warning.expires_at <= now:
            ended = warning.expires_at if ended is None else min(ended, warning.expires_at)
    elif area_id in warning.ended_areas:
        ended = warning.ended_areas[area_id]
    else:
        return None
    minutes = (rule.lift_after_minutes if rule is not None and rule.lift_after_minutes
               else config.rules.warnings.lift_after_minutes)
    origin = warning.origin
    if origin is None:
        source = text.SOURCE_LABELS_JA[warning.source]
        cited = f"{source}、{text.when(warning.issued_at, config.timezone)}発表"
    else:
        # The message itself is the evidence: its title, office and report time (JST).
        cited = (f"{origin.office}「{origin.title}」、"
                 f"{text.when(origin.reported_at, config.timezone)}発表")
    clause = (f"{warning.name}（{cited}）が{config.area_names_ja[area_id]}に発表中"
              if ended is None else
              f"{warning.name}（{cited}）は{text.when(ended, config.timezone)}に"
              f"{config.area_names_ja[area_id]}で解除・終了")
    return Signal(
        rule_id=rule_id,
        level=level if ended is None else 0,
        clear_since=ended,
        lift_after=timedelta(minutes=minutes),
        evidence=warning.event_ids[-_MAX_EVIDENCE_PER_SIGNAL:],
        text=clause,
        auto_issue=bool(rule is not None and rule.auto_issue_level_5),
    )


def _seismic_rule(config: EngineConfig, rank: int) -> SeismicRule | None:
    best: SeismicRule | None = None
    for rule in config.rules.seismic:
        if rank >= rule.min_shindo.rank and (best is None or
                                             rule.min_shindo.rank > best.min_shindo.rank):
            best = rule
    return best


def _cluster(
    config: EngineConfig, index: ReportIndex, rule: ClusterRule, area_id: str, now: datetime
) -> Signal | None:
    reports = [r for r in index.get((area_id, rule.category), ())
               if r.severity >= rule.min_severity]
    window = timedelta(minutes=rule.window_minutes)
    # A run: `count` consecutive reports (in event time) spanning at most the window.
    # The condition "count reports within the window" holds from the run's last
    # report until its first report + window.
    latest: int | None = None
    for i in range(len(reports) - rule.count + 1):
        if reports[i + rule.count - 1].at - reports[i].at <= window:
            latest = i
    if latest is None:
        return None
    start = reports[latest].at
    until = start + window
    active = now <= until
    members = [r for r in reports if start <= r.at <= until]
    area = config.area_names_ja[area_id]
    label = text.CATEGORY_LABELS_JA[rule.category]
    return Signal(
        rule_id=rule.rule_id,
        level=rule.level if active else 0,
        clear_since=None if active else until,
        lift_after=timedelta(minutes=rule.lift_after_minutes),
        evidence=tuple(r.event_id for r in members)[:_MAX_EVIDENCE_PER_SIGNAL],
        text=(f"{area}で{label}（深刻度{rule.min_severity}以上）の報告が"
              f"{text.duration(window)}以内に{len(members)}件"
              f"（{text.when(members[0].at, config.timezone)}〜"
              f"{text.when(members[-1].at, config.timezone)}、基準{rule.count}件）"
              + ("" if active else f"、{text.when(until, config.timezone)}以降は基準未満")),
        auto_issue=rule.auto_issue_level_5,
    )
