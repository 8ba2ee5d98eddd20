"""The evacuation decision engine: ``(DecisionState, Event) -> (DecisionState, events)``.

Pure: no I/O, no clock, no randomness. The only clock is the *watermark*, the
latest event time seen; every id is derived from the input (``derive_id``), and
every output carries the input's ``occurred_at`` and ``recorded_at``, so the same
input sequence always yields the same state and the same output events, byte
for byte. The faust app (``services.evacuation.app``) feeds it one event at a
time from a single ordered log.

Per event:

1. fold the event into the state (gauge, warning, quake, report, shelter), or
   carry out / refuse an HQ command;
2. mark gauges silent for too long as stale (``hazard.data_quality``);
3. evaluate every (area, hazard) cell: recommend issuing or raising an order
   when the rules call for a level above what is ordered or already recommended
   in this episode; withdraw pending recommendations whose conditions cleared;
   recommend lifting once every condition has been clear for its period;
4. forget closed things older than the retention period.

Orders are per (area, hazard): a recommendation is for one area, and a manual
order for several areas is one order per area, so each area's level can be
raised and lifted on its own evidence.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import UUID

from schemas.envelope import Envelope, derive_id, new_event
from schemas.evacuation import (
    CommandAction,
    CommandRejected,
    EvacuationCommand,
    EvacuationRecommended,
    OrderIssued,
    OrderLifted,
    OrderUpdated,
    RecommendationClosed,
    RecommendationKind,
    RecommendationOutcome,
)
from schemas.events import Event
from schemas.hazards import (
    DataQualityStatus,
    GaugeReading,
    Hazard,
    HazardDataQuality,
    HazardWarning,
    SeismicIntensity,
    WarningAction,
)
from schemas.reports import ReportAccepted
from schemas.shelters import ShelterStatusChanged
from services.common.auth import Role
from services.evacuation import text
from services.evacuation.config import EngineConfig
from services.evacuation.shelters import choose_shelters, designated_for
from services.evacuation.signals import Signal, index_reports, signals_for
from services.evacuation.state import (
    CellState,
    CommandSeen,
    DecisionState,
    GaugeState,
    OrderState,
    QuakeArea,
    QuakeState,
    Reading,
    RecommendationState,
    RecommendationStatus,
    ReportEntry,
    ShelterView,
    WarningState,
    cell_key,
)

__all__ = ["INPUT_TYPES", "SOURCE", "replay", "step"]

SOURCE: Final = "evacuation-decision"
"""The ``source`` of every event the engine emits."""

INPUT_TYPES: Final = frozenset({
    GaugeReading.EVENT_TYPE,
    HazardWarning.EVENT_TYPE,
    SeismicIntensity.EVENT_TYPE,
    ReportAccepted.EVENT_TYPE,
    ShelterStatusChanged.EVENT_TYPE,
    EvacuationCommand.EVENT_TYPE,
})
"""The event types the engine reads; any other event leaves the state unchanged."""

_HQ: Final = Role.HQ.value
_MAX_EVIDENCE: Final = 500
_MAX_EVENT_IDS_PER_WARNING: Final = 50
_RATIONALE_LIMIT: Final = 2000
_REASON_LIMIT: Final = 1000


def step(
    config: EngineConfig, state: DecisionState, event: Event
) -> tuple[DecisionState, tuple[Event, ...]]:
    """Fold one event into the state; return the new state and the events to emit."""
    if event.type not in INPUT_TYPES:
        return state, ()
    run = _Run(config, state, event)
    run.apply()
    return run.result()


def replay(
    config: EngineConfig, events: Iterable[Event], state: DecisionState | None = None
) -> tuple[DecisionState, tuple[Event, ...]]:
    """Fold a sequence of events; return the final state and every emitted event in order."""
    current = state if state is not None else DecisionState()
    emitted: list[Event] = []
    for event in events:
        current, out = step(config, current, event)
        emitted.extend(out)
    return current, tuple(emitted)


def _eid(*parts: str | UUID | int) -> UUID:
    return derive_id(SOURCE, *parts)


class _Rejected(Exception):
    """A command cannot be carried out (turned into ``evacuation.command_rejected``)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Run:
    """The working copy for one event; the input state is never touched."""

    def __init__(self, config: EngineConfig, state: DecisionState, event: Event) -> None:
        self.c = config
        self.e = event
        self.now: datetime = (event.occurred_at if state.watermark is None
                              else max(state.watermark, event.occurred_at))
        self.gauges = dict(state.gauges)
        self.warnings = dict(state.warnings)
        self.quakes = dict(state.quakes)
        self.reports = dict(state.reports)
        self.shelters = dict(state.shelters)
        self.cells = dict(state.cells)
        self.recs = dict(state.recommendations)
        self.orders = dict(state.orders)
        self.commands = dict(state.commands)
        self.out: list[Event] = []

    def result(self) -> tuple[DecisionState, tuple[Event, ...]]:
        # Every part was built from validated models: no need to validate it all again.
        state = DecisionState.model_construct(
            watermark=self.now, gauges=self.gauges, warnings=self.warnings, quakes=self.quakes,
            reports=self.reports, shelters=self.shelters, cells=self.cells,
            recommendations=self.recs, orders=self.orders, commands=self.commands,
        )
        return state, tuple(self.out)

    # --- dispatch -----------------------------------------------------------

    def apply(self) -> None:
        e = self.e
        if isinstance(e, GaugeReading):
            self._gauge_reading(e)
        elif isinstance(e, HazardWarning):
            self._warning(e)
        elif isinstance(e, SeismicIntensity):
            self._seismic(e)
        elif isinstance(e, ReportAccepted):
            self._report(e)
        elif isinstance(e, ShelterStatusChanged):
            self._shelter(e)
        elif isinstance(e, EvacuationCommand):
            if str(e.event_id) in self.commands:
                return  # redelivered: it was carried out (or refused) the first time
            self.commands[str(e.event_id)] = CommandSeen(at=e.occurred_at)
            try:
                self._command(e)
            except _Rejected as refused:
                self._refuse(e, refused)
        self._check_stale()
        self._evaluate()
        self._prune()

    def _emit(self, cls: type[Envelope], payload: dict[str, Any], *, event_id: UUID) -> None:
        made = new_event(cls, payload, occurred_at=self.e.occurred_at, source=SOURCE,
                         cause=self.e, event_id=event_id, recorded_at=self.e.recorded_at)
        self.out.append(made)  # type: ignore[arg-type]  # every cls passed is in the union

    # --- observations -------------------------------------------------------

    def _gauge_reading(self, e: GaugeReading) -> None:
        p = e.payload
        info = self.c.gauges.get(p.gauge_id)
        if info is None:
            return  # not a gauge of this region's rules
        old = self.gauges.get(p.gauge_id)
        if old is not None and (p.observed_at, str(e.event_id)) <= (
            old.last.observed_at, str(old.last.event_id)
        ):
            return  # a duplicate, or older than what we have: the newest reading counts
        clear_since: datetime | None = None
        river = self.c.rules.river
        if river is not None and p.level_m < info.thresholds[river.lift_below]:
            keep = old is not None and not old.stale and old.clear_since is not None
            # After a silence the clear spell starts again: a silent gauge proved nothing.
            clear_since = old.clear_since if keep and old is not None else p.observed_at
        if old is not None and old.stale:
            gap = p.observed_at - old.last.observed_at
            self._data_quality(p.gauge_id, DataQualityStatus.RESTORED, old, gap,
                               f"{info.name_ja}の水位データが復旧しました（途絶 "
                               f"{text.duration(gap)}、最新 {text.metres(p.level_m)}）。")
        self.gauges[p.gauge_id] = GaugeState(
            last=Reading(event_id=e.event_id, level_m=p.level_m, observed_at=p.observed_at),
            clear_since=clear_since,
        )

    def _warning(self, e: HazardWarning) -> None:
        p = e.payload
        old = self.warnings.get(p.warning_id)
        if old is not None and (e.occurred_at, str(e.event_id)) <= (
            old.updated_at, str(old.event_id)
        ):
            return  # duplicate or out of date: updates of one warning apply in event time
        cancelled = p.action is WarningAction.CANCELLED
        areas = tuple(a for a in p.area_ids if a in self.c.area_names_ja)
        ended = dict(old.ended_areas) if old is not None else {}
        if cancelled:
            areas = tuple(dict.fromkeys((*(old.area_ids if old else ()), *areas)))
        elif old is not None:
            for area in old.area_ids:
                if area not in areas:
                    ended[area] = e.occurred_at
        for area in areas:
            ended.pop(area, None)
        self.warnings[p.warning_id] = WarningState(
            warning_id=p.warning_id, kind=p.kind, name=p.name, hazard=p.hazard,
            level_equivalent=p.alert_level_equivalent, source=p.source, area_ids=areas,
            # The first issue time is the one people refer to ("issued at 09:10").
            ended_areas=ended, issued_at=min(old.issued_at, p.issued_at) if old else p.issued_at,
            expires_at=p.expires_at,
            cancelled_at=e.occurred_at if cancelled else None, updated_at=e.occurred_at,
            event_id=e.event_id,
            event_ids=((*(old.event_ids if old else ()), e.event_id))[-_MAX_EVENT_IDS_PER_WARNING:],
        )

    def _seismic(self, e: SeismicIntensity) -> None:
        p = e.payload
        old = self.quakes.get(p.quake_id)
        areas = dict(old.areas) if old is not None else {}
        changed = old is None
        for item in p.intensities:
            if item.area_id not in self.c.area_names_ja:
                continue
            known = areas.get(item.area_id)
            # The highest intensity reported for an area counts, whatever the order
            # of the updates: it is the conservative reading and order-independent.
            if known is None or item.shindo.rank > known.shindo.rank:
                areas[item.area_id] = QuakeArea(shindo=item.shindo, event_id=e.event_id)
                changed = True
        if not changed:
            return
        self.quakes[p.quake_id] = QuakeState(
            quake_id=p.quake_id,
            at=e.occurred_at if old is None else min(old.at, e.occurred_at),
            magnitude=p.magnitude if p.magnitude is not None else (old.magnitude if old else None),
            epicentre=p.epicentre if p.epicentre is not None else (old.epicentre if old else None),
            areas=areas,
        )

    def _report_horizon(self) -> timedelta:
        # A report is kept while its rule can still change a decision (its window and
        # the lift period after it) and, beyond that, for the state retention period,
        # so that a lift is still judged on its evidence after a quiet spell.
        rules = self.c.rules
        minutes = [r.window_minutes + r.lift_after_minutes for r in rules.report_clusters]
        if rules.river is not None and rules.river.flooding_observed is not None:
            minutes.append(rules.river.flooding_observed.window_minutes
                           + rules.river.lift_after_minutes)
        return max(timedelta(minutes=max(minutes, default=0)),
                   timedelta(hours=rules.state.keep_closed_hours))

    def _counts(self, e: ReportAccepted) -> bool:
        report = e.payload.report
        rules = self.c.rules
        if any(r.category is report.category and report.severity >= r.min_severity
               for r in rules.report_clusters):
            return True
        observed = rules.river.flooding_observed if rules.river is not None else None
        return (observed is not None and observed.category is report.category
                and report.severity >= observed.min_severity)

    def _report(self, e: ReportAccepted) -> None:
        p = e.payload
        if p.area_id is None or p.area_id not in self.c.area_names_ja or not self._counts(e):
            return
        key = str(p.report_id)
        if key in self.reports:
            return  # the same report, accepted again
        if e.occurred_at < self.now - self._report_horizon():
            return  # older than anything still kept: it can no longer change a decision
        self.reports[key] = ReportEntry(
            report_id=p.report_id, event_id=e.event_id, area_id=p.area_id,
            category=p.report.category, severity=p.report.severity, at=e.occurred_at,
        )

    def _shelter(self, e: ShelterStatusChanged) -> None:
        p = e.payload
        if p.shelter_id not in self.c.sites:
            return
        old = self.shelters.get(p.shelter_id)
        if old is not None and old.version >= p.version:
            return  # the tracker versions its states; the highest wins
        self.shelters[p.shelter_id] = ShelterView(
            shelter_id=p.shelter_id, version=p.version, status=p.status,
            occupancy=p.occupancy, capacity=p.capacity,
        )

    # --- data quality ---------------------------------------------------------

    def _check_stale(self) -> None:
        factor = self.c.rules.data_quality.stale_factor
        for gauge_id in sorted(self.gauges):
            gauge = self.gauges[gauge_id]
            info = self.c.gauges.get(gauge_id)
            if gauge.stale or info is None:
                continue
            allowed = info.reporting_period * factor
            silent = self.now - gauge.last.observed_at
            if silent <= allowed:
                continue
            self.gauges[gauge_id] = gauge.model_copy(update={"stale": True, "clear_since": None})
            self._data_quality(
                gauge_id, DataQualityStatus.STALE, gauge, silent,
                f"{info.name_ja}の水位が{text.duration(silent)}届いていません（報告間隔"
                f"{text.duration(info.reporting_period)}の{factor:g}倍を超過）。最終観測値"
                f" {text.metres(gauge.last.level_m)}"
                f"（{text.when(gauge.last.observed_at, self.c.timezone)}）"
                "は判断に使わず、この水位計による解除の推奨も止めます。",
            )

    def _data_quality(self, gauge_id: str, status: DataQualityStatus, gauge: GaugeState,
                      silent: timedelta, message: str) -> None:
        info = self.c.gauges[gauge_id]
        self._emit(HazardDataQuality, {
            "gauge_id": gauge_id,
            "status": status,
            "last_observed_at": gauge.last.observed_at,
            "last_reading_event_id": gauge.last.event_id,
            "silent_seconds": int(silent.total_seconds()),
            "expected_period_seconds": int(
                (info.reporting_period * self.c.rules.data_quality.stale_factor).total_seconds()),
            "area_ids": info.affected_area_ids,
            "message": text.clip(message, _RATIONALE_LIMIT),
        }, event_id=_eid("data_quality", gauge_id, status.value, gauge.last.event_id))

    # --- evaluation -----------------------------------------------------------

    def _view(self) -> DecisionState:
        # What the signal rules read: the observations folded so far.
        return DecisionState.model_construct(
            watermark=self.now, gauges=self.gauges, warnings=self.warnings, quakes=self.quakes,
            reports=self.reports, shelters=self.shelters, cells={}, recommendations={},
            orders={},
        )

    def _evaluate(self) -> None:
        view = self._view()
        reports = index_reports(view)
        for area_id in self.c.area_ids:
            for hazard in Hazard:
                key = cell_key(area_id, hazard)
                signals = signals_for(self.c, view, area_id, hazard, self.now, reports)
                cell = self.cells.get(key)
                if cell is None and not signals:
                    continue
                self._evaluate_cell(area_id, hazard, cell or CellState(), signals)

    def _evaluate_cell(self, area_id: str, hazard: Hazard, cell: CellState,
                       signals: list[Signal]) -> None:
        order = self.orders[str(cell.order_id)] if cell.order_id is not None else None
        active = [s for s in signals if s.level > 0]
        level = max((s.level for s in active), default=0)
        floor = max(order.level if order is not None else 0, cell.recommended_level)
        liftable: datetime | None
        if signals:
            clear = all(s.clear_since is not None for s in signals)
            liftable = max(s.liftable_at for s in signals if s.liftable_at) if clear else None
            if liftable is not None and order is not None:
                # An order HQ issued (or raised) while the conditions were already clear
                # gets its own full period before a lift is proposed, not an instant one.
                liftable = max(liftable,
                               order.approved_at + max(s.lift_after for s in signals))
            cell = cell.model_copy(update={"liftable_at": liftable})
        else:
            # Every source was forgotten (retention): what the cell last saw stands. A
            # manual order with no sources at all is never proposed for lifting.
            liftable = cell.liftable_at
            clear = liftable is not None
        if level >= 3 and level > floor:
            self._recommend(area_id, hazard, cell, order, level, active)
            return
        if clear:
            open_rec = self._open(cell)
            if order is None:
                if open_rec is not None:
                    self._close(open_rec, RecommendationOutcome.WITHDRAWN,
                                "発令前に条件が解消したため取り下げ："
                                + ("。".join(s.text for s in signals) or "条件の記録が期限切れ"))
                self._set_cell(area_id, hazard, CellState())
                return
            if open_rec is not None and open_rec.kind is not RecommendationKind.LIFT:
                self._close(open_rec, RecommendationOutcome.WITHDRAWN,
                            "条件が解消したため取り下げ："
                            + ("。".join(s.text for s in signals) or "条件の記録が期限切れ"))
                cell = cell.model_copy(update={"open_recommendation_id": None})
            assert liftable is not None  # clear
            if not cell.lift_recommended and self.now >= liftable:
                self._recommend_lift(area_id, hazard, cell, order, signals)
                return
            self._set_cell(area_id, hazard, cell)
            return
        if cell.lift_recommended:
            open_rec = self._open(cell)
            if open_rec is not None and open_rec.kind is RecommendationKind.LIFT:
                self._close(open_rec, RecommendationOutcome.WITHDRAWN,
                            "解除の条件が崩れたため取り下げ：" +
                            "。".join(s.text for s in signals if s.clear_since is None))
                cell = cell.model_copy(update={"open_recommendation_id": None})
            cell = cell.model_copy(update={"lift_recommended": False})
        self._set_cell(area_id, hazard, cell)

    def _open(self, cell: CellState) -> RecommendationState | None:
        if cell.open_recommendation_id is None:
            return None
        return self.recs[str(cell.open_recommendation_id)]

    def _cell(self, area_id: str, hazard: Hazard) -> CellState:
        return self.cells.get(cell_key(area_id, hazard)) or CellState()

    def _set_cell(self, area_id: str, hazard: Hazard, cell: CellState) -> None:
        key = cell_key(area_id, hazard)
        if cell == CellState():
            self.cells.pop(key, None)  # an idle cell is not worth remembering
        else:
            self.cells[key] = cell

    def _recommend(self, area_id: str, hazard: Hazard, cell: CellState, order: OrderState | None,
                   level: int, active: list[Signal]) -> None:
        kind = RecommendationKind.ISSUE if order is None else RecommendationKind.RAISE
        rec_id = derive_id("evacuation.recommendation", kind.value, area_id, hazard.value, level,
                           self.e.event_id)
        open_rec = self._open(cell)
        if open_rec is not None:
            self._close(open_rec, RecommendationOutcome.SUPERSEDED,
                        f"新しい推奨（{text.level(level)}）に置き換え", superseded_by=rec_id)
        choice = choose_shelters(self.c, self.shelters, area_id, hazard)
        area = self.c.area_names_ja[area_id]
        if order is None:
            action = f"{area}に{text.level(level)}（{text.hazard(hazard)}）の発令を推奨します。"
        else:
            action = (f"{area}の{text.level(order.level)}（{text.hazard(hazard)}）を"
                      f"{text.level(level)}へ引き上げることを推奨します。")
        auto_rules = [s.rule_id for s in active if s.level == 5 and s.auto_issue]
        auto = level == 5 and bool(auto_rules)
        rationale = "。".join(s.text for s in active) + "。" + action + choice.text
        if auto:
            rationale += f"規則 {auto_rules[0]} の事前承認により自動発令しました。"
        evidence = tuple(dict.fromkeys(i for s in active for i in s.evidence))[:_MAX_EVIDENCE]
        rec = RecommendationState(
            recommendation_id=rec_id, kind=kind, area_id=area_id, hazard=hazard, level=level,
            order_id=order.order_id if order is not None else None, rule_id=active[0].rule_id,
            suggested_shelter_ids=choice.suggested, shelters_to_open=choice.to_open,
            status=RecommendationStatus.OPEN, created_at=self.now,
        )
        self._emit(EvacuationRecommended, {
            "recommendation_id": rec_id,
            "kind": kind,
            "order_id": rec.order_id,
            "area_ids": (area_id,),
            "level": level,
            "hazard": hazard,
            "rationale": text.clip(rationale, _RATIONALE_LIMIT),
            "evidence_event_ids": evidence,
            "suggested_shelter_ids": choice.suggested,
            "shelters_to_open": choice.to_open,
            "rule_id": rec.rule_id,
        }, event_id=_eid("recommended", rec_id))
        self.recs[str(rec_id)] = rec
        self._set_cell(area_id, hazard, cell.model_copy(update={
            "open_recommendation_id": rec_id, "recommended_level": level,
            "lift_recommended": False,
        }))
        if auto:
            self._carry_out(rec, operator=auto_rules[0], command=None, reason=None)

    def _recommend_lift(self, area_id: str, hazard: Hazard, cell: CellState, order: OrderState,
                        signals: list[Signal]) -> None:
        rec_id = derive_id("evacuation.recommendation", RecommendationKind.LIFT.value,
                           order.order_id, self.e.event_id)
        area = self.c.area_names_ja[area_id]
        if signals:
            rule_id = max(signals, key=lambda s: (s.liftable_at, s.rule_id)).rule_id
            longest = text.duration(max(s.lift_after for s in signals))
            rationale = ("。".join(s.text for s in signals) + "。" +
                         f"解除の条件（下限を下回った状態が最長{longest}継続）を満たしたため、")
        else:
            rule_id = "retained-conditions"
            rationale = "発令の根拠となった条件は解消し、その記録も保存期間を過ぎたため、"
        rationale += (f"{area}の{text.level(order.level)}（{text.hazard(hazard)}）"
                      "の解除を推奨します。")
        evidence = tuple(dict.fromkeys(i for s in signals for i in s.evidence))[:_MAX_EVIDENCE]
        rec = RecommendationState(
            recommendation_id=rec_id, kind=RecommendationKind.LIFT, area_id=area_id,
            hazard=hazard, level=order.level, order_id=order.order_id, rule_id=rule_id,
            suggested_shelter_ids=(), shelters_to_open=(), status=RecommendationStatus.OPEN,
            created_at=self.now,
        )
        self._emit(EvacuationRecommended, {
            "recommendation_id": rec_id,
            "kind": RecommendationKind.LIFT,
            "order_id": order.order_id,
            "area_ids": (area_id,),
            "level": order.level,
            "hazard": hazard,
            "rationale": text.clip(rationale, _RATIONALE_LIMIT),
            "evidence_event_ids": evidence,
            "rule_id": rec.rule_id,
        }, event_id=_eid("recommended", rec_id))
        self.recs[str(rec_id)] = rec
        self._set_cell(area_id, hazard, cell.model_copy(update={
            "open_recommendation_id": rec_id, "lift_recommended": True,
        }))

    def _close(self, rec: RecommendationState, outcome: RecommendationOutcome, reason: str, *,
               operator: str | None = None, command: EvacuationCommand | None = None,
               superseded_by: UUID | None = None) -> None:
        status = RecommendationStatus(outcome.value)
        self.recs[str(rec.recommendation_id)] = rec.model_copy(update={
            "status": status, "closed_at": self.now,
            "decided_by": command.event_id if command is not None else None,
        })
        self._emit(RecommendationClosed, {
            "recommendation_id": rec.recommendation_id,
            "kind": rec.kind,
            "order_id": rec.order_id,
            "area_ids": (rec.area_id,),
            "level": rec.level,
            "hazard": rec.hazard,
            "outcome": outcome,
            "reason": text.clip(reason, _REASON_LIMIT),
            "operator": operator,
            "command_event_id": command.event_id if command is not None else None,
            "superseded_by": superseded_by,
        }, event_id=_eid("closed", rec.recommendation_id))
        cell = self._cell(rec.area_id, rec.hazard)
        if cell.open_recommendation_id == rec.recommendation_id:
            self._set_cell(rec.area_id, rec.hazard,
                           cell.model_copy(update={"open_recommendation_id": None}))

    # --- orders ---------------------------------------------------------------

    def _carry_out(self, rec: RecommendationState, *, operator: str,
                   command: EvacuationCommand | None, reason: str | None) -> None:
        """Turn an approved (or pre-authorised) recommendation into an order change."""
        automatic = command is None
        at = self.e.occurred_at
        cell = self._cell(rec.area_id, rec.hazard)
        command_id = command.event_id if command is not None else None
        self.recs[str(rec.recommendation_id)] = rec.model_copy(update={
            "status": RecommendationStatus.APPROVED, "closed_at": self.now,
            "decided_by": command_id,
        })
        cell = cell.model_copy(update={"open_recommendation_id": None})
        self._set_cell(rec.area_id, rec.hazard, cell)
        designated = rec.suggested_shelter_ids + rec.shelters_to_open
        if rec.kind is RecommendationKind.ISSUE:
            order = OrderState(
                order_id=derive_id("evacuation.order", rec.recommendation_id),
                area_id=rec.area_id, hazard=rec.hazard, level=rec.level, version=1,
                designated_shelter_ids=designated, issued_by=operator, approved_at=at,
                automatic=automatic, recommendation_id=rec.recommendation_id,
                last_command_id=command_id,
            )
            self._publish_order(order, None)
            self._set_cell(rec.area_id, rec.hazard, cell.model_copy(update={
                "order_id": order.order_id,
                "recommended_level": max(cell.recommended_level, rec.level),
            }))
            return
        assert rec.order_id is not None  # raise and lift name their order
        current = self.orders[str(rec.order_id)]
        if rec.kind is RecommendationKind.RAISE:
            updated = current.model_copy(update={
                "level": rec.level, "version": current.version + 1,
                "designated_shelter_ids": designated or current.designated_shelter_ids,
                "issued_by": operator, "approved_at": at, "automatic": automatic,
                "recommendation_id": rec.recommendation_id, "last_command_id": command_id,
            })
            self._publish_order(updated, current)
            self._set_cell(rec.area_id, rec.hazard, cell.model_copy(update={
                "recommended_level": max(cell.recommended_level, rec.level),
            }))
            return
        self._lift(current, operator=operator, command=command, after_recommendation=True,
                   reason=reason or f"解除の推奨 {rec.recommendation_id} を承認")

    def _publish_order(self, order: OrderState, previous: OrderState | None) -> None:
        body: dict[str, Any] = {
            "order_id": order.order_id,
            "version": order.version,
            "area_ids": (order.area_id,),
            "level": order.level,
            "hazard": order.hazard,
            "designated_shelter_ids": order.designated_shelter_ids,
            "issued_by": order.issued_by,
            "approved_at": order.approved_at,
            "automatic": order.automatic,
            "recommendation_id": order.recommendation_id,
        }
        self.orders[str(order.order_id)] = order
        event_id = _eid("order", order.order_id, order.version)
        if previous is None:
            self._emit(OrderIssued, body, event_id=event_id)
        else:
            body["supersedes_version"] = previous.version
            self._emit(OrderUpdated, body, event_id=event_id)

    def _lift(self, order: OrderState, *, operator: str, command: EvacuationCommand | None,
              after_recommendation: bool, reason: str) -> None:
        lifted = order.model_copy(update={
            "version": order.version + 1, "lifted": True, "closed_at": self.now,
            "last_command_id": command.event_id if command is not None else None,
        })
        self.orders[str(order.order_id)] = lifted
        self._emit(OrderLifted, {
            "order_id": order.order_id,
            "version": lifted.version,
            "supersedes_version": order.version,
            "area_ids": (order.area_id,),
            "level": order.level,
            "hazard": order.hazard,
            "designated_shelter_ids": order.designated_shelter_ids,
            "issued_by": order.issued_by,
            "approved_at": order.approved_at,
            "automatic": order.automatic,
            "recommendation_id": order.recommendation_id,
            "lifted_by": operator,
            "reason": text.clip(reason, _REASON_LIMIT),
        }, event_id=_eid("order", order.order_id, lifted.version))
        cell = self._cell(order.area_id, order.hazard)
        open_rec = self._open(cell)
        if open_rec is not None:
            self._close(open_rec, RecommendationOutcome.SUPERSEDED,
                        "本部が命令を解除したため", superseded_by=order.order_id)
        # After a lift HQ chose while conditions were still active, recommend again
        # only if they get worse than the lifted level.
        self._set_cell(order.area_id, order.hazard, CellState(
            recommended_level=0 if after_recommendation else order.level))

    # --- commands -------------------------------------------------------------

    def _command(self, e: EvacuationCommand) -> None:
        p = e.payload
        if p.operator_role != _HQ:
            if p.operator_role is None:
                raise _Rejected("role_missing", "コマンドに利用者の役割（operator_role）がないため"
                                "実行しません。避難の判断は本部（hq）のみが指示できます。")
            raise _Rejected("forbidden_role", f"役割 {p.operator_role} の利用者は避難の判断を"
                            "指示できません。本部（hq）のみが指示できます。")
        if p.action in (CommandAction.APPROVE, CommandAction.REJECT):
            self._decide(e)
        elif p.action is CommandAction.ISSUE:
            self._manual_issue(e)
        else:
            self._manual_lift(e)

    def _decide(self, e: EvacuationCommand) -> None:
        p = e.payload
        assert p.recommendation_id is not None  # the command model requires it
        rec = self.recs.get(str(p.recommendation_id))
        if rec is None:
            raise _Rejected("unknown_recommendation",
                            f"推奨 {p.recommendation_id} は記録にありません。")
        if rec.decided_by == e.event_id:
            return  # this very command, delivered again: already carried out
        if rec.status is not RecommendationStatus.OPEN:
            codes = {
                RecommendationStatus.APPROVED: ("already_decided", "既に承認されています"),
                RecommendationStatus.REJECTED: ("already_decided", "既に却下されています"),
                RecommendationStatus.SUPERSEDED: (
                    "superseded", "新しい推奨または本部の判断により置き換えられています"),
                RecommendationStatus.WITHDRAWN: (
                    "withdrawn", "条件が解消したため取り下げられています"),
            }
            code, words = codes[rec.status]
            raise _Rejected(code, f"推奨 {rec.recommendation_id} は{words}。")
        if p.action is CommandAction.REJECT:
            assert p.reason is not None  # required for reject
            self._close(rec, RecommendationOutcome.REJECTED, p.reason, operator=p.operator,
                        command=e)
            return
        self._carry_out(rec, operator=p.operator, command=e, reason=p.reason)

    def _manual_issue(self, e: EvacuationCommand) -> None:
        p = e.payload
        assert p.area_ids is not None and p.level is not None and p.hazard is not None
        hazard = p.hazard
        for area_id in p.area_ids:
            if area_id not in self.c.area_names_ja:
                raise _Rejected("unknown_area", f"地区 {area_id} はこの地域にありません。")
        for site_id in p.designated_shelter_ids or ():
            if site_id not in self.c.sites:
                raise _Rejected("unknown_site", f"避難場所 {site_id} はこの地域にありません。")
            if not designated_for(self.c, site_id, hazard):
                raise _Rejected("not_designated",
                                f"{self.c.sites[site_id].name_ja}（{site_id}）は"
                                f"{text.hazard(hazard)}の指定緊急避難場所ではありません。")
        targets: list[tuple[str, OrderState | None]] = []
        if p.order_id is not None:
            order = self.orders.get(str(p.order_id))
            if order is None:
                raise _Rejected("unknown_order", f"命令 {p.order_id} は記録にありません。")
            if order.last_command_id == e.event_id:
                return  # redelivered
            if order.lifted:
                raise _Rejected("already_lifted", f"命令 {p.order_id} は解除済みです。")
            if tuple(p.area_ids) != (order.area_id,) or hazard is not order.hazard:
                raise _Rejected("order_mismatch",
                                f"命令 {p.order_id} は{self.c.area_names_ja[order.area_id]}の"
                                f"{text.hazard(order.hazard)}の命令です。地区と災害を合わせてください。")
            targets.append((order.area_id, order))
        else:
            for area_id in p.area_ids:
                cell = self._cell(area_id, hazard)
                current = (self.orders[str(cell.order_id)] if cell.order_id is not None
                           else None)
                if current is not None and current.last_command_id == e.event_id:
                    continue  # redelivered: this area was done
                if str(derive_id("evacuation.order", e.event_id, area_id)) in self.orders:
                    continue
                targets.append((area_id, current))
        for area_id, current in targets:
            if p.designated_shelter_ids is not None:
                designated = tuple(p.designated_shelter_ids)
            else:
                choice = choose_shelters(self.c, self.shelters, area_id, hazard)
                designated = choice.suggested + choice.to_open
            if current is None:
                order = OrderState(
                    order_id=derive_id("evacuation.order", e.event_id, area_id),
                    area_id=area_id, hazard=hazard, level=p.level, version=1,
                    designated_shelter_ids=designated, issued_by=p.operator,
                    approved_at=e.occurred_at, automatic=False, recommendation_id=None,
                    last_command_id=e.event_id,
                )
                self._publish_order(order, None)
            else:
                order = current.model_copy(update={
                    "level": p.level, "version": current.version + 1,
                    "designated_shelter_ids": designated, "issued_by": p.operator,
                    "approved_at": e.occurred_at, "automatic": False,
                    "recommendation_id": None, "last_command_id": e.event_id,
                })
                self._publish_order(order, current)
            cell = self._cell(area_id, hazard)
            open_rec = self._open(cell)
            if open_rec is not None:
                self._close(open_rec, RecommendationOutcome.SUPERSEDED,
                            f"本部が{text.level(p.level)}を手動で発令したため",
                            superseded_by=order.order_id)
            # The manual level is the new floor: recommend again only above it.
            self._set_cell(area_id, hazard, CellState(order_id=order.order_id,
                                                      recommended_level=p.level))

    def _manual_lift(self, e: EvacuationCommand) -> None:
        p = e.payload
        assert p.order_id is not None and p.reason is not None
        order = self.orders.get(str(p.order_id))
        if order is None:
            raise _Rejected("unknown_order", f"命令 {p.order_id} は記録にありません。")
        if order.lifted:
            if order.last_command_id == e.event_id:
                return  # redelivered
            raise _Rejected("already_lifted", f"命令 {p.order_id} は解除済みです。")
        self._lift(order, operator=p.operator, command=e, after_recommendation=False,
                   reason=p.reason)

    def _refuse(self, e: EvacuationCommand, refused: _Rejected) -> None:
        p = e.payload
        self._emit(CommandRejected, {
            "command_event_id": e.event_id,
            "action": p.action,
            "operator": p.operator,
            "operator_role": p.operator_role,
            "recommendation_id": p.recommendation_id,
            "order_id": p.order_id,
            "code": refused.code,
            "reason": text.clip(refused.reason, _REASON_LIMIT),
        }, event_id=_eid("command_rejected", e.event_id))

    # --- retention ------------------------------------------------------------

    def _prune(self) -> None:
        horizon = self.now - self._report_horizon()
        for key in [k for k, r in self.reports.items() if r.at < horizon]:
            del self.reports[key]
        cutoff = self.now - timedelta(hours=self.c.rules.state.keep_closed_hours)
        for key in [k for k, r in self.recs.items()
                    if r.closed_at is not None and r.closed_at < cutoff]:
            del self.recs[key]
        for key in [k for k, o in self.orders.items()
                    if o.lifted and o.closed_at is not None and o.closed_at < cutoff]:
            del self.orders[key]
        for key in [k for k, seen in self.commands.items() if seen.at < cutoff]:
            del self.commands[key]
        for key in [k for k, w in self.warnings.items() if _warning_over(w, cutoff)]:
            del self.warnings[key]
        longest_hold = max((timedelta(minutes=r.hold_minutes) for r in self.c.rules.seismic),
                           default=timedelta(0))
        for key in [k for k, q in self.quakes.items() if q.at + longest_hold < cutoff]:
            del self.quakes[key]


def _warning_over(warning: WarningState, cutoff: datetime) -> bool:
    """Whether a warning ended (cancelled or expired) before ``cutoff``."""
    ends = [t for t in (warning.cancelled_at, warning.expires_at) if t is not None]
    if not ends or min(ends) >= cutoff:
        return False
    return all(t < cutoff for t in warning.ended_areas.values())
