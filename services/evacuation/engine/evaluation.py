"""Evaluating every (area, hazard) cell: recommend, withdraw, or propose a lift (hysteresis).

After each event the rules' signals for a cell are compared with what is
ordered and recommended: a level above both is recommended (carried out at
once under a level-5 rule's prior authorisation); a pending recommendation
whose conditions cleared is withdrawn; a lift is proposed only once every
condition has been clear for its period (and, for an order HQ issued while
they were already clear, a full period after that order), and withdrawn if a
condition returns.
"""

from __future__ import annotations

from datetime import datetime

from schemas.evacuation import RecommendationKind, RecommendationOutcome
from schemas.hazards import Hazard
from services.evacuation.engine.orders import carry_out
from services.evacuation.engine.recommendations import close, recommend, recommend_lift
from services.evacuation.engine.run import Run
from services.evacuation.signals import Signal, index_reports, signals_for
from services.evacuation.state import CellState, DecisionState, cell_key

__all__ = ["evaluate"]


def _view(run: Run) -> DecisionState:
    # What the signal rules read: the observations folded so far.
    return DecisionState.model_construct(
        watermark=run.now, gauges=run.gauges, warnings=run.warnings, quakes=run.quakes,
        reports=run.reports, shelters=run.shelters, cells={}, recommendations={},
        orders={},
    )


def evaluate(run: Run) -> None:
    """Evaluate every cell that has signals or remembers something."""
    view = _view(run)
    reports = index_reports(view)
    for area_id in run.config.area_ids:
        for hazard in Hazard:
            key = cell_key(area_id, hazard)
            signals = signals_for(run.config, view, area_id, hazard, run.now, reports)
            cell = run.cells.get(key)
            if cell is None and not signals:
                continue
            _evaluate_cell(run, area_id, hazard, cell or CellState(), signals)


def _evaluate_cell(run: Run, area_id: str, hazard: Hazard, cell: CellState,
                   signals: list[Signal]) -> None:
    order = run.orders[str(cell.order_id)] if cell.order_id is not None else None
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
        automatic = recommend(run, area_id, hazard, cell, order, level, active)
        if automatic is not None:
            rec, rule_id = automatic  # pre-authorised by HQ: carried out at once
            carry_out(run, rec, operator=rule_id, command=None, reason=None)
        return
    if clear:
        open_rec = run.open_recommendation(cell)
        if order is None:
            if open_rec is not None:
                close(run, open_rec, RecommendationOutcome.WITHDRAWN,
                      "発令前に条件が解消したため取り下げ："
                      + ("。".join(s.text for s in signals) or "条件の記録が期限切れ"))
            run.set_cell(area_id, hazard, CellState())
            return
        if open_rec is not None and open_rec.kind is not RecommendationKind.LIFT:
            close(run, open_rec, RecommendationOutcome.WITHDRAWN,
                  "条件が解消したため取り下げ："
                  + ("。".join(s.text for s in signals) or "条件の記録が期限切れ"))
            cell = cell.model_copy(update={"open_recommendation_id": None})
        assert liftable is not None  # clear
        if not cell.lift_recommended and run.now >= liftable:
            recommend_lift(run, area_id, hazard, cell, order, signals)
            return
        run.set_cell(area_id, hazard, cell)
        return
    if cell.lift_recommended:
        open_rec = run.open_recommendation(cell)
        if open_rec is not None and open_rec.kind is RecommendationKind.LIFT:
            close(run, open_rec, RecommendationOutcome.WITHDRAWN,
                  "解除の条件が崩れたため取り下げ：" +
                  "。".join(s.text for s in signals if s.clear_since is None))
            cell = cell.model_copy(update={"open_recommendation_id": None})
        cell = cell.model_copy(update={"lift_recommended": False})
    run.set_cell(area_id, hazard, cell)
