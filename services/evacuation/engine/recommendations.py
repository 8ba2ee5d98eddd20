"""The recommendation lifecycle: open one (issue, raise or lift), close it with an outcome.

A recommendation is for one (area, hazard) cell, which holds at most one open
recommendation; a new one supersedes it. Closing records why (withdrawn,
superseded, rejected) and frees the cell. Approval is :mod:`.orders`' business.
"""

from __future__ import annotations

from typing import Final
from uuid import UUID

from schemas.envelope import derive_id
from schemas.evacuation import (
    EvacuationCommand,
    EvacuationRecommended,
    RecommendationClosed,
    RecommendationKind,
    RecommendationOutcome,
)
from schemas.hazards import Hazard
from services.evacuation import text
from services.evacuation.engine.run import RATIONALE_LIMIT, REASON_LIMIT, Run, eid
from services.evacuation.shelters import choose_shelters
from services.evacuation.signals import Signal
from services.evacuation.state import (
    CellState,
    OrderState,
    RecommendationState,
    RecommendationStatus,
)

__all__ = ["close", "recommend", "recommend_lift"]

_MAX_EVIDENCE: Final = 500


def recommend(run: Run, area_id: str, hazard: Hazard, cell: CellState, order: OrderState | None,
              level: int, active: list[Signal]) -> tuple[RecommendationState, str] | None:
    """Recommend issuing or raising the cell's order.

    Under a level-5 rule's prior authorisation, return the recommendation and that
    rule, for the caller to carry out at once; otherwise None.
    """
    kind = RecommendationKind.ISSUE if order is None else RecommendationKind.RAISE
    rec_id = derive_id("evacuation.recommendation", kind.value, area_id, hazard.value, level,
                       run.event.event_id)
    open_rec = run.open_recommendation(cell)
    if open_rec is not None:
        close(run, open_rec, RecommendationOutcome.SUPERSEDED,
              f"新しい推奨（{text.level(level)}）に置き換え", superseded_by=rec_id)
    choice = choose_shelters(run.config, run.shelters, area_id, hazard)
    area = run.config.area_names_ja[area_id]
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
        status=RecommendationStatus.OPEN, created_at=run.now,
    )
    run.emit(EvacuationRecommended, {
        "recommendation_id": rec_id,
        "kind": kind,
        "order_id": rec.order_id,
        "area_ids": (area_id,),
        "level": level,
        "hazard": hazard,
        "rationale": text.clip(rationale, RATIONALE_LIMIT),
        "evidence_event_ids": evidence,
        "suggested_shelter_ids": choice.suggested,
        "shelters_to_open": choice.to_open,
        "rule_id": rec.rule_id,
    }, event_id=eid("recommended", rec_id))
    run.recs[str(rec_id)] = rec
    run.set_cell(area_id, hazard, cell.model_copy(update={
        "open_recommendation_id": rec_id, "recommended_level": level,
        "lift_recommended": False,
    }))
    return (rec, auto_rules[0]) if auto else None


def recommend_lift(run: Run, area_id: str, hazard: Hazard, cell: CellState, order: OrderState,
                   signals: list[Signal]) -> None:
    """Recommend lifting the cell's order: every condition has been clear long enough."""
    rec_id = derive_id("evacuation.recommendation", RecommendationKind.LIFT.value,
                       order.order_id, run.event.event_id)
    area = run.config.area_names_ja[area_id]
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
        created_at=run.now,
    )
    run.emit(EvacuationRecommended, {
        "recommendation_id": rec_id,
        "kind": RecommendationKind.LIFT,
        "order_id": order.order_id,
        "area_ids": (area_id,),
        "level": order.level,
        "hazard": hazard,
        "rationale": text.clip(rationale, RATIONALE_LIMIT),
        "evidence_event_ids": evidence,
        "rule_id": rec.rule_id,
    }, event_id=eid("recommended", rec_id))
    run.recs[str(rec_id)] = rec
    run.set_cell(area_id, hazard, cell.model_copy(update={
        "open_recommendation_id": rec_id, "lift_recommended": True,
    }))


def close(run: Run, rec: RecommendationState, outcome: RecommendationOutcome, reason: str, *,
          operator: str | None = None, command: EvacuationCommand | None = None,
          superseded_by: UUID | None = None) -> None:
    """Close a recommendation with its outcome and reason; free its cell."""
    status = RecommendationStatus(outcome.value)
    run.recs[str(rec.recommendation_id)] = rec.model_copy(update={
        "status": status, "closed_at": run.now,
        "decided_by": command.event_id if command is not None else None,
    })
    run.emit(RecommendationClosed, {
        "recommendation_id": rec.recommendation_id,
        "kind": rec.kind,
        "order_id": rec.order_id,
        "area_ids": (rec.area_id,),
        "level": rec.level,
        "hazard": rec.hazard,
        "outcome": outcome,
        "reason": text.clip(reason, REASON_LIMIT),
        "operator": operator,
        "command_event_id": command.event_id if command is not None else None,
        "superseded_by": superseded_by,
    }, event_id=eid("closed", rec.recommendation_id))
    cell = run.cell(rec.area_id, rec.hazard)
    if cell.open_recommendation_id == rec.recommendation_id:
        run.set_cell(rec.area_id, rec.hazard,
                     cell.model_copy(update={"open_recommendation_id": None}))
