"""Evacuation: recommendations from the rules, HQ commands, and orders.

Flow: the evacuation decision emits ``evacuation.recommended`` (with rationale
and evidence); HQ answers with an ``evacuation.command`` (approve, reject, issue
manually, lift); the decision service turns an approval or a manual issue into
``evacuation.order_issued`` / ``evacuation.order_updated`` and a lift into
``evacuation.order_lifted``.

Commands and events are named apart: :class:`EvacuationCommand` is a request
by a person (it may be refused: ``evacuation.command_rejected`` says why); the
``evacuation.order_*`` events and ``evacuation.recommendation_closed`` (a
recommendation rejected by HQ, superseded or withdrawn) are facts.

Levels follow the 5-level alert scale (警戒レベル); orders use 3 (高齢者等避難),
4 (避難指示) and 5 (緊急安全確保).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, Field, Strict, StrictBool, ValidationInfo, field_validator

from schemas.common import (
    INT_ONLY,
    UNIQUE_ITEMS,
    ActorId,
    AreaIds,
    ContractModel,
    LongText,
    Reason,
    ShelterIds,
    Slug,
    UtcDatetime,
    Version,
    no_duplicates,
)
from schemas.envelope import Envelope
from schemas.hazards import Hazard

__all__ = [
    "ALERT_LEVEL_LABELS_JA",
    "AlertLevel",
    "CommandAction",
    "CommandRejected",
    "CommandRejectedPayload",
    "EvacuationCommand",
    "EvacuationCommandPayload",
    "EvacuationRecommended",
    "EvacuationRecommendedPayload",
    "OrderIssued",
    "OrderIssuedPayload",
    "OrderLevel",
    "OrderLifted",
    "OrderLiftedPayload",
    "OrderUpdated",
    "OrderUpdatedPayload",
    "RecommendationClosed",
    "RecommendationClosedPayload",
    "RecommendationKind",
    "RecommendationOutcome",
]


class AlertLevel(IntEnum):
    """The 5-level alert scale (警戒レベル)."""

    L1 = 1
    L2 = 2
    L3 = 3
    L4 = 4
    L5 = 5


ALERT_LEVEL_LABELS_JA: dict[AlertLevel, str] = {
    AlertLevel.L1: "早期注意情報",
    AlertLevel.L2: "大雨・洪水・高潮注意報",
    AlertLevel.L3: "高齢者等避難",
    AlertLevel.L4: "避難指示",
    AlertLevel.L5: "緊急安全確保",
}
"""What each level means for residents (levels 1–2 are JMA information, 3–5 ward orders)."""

OrderLevel = Annotated[Literal[3, 4, 5], INT_ONLY]
"""The levels a ward can order: 3 高齢者等避難, 4 避難指示, 5 緊急安全確保."""

EventIds = Annotated[
    tuple[UUID, ...],
    Field(max_length=500, json_schema_extra=UNIQUE_ITEMS),
    AfterValidator(no_duplicates),
]


# --- recommendation ---------------------------------------------------------


class RecommendationKind(StrEnum):
    """What a recommendation proposes."""

    ISSUE = "issue"
    """Issue a new order."""
    RAISE = "raise"
    """Raise the level (or widen the areas) of an existing order."""
    LIFT = "lift"
    """Lift an existing order."""


class EvacuationRecommendedPayload(ContractModel):
    """A rule's proposal to HQ, with the evidence behind it."""

    recommendation_id: UUID
    """Deterministic id (derived from rule, areas and triggering event)."""
    kind: RecommendationKind
    """Issue, raise or lift."""
    order_id: UUID | None = Field(default=None, validate_default=True)
    """The existing order to raise or lift; null for issue."""
    area_ids: AreaIds
    """Areas concerned."""
    level: OrderLevel
    """Proposed level; for a lift, the level being lifted."""
    hazard: Hazard
    """The hazard the order is for (decides which shelters are suitable)."""
    rationale: Annotated[LongText, Field(min_length=1)]
    """Why, in words HQ reads (Japanese), e.g. which gauge crossed which level."""
    evidence_event_ids: EventIds = ()
    """Events that triggered the rule (gauge readings, warnings, reports)."""
    suggested_shelter_ids: ShelterIds = ()
    """Open shelters designated for this hazard, suitable for the areas."""
    shelters_to_open: ShelterIds = ()
    """Designated shelters that are not open yet and should be."""
    rule_id: Slug
    """The region-pack rule that fired."""

    @field_validator("order_id")
    @classmethod
    def _order_for_raise_and_lift(cls, value: UUID | None, info: ValidationInfo) -> UUID | None:
        kind = info.data.get("kind")
        if kind is None:
            return value
        if kind is RecommendationKind.ISSUE and value is not None:
            raise ValueError("order_id is not allowed when kind is issue")
        if kind is not RecommendationKind.ISSUE and value is None:
            raise ValueError(f"order_id is required when kind is {kind.value}")
        return value


class EvacuationRecommended(Envelope):
    """The decision rules recommend issuing, raising or lifting an order."""

    type: Literal["evacuation.recommended"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: EvacuationRecommendedPayload


# --- HQ command -------------------------------------------------------------


class CommandAction(StrEnum):
    """What HQ asks for."""

    APPROVE = "approve"
    """Approve a recommendation; it becomes an order."""
    REJECT = "reject"
    """Reject a recommendation (reason required)."""
    ISSUE = "issue"
    """Issue an order manually, or update one when order_id is given."""
    LIFT = "lift"
    """Lift an order (reason required)."""


# Which optional fields each action needs ("required") and may carry ("allowed").
# Declared as data so the validator, the docs and the tests read one table.
_COMMAND_FIELDS: dict[CommandAction, tuple[frozenset[str], frozenset[str]]] = {
    CommandAction.APPROVE: (frozenset({"recommendation_id"}), frozenset({"reason"})),
    CommandAction.REJECT: (frozenset({"recommendation_id", "reason"}), frozenset()),
    CommandAction.ISSUE: (
        frozenset({"area_ids", "level", "hazard"}),
        frozenset({"order_id", "reason", "designated_shelter_ids"}),
    ),
    CommandAction.LIFT: (frozenset({"order_id", "reason"}), frozenset()),
}


class EvacuationCommandPayload(ContractModel):
    """An HQ decision, attributable to the operator who made it.

    Per action: approve needs recommendation_id; reject needs recommendation_id
    and reason; issue needs area_ids, level and hazard (and may name order_id to
    update that order, and designated_shelter_ids); lift needs order_id and
    reason. Fields an action does not use must be absent.
    """

    action: CommandAction
    """What HQ asks for."""
    operator: ActorId
    """The authenticated HQ user (token subject) who decided."""
    # Added to version 1 with a default (the type had no producer outside tests):
    # a command that does not state its role is refused, never assumed to be HQ's.
    operator_role: Slug | None = None
    """The role in the operator's token (``hq``, ``field``, ...); only ``hq`` may decide."""
    recommendation_id: UUID | None = Field(default=None, validate_default=True)
    """The recommendation approved or rejected."""
    order_id: UUID | None = Field(default=None, validate_default=True)
    """The order lifted, or updated by a manual issue."""
    reason: Reason | None = Field(default=None, validate_default=True)
    """Why (required for reject and lift); goes to the audit trail."""
    area_ids: AreaIds | None = Field(default=None, validate_default=True)
    """Areas of a manual order."""
    level: OrderLevel | None = Field(default=None, validate_default=True)
    """Level of a manual order."""
    hazard: Hazard | None = Field(default=None, validate_default=True)
    """Hazard of a manual order."""
    designated_shelter_ids: ShelterIds | None = Field(default=None, validate_default=True)
    """Shelters designated by a manual order; null lets the decision service choose."""

    @field_validator(
        "recommendation_id",
        "order_id",
        "reason",
        "area_ids",
        "level",
        "hazard",
        "designated_shelter_ids",
    )
    @classmethod
    def _fits_action(cls, value: Any, info: ValidationInfo) -> Any:
        action = info.data.get("action")
        if action is None or info.field_name is None:
            return value  # the action itself was invalid: that error is the one to show
        required, allowed = _COMMAND_FIELDS[action]
        if info.field_name in required and value is None:
            raise ValueError(f"{info.field_name} is required for action {action.value}")
        if info.field_name not in required | allowed and value is not None:
            raise ValueError(f"{info.field_name} is not allowed for action {action.value}")
        return value


class EvacuationCommand(Envelope):
    """An HQ command about evacuation (a request that the decision service carries out)."""

    type: Literal["evacuation.command"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: EvacuationCommandPayload


# --- outcomes of recommendations and commands ------------------------------


class RecommendationOutcome(StrEnum):
    """How a recommendation ended without becoming (or changing) an order."""

    REJECTED = "rejected"
    """HQ rejected it, with a reason."""
    SUPERSEDED = "superseded"
    """A newer recommendation or an order change for the same area and hazard replaced it."""
    WITHDRAWN = "withdrawn"
    """The conditions that triggered it cleared before HQ decided."""


class RecommendationClosedPayload(ContractModel):
    """A recommendation that will not be carried out, and why."""

    recommendation_id: UUID
    """The recommendation closed."""
    kind: RecommendationKind
    """Its kind (issue, raise or lift)."""
    order_id: UUID | None = None
    """The order it would have raised or lifted; null for issue."""
    area_ids: AreaIds
    """Its areas."""
    level: OrderLevel
    """Its level."""
    hazard: Hazard
    """Its hazard."""
    outcome: RecommendationOutcome
    """Rejected by HQ, superseded, or withdrawn."""
    reason: Reason
    """HQ's reason for a rejection; otherwise what replaced it or what cleared."""
    operator: ActorId | None = None
    """The HQ operator who rejected it; null when the decision service closed it."""
    command_event_id: UUID | None = None
    """The rejecting command; null when the decision service closed it."""
    superseded_by: UUID | None = None
    """The recommendation or order that replaced it (outcome superseded)."""


class RecommendationClosed(Envelope):
    """A recommendation was rejected by HQ, superseded or withdrawn."""

    type: Literal["evacuation.recommendation_closed"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: RecommendationClosedPayload


class CommandRejectedPayload(ContractModel):
    """Why the decision service refused an HQ command (the command changed nothing)."""

    command_event_id: UUID
    """The refused ``evacuation.command``."""
    action: CommandAction
    """What it asked for."""
    operator: ActorId
    """Who sent it."""
    operator_role: Slug | None = None
    """The role it stated (null when it stated none)."""
    recommendation_id: UUID | None = None
    """The recommendation it named, if any."""
    order_id: UUID | None = None
    """The order it named, if any."""
    code: Slug
    """Stable reason, e.g. ``forbidden_role``, ``unknown_recommendation``, ``superseded``."""
    reason: Reason
    """The reason in words (Japanese), shown to the operator."""


class CommandRejected(Envelope):
    """An HQ command was refused, with the reason."""

    type: Literal["evacuation.command_rejected"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: CommandRejectedPayload


# --- orders -----------------------------------------------------------------


class _OrderBody(ContractModel):
    """The full state of an order at one version (shared by issued/updated/lifted)."""

    order_id: UUID
    """Stable id of the order across versions."""
    version: Version
    """Starts at 1; every update and the lift add one. Consumers keep the highest."""
    area_ids: AreaIds
    """Areas under the order."""
    level: OrderLevel
    """Alert level ordered (3, 4 or 5)."""
    hazard: Hazard
    """The hazard the order is for."""
    designated_shelter_ids: ShelterIds = ()
    """Shelters residents should go to (designated for this hazard)."""
    issued_by: ActorId
    """The operator who approved or issued it, or the rule id for an automatic order."""
    approved_at: UtcDatetime
    """When HQ approved it (for an automatic order: when it was issued)."""
    automatic: StrictBool = False
    """True when issued by a rule HQ pre-authorised, without a per-order approval."""
    recommendation_id: UUID | None = None
    """The recommendation it came from; null for a manual order."""
    supersedes_version: Version | None = None
    """The version this one replaces; null for version 1."""


class OrderIssuedPayload(_OrderBody):
    """A new order (version 1)."""

    version: Annotated[Literal[1], INT_ONLY] = 1
    """Always 1 for a new order."""
    supersedes_version: None = None
    """Always null for a new order."""


class _LaterVersion(_OrderBody):
    version: Annotated[int, Strict(), Field(ge=2, le=1_000_000)]
    """This version, 2 or more."""
    supersedes_version: Version
    """The version this one replaces (normally version - 1)."""

    @field_validator("supersedes_version")
    @classmethod
    def _earlier(cls, value: int, info: ValidationInfo) -> int:
        version = info.data.get("version")
        if version is not None and value >= version:
            raise ValueError("supersedes_version must be lower than version")
        return value


class OrderUpdatedPayload(_LaterVersion):
    """A changed order: new level, areas or shelters."""


class OrderLiftedPayload(_LaterVersion):
    """The order's last state, lifted."""

    lifted_by: ActorId
    """The operator who lifted it."""
    reason: Reason
    """Why it was lifted."""


class OrderIssued(Envelope):
    """An evacuation order was issued."""

    type: Literal["evacuation.order_issued"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: OrderIssuedPayload


class OrderUpdated(Envelope):
    """An evacuation order changed (level raised or lowered, areas or shelters changed)."""

    type: Literal["evacuation.order_updated"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: OrderUpdatedPayload


class OrderLifted(Envelope):
    """An evacuation order was lifted."""

    type: Literal["evacuation.order_lifted"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: OrderLiftedPayload
