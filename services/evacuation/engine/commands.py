"""HQ's commands: approve or reject a recommendation, issue or lift an order by hand.

Only HQ may command. A command that cannot be carried out raises
:class:`~services.evacuation.errors.CommandRefused` inside this module and
becomes one ``evacuation.command_rejected`` event naming the rule broken; a
redelivered command changes nothing.
"""

from __future__ import annotations

from typing import Final

from schemas.envelope import derive_id
from schemas.evacuation import (
    CommandAction,
    CommandRejected,
    EvacuationCommand,
    RecommendationOutcome,
)
from services.common.auth import Role
from services.evacuation import text
from services.evacuation.engine.orders import carry_out, lift, publish_order
from services.evacuation.engine.recommendations import close
from services.evacuation.engine.run import REASON_LIMIT, Run, eid
from services.evacuation.errors import CommandRefused
from services.evacuation.shelters import choose_shelters, designated_for
from services.evacuation.state import CellState, OrderState, RecommendationStatus

__all__ = ["handle"]

_HQ: Final = Role.HQ.value


def handle(run: Run, e: EvacuationCommand) -> None:
    """Carry out HQ's command, or emit ``evacuation.command_rejected`` saying why not."""
    try:
        _dispatch(run, e)
    except CommandRefused as refused:
        _refuse(run, e, refused)


def _dispatch(run: Run, e: EvacuationCommand) -> None:
    p = e.payload
    if p.operator_role != _HQ:
        if p.operator_role is None:
            raise CommandRefused("role_missing", "コマンドに利用者の役割（operator_role）がないため"
                                 "実行しません。避難の判断は本部（hq）のみが指示できます。")
        raise CommandRefused("forbidden_role", f"役割 {p.operator_role} の利用者は避難の判断を"
                             "指示できません。本部（hq）のみが指示できます。")
    if p.action in (CommandAction.APPROVE, CommandAction.REJECT):
        _decide(run, e)
    elif p.action is CommandAction.ISSUE:
        _manual_issue(run, e)
    else:
        _manual_lift(run, e)


def _decide(run: Run, e: EvacuationCommand) -> None:
    p = e.payload
    assert p.recommendation_id is not None  # the command model requires it
    rec = run.recs.get(str(p.recommendation_id))
    if rec is None:
        raise CommandRefused("unknown_recommendation",
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
        raise CommandRefused(code, f"推奨 {rec.recommendation_id} は{words}。")
    if p.action is CommandAction.REJECT:
        assert p.reason is not None  # required for reject
        close(run, rec, RecommendationOutcome.REJECTED, p.reason, operator=p.operator,
              command=e)
        return
    carry_out(run, rec, operator=p.operator, command=e, reason=p.reason)


def _manual_issue(run: Run, e: EvacuationCommand) -> None:
    p = e.payload
    assert p.area_ids is not None and p.level is not None and p.hazard is not None
    hazard = p.hazard
    for area_id in p.area_ids:
        if area_id not in run.config.area_names_ja:
            raise CommandRefused("unknown_area", f"地区 {area_id} はこの地域にありません。")
    for site_id in p.designated_shelter_ids or ():
        if site_id not in run.config.sites:
            raise CommandRefused("unknown_site", f"避難場所 {site_id} はこの地域にありません。")
        if not designated_for(run.config, site_id, hazard):
            raise CommandRefused("not_designated",
                                 f"{run.config.sites[site_id].name_ja}（{site_id}）は"
                                 f"{text.hazard(hazard)}の指定緊急避難場所ではありません。")
    targets: list[tuple[str, OrderState | None]] = []
    if p.order_id is not None:
        order = run.orders.get(str(p.order_id))
        if order is None:
            raise CommandRefused("unknown_order", f"命令 {p.order_id} は記録にありません。")
        if order.last_command_id == e.event_id:
            return  # redelivered
        if order.lifted:
            raise CommandRefused("already_lifted", f"命令 {p.order_id} は解除済みです。")
        if tuple(p.area_ids) != (order.area_id,) or hazard is not order.hazard:
            raise CommandRefused("order_mismatch",
                                 f"命令 {p.order_id} は{run.config.area_names_ja[order.area_id]}の"
                                 f"{text.hazard(order.hazard)}の命令です。地区と災害を合わせてください。")
        targets.append((order.area_id, order))
    else:
        for area_id in p.area_ids:
            cell = run.cell(area_id, hazard)
            current = (run.orders[str(cell.order_id)] if cell.order_id is not None
                       else None)
            if current is not None and current.last_command_id == e.event_id:
                continue  # redelivered: this area was done
            if str(derive_id("evacuation.order", e.event_id, area_id)) in run.orders:
                continue
            targets.append((area_id, current))
    for area_id, current in targets:
        if p.designated_shelter_ids is not None:
            designated = tuple(p.designated_shelter_ids)
        else:
            choice = choose_shelters(run.config, run.shelters, area_id, hazard)
            designated = choice.suggested + choice.to_open
        if current is None:
            order = OrderState(
                order_id=derive_id("evacuation.order", e.event_id, area_id),
                area_id=area_id, hazard=hazard, level=p.level, version=1,
                designated_shelter_ids=designated, issued_by=p.operator,
                approved_at=e.occurred_at, automatic=False, recommendation_id=None,
                last_command_id=e.event_id,
            )
            publish_order(run, order, None)
        else:
            order = current.model_copy(update={
                "level": p.level, "version": current.version + 1,
                "designated_shelter_ids": designated, "issued_by": p.operator,
                "approved_at": e.occurred_at, "automatic": False,
                "recommendation_id": None, "last_command_id": e.event_id,
            })
            publish_order(run, order, current)
        cell = run.cell(area_id, hazard)
        open_rec = run.open_recommendation(cell)
        if open_rec is not None:
            close(run, open_rec, RecommendationOutcome.SUPERSEDED,
                  f"本部が{text.level(p.level)}を手動で発令したため",
                  superseded_by=order.order_id)
        # The manual level is the new floor: recommend again only above it.
        run.set_cell(area_id, hazard, CellState(order_id=order.order_id,
                                                recommended_level=p.level))


def _manual_lift(run: Run, e: EvacuationCommand) -> None:
    p = e.payload
    assert p.order_id is not None and p.reason is not None
    order = run.orders.get(str(p.order_id))
    if order is None:
        raise CommandRefused("unknown_order", f"命令 {p.order_id} は記録にありません。")
    if order.lifted:
        if order.last_command_id == e.event_id:
            return  # redelivered
        raise CommandRefused("already_lifted", f"命令 {p.order_id} は解除済みです。")
    lift(run, order, operator=p.operator, command=e, after_recommendation=False,
         reason=p.reason)


def _refuse(run: Run, e: EvacuationCommand, refused: CommandRefused) -> None:
    p = e.payload
    run.emit(CommandRejected, {
        "command_event_id": e.event_id,
        "action": p.action,
        "operator": p.operator,
        "operator_role": p.operator_role,
        "recommendation_id": p.recommendation_id,
        "order_id": p.order_id,
        "code": refused.code,
        "reason": text.clip(refused.reason, REASON_LIMIT),
    }, event_id=eid("command_rejected", e.event_id))
