"""Orders: an approved recommendation becomes an order issued, raised or lifted.

An order is per (area, hazard) and versioned; every change is one
``evacuation.order_*`` event whose id is derived from the order and version.
"""

from __future__ import annotations

from typing import Any

from schemas.envelope import derive_id
from schemas.evacuation import (
    EvacuationCommand,
    OrderIssued,
    OrderLifted,
    OrderUpdated,
    RecommendationKind,
    RecommendationOutcome,
)
from services.evacuation import text
from services.evacuation.engine.recommendations import close
from services.evacuation.engine.run import REASON_LIMIT, Run, eid
from services.evacuation.state import (
    CellState,
    OrderState,
    RecommendationState,
    RecommendationStatus,
)

__all__ = ["carry_out", "lift", "publish_order"]


def carry_out(run: Run, rec: RecommendationState, *, operator: str,
              command: EvacuationCommand | None, reason: str | None) -> None:
    """Turn an approved (or pre-authorised) recommendation into an order change."""
    automatic = command is None
    at = run.event.occurred_at
    cell = run.cell(rec.area_id, rec.hazard)
    command_id = command.event_id if command is not None else None
    run.recs[str(rec.recommendation_id)] = rec.model_copy(update={
        "status": RecommendationStatus.APPROVED, "closed_at": run.now,
        "decided_by": command_id,
    })
    cell = cell.model_copy(update={"open_recommendation_id": None})
    run.set_cell(rec.area_id, rec.hazard, cell)
    designated = rec.suggested_shelter_ids + rec.shelters_to_open
    if rec.kind is RecommendationKind.ISSUE:
        order = OrderState(
            order_id=derive_id("evacuation.order", rec.recommendation_id),
            area_id=rec.area_id, hazard=rec.hazard, level=rec.level, version=1,
            designated_shelter_ids=designated, issued_by=operator, approved_at=at,
            automatic=automatic, recommendation_id=rec.recommendation_id,
            last_command_id=command_id,
        )
        publish_order(run, order, None)
        run.set_cell(rec.area_id, rec.hazard, cell.model_copy(update={
            "order_id": order.order_id,
            "recommended_level": max(cell.recommended_level, rec.level),
        }))
        return
    assert rec.order_id is not None  # raise and lift name their order
    current = run.orders[str(rec.order_id)]
    if rec.kind is RecommendationKind.RAISE:
        updated = current.model_copy(update={
            "level": rec.level, "version": current.version + 1,
            "designated_shelter_ids": designated or current.designated_shelter_ids,
            "issued_by": operator, "approved_at": at, "automatic": automatic,
            "recommendation_id": rec.recommendation_id, "last_command_id": command_id,
        })
        publish_order(run, updated, current)
        run.set_cell(rec.area_id, rec.hazard, cell.model_copy(update={
            "recommended_level": max(cell.recommended_level, rec.level),
        }))
        return
    lift(run, current, operator=operator, command=command, after_recommendation=True,
         reason=reason or f"解除の推奨 {rec.recommendation_id} を承認")


def publish_order(run: Run, order: OrderState, previous: OrderState | None) -> None:
    """Store an order version and emit it (issued, or updated from ``previous``)."""
    body = _order_fields(order)
    run.orders[str(order.order_id)] = order
    event_id = eid("order", order.order_id, order.version)
    if previous is None:
        run.emit(OrderIssued, body, event_id=event_id)
    else:
        body["supersedes_version"] = previous.version
        run.emit(OrderUpdated, body, event_id=event_id)


def _order_fields(order: OrderState) -> dict[str, Any]:
    """What every event about an order version says of it (issued, updated, lifted)."""
    return {
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


def lift(run: Run, order: OrderState, *, operator: str, command: EvacuationCommand | None,
         after_recommendation: bool, reason: str) -> None:
    """Lift an order; close the cell's open recommendation; reset the cell's floor."""
    lifted = order.model_copy(update={
        "version": order.version + 1, "lifted": True, "closed_at": run.now,
        "last_command_id": command.event_id if command is not None else None,
    })
    run.orders[str(order.order_id)] = lifted
    run.emit(OrderLifted, {
        **_order_fields(order),
        "version": lifted.version,
        "supersedes_version": order.version,
        "lifted_by": operator,
        "reason": text.clip(reason, REASON_LIMIT),
    }, event_id=eid("order", order.order_id, lifted.version))
    cell = run.cell(order.area_id, order.hazard)
    open_rec = run.open_recommendation(cell)
    if open_rec is not None:
        close(run, open_rec, RecommendationOutcome.SUPERSEDED,
              "本部が命令を解除したため", superseded_by=order.order_id)
    # After a lift HQ chose while conditions were still active, recommend again
    # only if they get worse than the lifted level.
    run.set_cell(order.area_id, order.hazard, CellState(
        recommended_level=0 if after_recommendation else order.level))
