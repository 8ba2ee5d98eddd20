"""Broadcasts: public messages requested, and their delivery per language and channel.

The broadcaster turns orders, lifts and shelter openings into a
``broadcast.requested`` (one message, several languages and channels) and then
reports each (message, version, language, channel) attempt as
``broadcast.delivered`` or ``broadcast.failed``. Exactly one successful
delivery per (message_id, version, language, channel) is the broadcaster's
promise; these events are how it keeps and shows it.

Languages and channels are configuration, not an enum: the region pack and the
deployment decide them (Chiyoda: ja, en, zh, ko; public feed, webhooks, file).

What residents read is ``broadcast.published`` on ``public.messages``: one
record per (message, version, language) with the composed texts (push, SMS,
full); webhook subscribers receive the same documents.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    Field,
    Strict,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from schemas.common import (
    INT_ONLY,
    TEXT_PATTERN,
    UNIQUE_ITEMS,
    AreaId,
    ContractModel,
    ExternalId,
    Reason,
    ShelterId,
    Slug,
    UtcDatetime,
    Version,
    no_duplicates,
)
from schemas.envelope import Envelope
from schemas.evacuation import OrderLevel
from schemas.hazards import Hazard

__all__ = [
    "BroadcastDelivered",
    "BroadcastDeliveredPayload",
    "BroadcastFailed",
    "BroadcastFailedPayload",
    "BroadcastKind",
    "BroadcastPublished",
    "BroadcastPublishedPayload",
    "BroadcastRequested",
    "BroadcastRequestedPayload",
    "Channel",
    "Language",
]

Language = Annotated[
    str,
    # A BCP 47 primary language subtag with optional subtags (ja, en, zh-Hans, ko).
    StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$", max_length=35),
    Field(examples=["ja", "en", "zh", "ko"]),
]
Channel = Annotated[Slug, Field(examples=["public-feed", "cap-feed", "webhook-city-app"])]
"""A configured delivery channel."""

Attempt = Annotated[int, Strict(), Field(ge=1, le=1000)]


class BroadcastKind(StrEnum):
    """What a message announces."""

    ORDER_ISSUED = "order_issued"
    ORDER_UPDATED = "order_updated"
    ORDER_LIFTED = "order_lifted"
    SHELTER_OPENED = "shelter_opened"
    SHELTER_CLOSED = "shelter_closed"
    SHELTER_FULL = "shelter_full"


_ORDER_KINDS = frozenset(
    {BroadcastKind.ORDER_ISSUED, BroadcastKind.ORDER_UPDATED, BroadcastKind.ORDER_LIFTED}
)


def _subject_for_kind(value: object, info: ValidationInfo) -> object:
    # An order message names its order, a shelter message its shelter, never both.
    kind = info.data.get("kind")
    if kind is None:
        return value
    wants_order = kind in _ORDER_KINDS
    wanted = "order_id" if wants_order else "shelter_id"
    if info.field_name == wanted and value is None:
        raise ValueError(f"{wanted} is required for kind {kind.value}")
    if info.field_name != wanted and value is not None:
        raise ValueError(f"{info.field_name} is not allowed for kind {kind.value}")
    return value


class BroadcastRequestedPayload(ContractModel):
    """A message to publish, rendered by the broadcaster from reviewed templates."""

    message_id: UUID
    """Stable id of the message across versions (derived from the order or shelter)."""
    version: Version
    """Message version: follows the order's version, so an update supersedes the old text."""
    kind: BroadcastKind
    """What the message announces."""
    order_id: UUID | None = Field(default=None, validate_default=True)
    """The order announced (order kinds)."""
    shelter_id: ShelterId | None = Field(default=None, validate_default=True)
    """The shelter announced (shelter kinds)."""
    languages: Annotated[
        tuple[Language, ...],
        Field(min_length=1, max_length=20, json_schema_extra=UNIQUE_ITEMS),
        AfterValidator(no_duplicates),
    ]
    """Languages to render, e.g. ja, en, zh, ko."""
    channels: Annotated[
        tuple[Channel, ...],
        Field(min_length=1, max_length=20, json_schema_extra=UNIQUE_ITEMS),
        AfterValidator(no_duplicates),
    ]
    """Channels to deliver on."""

    @field_validator("order_id", "shelter_id")
    @classmethod
    def _subject_fits_kind(cls, value: object, info: ValidationInfo) -> object:
        return _subject_for_kind(value, info)


class BroadcastRequested(Envelope):
    """A public message was requested in some languages on some channels."""

    type: Literal["broadcast.requested"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: BroadcastRequestedPayload


class BroadcastDeliveredPayload(ContractModel):
    """One language of one message version reached one channel."""

    message_id: UUID
    """The message."""
    version: Version
    """The message version delivered."""
    language: Language
    """The language delivered."""
    channel: Channel
    """The channel it reached."""
    attempt: Attempt
    """Which attempt succeeded (1 = first)."""
    delivered_at: UtcDatetime
    """When the channel confirmed it."""
    receipt: Annotated[str, StringConstraints(max_length=200, pattern=r"^[\x21-\x7e]*$")] = ""
    """The channel's own id for the delivery (e.g. a webhook response id), if any."""


class BroadcastDelivered(Envelope):
    """A message was delivered on a channel in a language."""

    type: Literal["broadcast.delivered"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: BroadcastDeliveredPayload


class BroadcastFailedPayload(ContractModel):
    """One delivery attempt failed."""

    message_id: UUID
    """The message."""
    version: Version
    """The message version attempted."""
    language: Language
    """The language attempted."""
    channel: Channel
    """The channel that failed."""
    attempt: Attempt
    """Which attempt failed (1 = first)."""
    error: Reason
    """What went wrong (no secrets: no tokens or signed URLs)."""
    will_retry: StrictBool
    """False when the broadcaster gave up (permanent error or attempts exhausted)."""
    next_attempt_at: UtcDatetime | None = Field(default=None, validate_default=True)
    """When the next attempt is due; only when will_retry."""

    @field_validator("next_attempt_at")
    @classmethod
    def _only_when_retrying(cls, value: object, info: ValidationInfo) -> object:
        if info.data.get("will_retry") is False and value is not None:
            raise ValueError("next_attempt_at is only allowed when will_retry is true")
        return value


class BroadcastFailed(Envelope):
    """A delivery attempt failed; the broadcaster may retry."""

    type: Literal["broadcast.failed"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: BroadcastFailedPayload


def _text(max_length: int, *, min_length: int = 1) -> StringConstraints:
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=TEXT_PATTERN)


class BroadcastPublishedPayload(ContractModel):
    """One language of one message version, composed from the region pack's reviewed templates.

    Drill traffic (envelope ``exercise`` true) carries the drill marking in every
    text; it is never published on a live channel.
    """

    message_id: UUID
    """Stable id of the message across versions (derived from the order or shelter)."""
    version: Version
    """Message version; a higher version supersedes the text of a lower one."""
    kind: BroadcastKind
    """What the message announces."""
    order_id: UUID | None = Field(default=None, validate_default=True)
    """The order announced (order kinds)."""
    shelter_id: ShelterId | None = Field(default=None, validate_default=True)
    """The shelter announced (shelter kinds)."""
    language: Language
    """Language of the texts (ja, en, zh, ko)."""
    headline: Annotated[str, _text(200)]
    """One line: the level's official wording, hazard and areas, or the shelter's news."""
    push: Annotated[str, _text(400)]
    """Short variant for app push notifications."""
    sms: Annotated[str, _text(200)]
    """SMS-length variant (at most 70 characters in Japanese, Chinese and Korean)."""
    full: Annotated[str, _text(5000)]
    """Full text: what, where, which shelters, what to do."""
    area_ids: Annotated[
        tuple[AreaId, ...],
        Field(max_length=200, json_schema_extra=UNIQUE_ITEMS),
        AfterValidator(no_duplicates),
    ] = ()
    """Areas the message concerns (an order's areas; a shelter's district)."""
    level: OrderLevel | None = None
    """The order's alert level (3, 4 or 5); null for shelter messages."""
    hazard: Hazard | None = None
    """The order's hazard; null for shelter messages."""
    cap_identifier: ExternalId | None = None
    """Identifier of the CAP 1.2 alert of this version (order kinds), served under /cap/alerts/."""

    @field_validator("order_id", "shelter_id")
    @classmethod
    def _subject_fits_kind(cls, value: object, info: ValidationInfo) -> object:
        return _subject_for_kind(value, info)


class BroadcastPublished(Envelope):
    """A public message was published in one language (public feed, webhooks)."""

    type: Literal["broadcast.published"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: BroadcastPublishedPayload
