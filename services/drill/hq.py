"""HQ decisions in a drill: recorded commands matched to the replayed run, or left to people.

A recorded ``evacuation.command`` names a recommendation or an order of the
*original* run. The replayed run derives its own ids (its inputs have new ids),
so the command cannot be replayed as it is. With ``--hq replay`` (the default)
each command is matched, when its turn comes, to what the replayed run decided:

- **recommendations** (approve, reject): the recorded recommendation (a
  reference line of the log) and the replayed ones are compared on what they
  decided about: kind, areas, level, hazard and rule. Among those, the one whose
  evidence is the recorded evidence mapped to the replay's ids is the match; a
  replayed recommendation is matched to at most one recorded one.
  Only when waiting has run out is the candidate sharing the most evidence taken.
- **orders** (lift; issue naming an order): the order the recorded order's
  recommendation produced in the replay (or, for a manual order, the order the
  replayed manual command produced for the same areas).

The command is then sent with the new ids, the recorded operator marked
``drill-replay:<operator>``, its role, reason and fields unchanged, caused by
the replayed recommendation. A command whose recommendation or order is missing
from the log, or that the replay never produced, is skipped and reported.

With ``--hq interactive`` no recorded command is replayed: the people watching
the drill decide on the dashboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final
from uuid import UUID

from schemas.envelope import Envelope
from schemas.evacuation import (
    CommandAction,
    EvacuationCommand,
    EvacuationRecommended,
    EvacuationRecommendedPayload,
    OrderIssued,
)
from schemas.events import Event
from services.drill.replay import IdMap

__all__ = [
    "OPERATOR_MARK",
    "CommandMatcher",
    "HqMode",
    "Resolved",
    "Signature",
    "Unresolvable",
    "mark_operator",
    "passthrough_command",
    "rewrite_command",
    "signature",
]

OPERATOR_MARK: Final = "drill-replay:"
"""Prefix of the operator of a replayed command: a drill replay decided, not that person now."""
_ACTOR_MAX: Final = 128


class HqMode(StrEnum):
    """Who decides in a drill."""

    REPLAY = "replay"
    """The log's recorded commands, matched to the replayed run."""
    INTERACTIVE = "interactive"
    """Nobody but the people on the dashboard: recorded commands are not replayed."""


def mark_operator(operator: str) -> str:
    """The recorded operator, marked as a drill replay (within the 128-character limit)."""
    if operator.startswith(OPERATOR_MARK):
        return operator
    return (OPERATOR_MARK + operator)[:_ACTOR_MAX]


@dataclass(frozen=True)
class Signature:
    """What a recommendation decided about (its ids aside)."""

    kind: str
    area_ids: tuple[str, ...]
    level: int
    hazard: str
    rule_id: str


def signature(payload: EvacuationRecommendedPayload) -> Signature:
    """The signature of a recommendation's payload."""
    return Signature(payload.kind.value, tuple(sorted(payload.area_ids)), payload.level,
                     payload.hazard.value, payload.rule_id)


@dataclass(frozen=True)
class Resolved:
    """The replayed run's ids for a recorded command."""

    recommendation_id: UUID | None
    order_id: UUID | None
    cause: Envelope | None
    """The replayed recommendation (or order) the command answers; None for a manual issue."""
    recorded_cause_at: datetime | None
    """Event time of the recorded recommendation (or order), for the recorded delay."""


@dataclass(frozen=True)
class Unresolvable:
    """A recorded command that cannot be replayed, and why."""

    reason: str


class CommandMatcher:
    """Maps the original run's recommendations and orders to the replayed run's."""

    def __init__(self, references: Sequence[Event], ids: IdMap) -> None:
        self.ids = ids
        self._recorded_recs: dict[UUID, EvacuationRecommended] = {}
        self._recorded_orders: dict[UUID, OrderIssued] = {}
        for event in references:
            if isinstance(event, EvacuationRecommended):
                self._recorded_recs.setdefault(event.payload.recommendation_id, event)
            elif isinstance(event, OrderIssued):
                self._recorded_orders.setdefault(event.payload.order_id, event)
        self._replayed_recs: list[EvacuationRecommended] = []
        self._replayed_rec_ids: set[UUID] = set()
        self._replayed_orders: list[OrderIssued] = []
        self._claims: dict[UUID, EvacuationRecommended] = {}
        self._claimed: set[UUID] = set()

    def observe(self, event: Event, _seen_at: float = 0.0) -> None:
        """Take note of a replayed decision (wire this to the watcher's callback)."""
        if isinstance(event, EvacuationRecommended):
            if event.payload.recommendation_id not in self._replayed_rec_ids:
                self._replayed_rec_ids.add(event.payload.recommendation_id)
                self._replayed_recs.append(event)
        elif isinstance(event, OrderIssued):
            self._replayed_orders.append(event)

    # --- recommendations ------------------------------------------------------------

    def recommendation_for(self, recorded_id: UUID, *, final: bool = False
                           ) -> EvacuationRecommended | Unresolvable | None:
        """The replayed recommendation matching a recorded one; None while not (yet) seen.

        ``final``: waiting is over, so accept the candidate sharing the most evidence.
        """
        claimed = self._claims.get(recorded_id)
        if claimed is not None:
            return claimed
        recorded = self._recorded_recs.get(recorded_id)
        if recorded is None:
            return Unresolvable(f"recommendation {recorded_id} is not among the log's "
                                "references (recorded before the window?)")
        wanted = signature(recorded.payload)
        evidence = {self.ids(e) for e in recorded.payload.evidence_event_ids}
        candidates = [r for r in self._replayed_recs
                      if r.payload.recommendation_id not in self._claimed
                      and signature(r.payload) == wanted]
        exact = [r for r in candidates if set(r.payload.evidence_event_ids) == evidence]
        match: EvacuationRecommended | None = exact[0] if exact else None
        if match is None and final and candidates:
            best = max(candidates,
                       key=lambda r: len(evidence & set(r.payload.evidence_event_ids)))
            if evidence & set(best.payload.evidence_event_ids) or not evidence:
                match = best
        if match is None:
            return None
        self._claims[recorded_id] = match
        self._claimed.add(match.payload.recommendation_id)
        return match

    # --- orders ---------------------------------------------------------------------

    def order_for(self, recorded_order_id: UUID, *, final: bool = False
                  ) -> tuple[OrderIssued, OrderIssued] | Unresolvable | None:
        """(recorded order_issued, replayed order_issued) for a recorded order id."""
        recorded = self._recorded_orders.get(recorded_order_id)
        if recorded is None:
            return Unresolvable(f"order {recorded_order_id} is not among the log's references")
        rec_id = recorded.payload.recommendation_id
        if rec_id is not None:
            rec = self.recommendation_for(rec_id, final=final)
            if not isinstance(rec, EvacuationRecommended):
                return rec
            for order in self._replayed_orders:
                if order.payload.recommendation_id == rec.payload.recommendation_id:
                    return recorded, order
            return None
        # A manual order: the replayed command that issued it has the mapped id.
        if recorded.causation_id is None:
            return Unresolvable(f"order {recorded_order_id} names neither a recommendation "
                                "nor the command that issued it")
        command_id = self.ids(recorded.causation_id)
        areas = set(recorded.payload.area_ids)
        for order in self._replayed_orders:
            if order.causation_id == command_id and set(order.payload.area_ids) == areas:
                return recorded, order
        return None

    # --- commands -------------------------------------------------------------------

    def resolve(self, command: EvacuationCommand, *, final: bool = False
                ) -> Resolved | Unresolvable | None:
        """The replayed ids for ``command``; None while they have not appeared yet."""
        p = command.payload
        if p.action in (CommandAction.APPROVE, CommandAction.REJECT):
            assert p.recommendation_id is not None  # the contract requires it
            rec = self.recommendation_for(p.recommendation_id, final=final)
            if not isinstance(rec, EvacuationRecommended):
                return rec
            recorded = self._recorded_recs[p.recommendation_id]
            return Resolved(rec.payload.recommendation_id, None, rec, recorded.occurred_at)
        if p.order_id is None:
            return Resolved(None, None, None, None)  # a manual issue: nothing to map
        found = self.order_for(p.order_id, final=final)
        if not isinstance(found, tuple):
            return found
        recorded_order, order = found
        return Resolved(None, order.payload.order_id, order, recorded_order.occurred_at)


def rewrite_command(command: EvacuationCommand, resolved: Resolved, *, event_id: UUID,
                    ids: IdMap, occurred_at: datetime, recorded_at: datetime
                    ) -> EvacuationCommand:
    """The recorded command as the drill sends it: new ids, marked operator, exercise."""
    payload: dict[str, Any] = command.payload.model_dump(mode="json")
    payload["operator"] = mark_operator(command.payload.operator)
    if command.payload.recommendation_id is not None:
        payload["recommendation_id"] = str(resolved.recommendation_id)
    if command.payload.order_id is not None:
        payload["order_id"] = str(resolved.order_id)
    cause = resolved.cause
    return EvacuationCommand.model_validate({
        "event_id": event_id,
        "type": EvacuationCommand.EVENT_TYPE,
        "schema_version": EvacuationCommand.SCHEMA_VERSION,
        "occurred_at": occurred_at,
        "recorded_at": recorded_at,
        "source": command.source,
        # Joined to the replayed recommendation's chain, as a live command is to its own.
        "correlation_id": cause.correlation_id if cause is not None
        else ids(command.correlation_id),
        "causation_id": cause.event_id if cause is not None
        else (ids(command.causation_id) if command.causation_id is not None else None),
        "exercise": True,
        "payload": payload,
    })


def passthrough_command(command: EvacuationCommand, *, event_id: UUID, ids: IdMap,
                        occurred_at: datetime, recorded_at: datetime) -> EvacuationCommand:
    """A recorded command with every id mapped like any input (no decision service to match)."""
    p = command.payload
    resolved = Resolved(
        ids(p.recommendation_id) if p.recommendation_id is not None else None,
        ids(p.order_id) if p.order_id is not None else None, None, None)
    return rewrite_command(command, resolved, event_id=event_id, ids=ids,
                           occurred_at=occurred_at, recorded_at=recorded_at)
