"""What the broadcaster does with an event, as pure functions: subject → message → plan.

1. :func:`subject_of` says whether an event is public news: every order version
   (issued, updated, lifted), and a shelter state change that residents act on
   (:func:`shelter_kind`: it starts or resumes accepting evacuees, becomes full,
   or closes after having been open). Anything else is not broadcast.
2. :class:`Planner` composes the message in every language, builds and validates
   the CAP document of an order, and plans one delivery per (language, channel):
   the ``broadcast.published`` document for the public feed and webhooks, the
   CAP document (language ``mul``) for the CAP feed. The drill guard refuses an
   exercise delivery to a live channel here, before anything is queued.

Ids are derived, never random, so planning the same event twice yields the same
plan: ``message_id`` from the order or shelter, ``delivery_id`` and every event
id from (namespace, message, version, language, channel).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias
from uuid import UUID
from zoneinfo import ZoneInfo

from schemas.broadcasts import (
    BroadcastFailed,
    BroadcastKind,
    BroadcastPublished,
    BroadcastRequested,
)
from schemas.envelope import Envelope, derive_id, new_event
from schemas.evacuation import OrderIssued, OrderLifted, OrderUpdated
from schemas.events import encode_event
from schemas.region import Language
from schemas.shelters import ShelterState, ShelterStatus, ShelterStatusChanged
from services.broadcaster.cap import (
    CapAlert,
    CapRef,
    CapValidator,
    MsgType,
    build_alert,
    cancel_expiry,
    identifier_for,
    to_bytes,
)
from services.broadcaster.channels import CAP_LANGUAGE, refusal
from services.broadcaster.errors import CapInvalid
from services.broadcaster.templates import Composed, Composer, OrderFacts, ShelterFacts

__all__ = [
    "SOURCE",
    "ChannelRoute",
    "MessageRecord",
    "OrderEvent",
    "Plan",
    "PlannedDelivery",
    "Planner",
    "Subject",
    "delivery_id_for",
    "message_id_for_order",
    "message_id_for_shelter",
    "shelter_kind",
    "subject_of",
]

SOURCE = "broadcaster"
"""The ``source`` of every event the broadcaster emits."""

OrderEvent: TypeAlias = OrderIssued | OrderUpdated | OrderLifted

_AVAILABLE = frozenset({ShelterStatus.OPEN, ShelterStatus.CROWDED})
_SHUT = frozenset({ShelterStatus.CLOSING, ShelterStatus.CLOSED})
_WAS_OPEN = _AVAILABLE | {ShelterStatus.FULL}


def message_id_for_order(order_id: UUID) -> UUID:
    """The message id of every version of an order's broadcast."""
    return derive_id("broadcast", "order", order_id)


def message_id_for_shelter(shelter_id: str) -> UUID:
    """The message id of a shelter's news (each state change is a new version)."""
    return derive_id("broadcast", "shelter", shelter_id)


def delivery_id_for(namespace: str, message_id: UUID, version: int, language: str,
                    channel: str) -> UUID:
    """The stable id of one delivery: the subscriber's idempotency key."""
    return derive_id("delivery", namespace or "live", message_id, version, language, channel)


def shelter_kind(state: ShelterState) -> BroadcastKind | None:
    """Which public message a shelter state change calls for, if any.

    ``opening`` is not news yet (not admitting); crowded is still open; a shelter
    that closes without ever having opened is not news either.
    """
    new, old = state.status, state.previous_status
    if new in _AVAILABLE and old not in _AVAILABLE:
        return BroadcastKind.SHELTER_OPENED  # opened, or admitting again after being full
    if new is ShelterStatus.FULL and old is not ShelterStatus.FULL:
        return BroadcastKind.SHELTER_FULL
    if new in _SHUT and old in _WAS_OPEN:
        return BroadcastKind.SHELTER_CLOSED
    return None


@dataclass(frozen=True)
class Subject:
    """A message to broadcast, read from the event that caused it."""

    cause: Envelope
    message_id: UUID
    version: int
    kind: BroadcastKind
    order: OrderEvent | None = None
    shelter_id: str | None = None

    @property
    def exercise(self) -> bool:
        """Drill traffic (inherited from the cause)."""
        return self.cause.exercise


_ORDER_KIND: Mapping[str, BroadcastKind] = {
    OrderIssued.EVENT_TYPE: BroadcastKind.ORDER_ISSUED,
    OrderUpdated.EVENT_TYPE: BroadcastKind.ORDER_UPDATED,
    OrderLifted.EVENT_TYPE: BroadcastKind.ORDER_LIFTED,
}


def subject_of(event: Envelope) -> Subject | None:
    """The message an event calls for, or None when it is not public news."""
    if isinstance(event, OrderIssued | OrderUpdated | OrderLifted):
        return Subject(event, message_id_for_order(event.payload.order_id),
                       event.payload.version, _ORDER_KIND[event.type], order=event)
    if isinstance(event, ShelterStatusChanged):
        kind = shelter_kind(event.payload)
        if kind is None:
            return None
        return Subject(event, message_id_for_shelter(event.payload.shelter_id),
                       event.payload.version, kind, shelter_id=event.payload.shelter_id)
    return None


@dataclass(frozen=True)
class ChannelRoute:
    """What planning needs to know about a channel."""

    name: str
    live: bool
    languages: tuple[str, ...]
    carries: Literal["published", "cap"] = "published"
    """``cap`` channels get the CAP document of order messages only."""
    kinds: frozenset[BroadcastKind] | None = None
    """The message kinds the channel takes (None: every kind); the push channel's are fewer."""

    @property
    def keeps_history(self) -> bool:
        """Deliver every version even when a newer one exists (the CAP archive does)."""
        return self.carries == "cap"


@dataclass(frozen=True)
class PlannedDelivery:
    """One (language, channel) of a message version."""

    language: str
    channel: str
    delivery_id: UUID
    state: Literal["pending", "refused", "failed"]
    body: bytes = b""
    meta: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class MessageRecord:
    """The ``broadcast_messages`` row of a plan."""

    namespace: str
    message_id: UUID
    version: int
    kind: BroadcastKind
    subject: str
    exercise: bool
    occurred_at: datetime
    cause_event_id: UUID
    correlation_id: UUID
    cap_identifier: str | None


@dataclass(frozen=True)
class Plan:
    """Everything to store, in one transaction, for one message version."""

    message: MessageRecord
    deliveries: tuple[PlannedDelivery, ...]
    events: tuple[Envelope, ...]
    """``broadcast.requested`` per channel, ``broadcast.failed`` per refused delivery."""
    published: Mapping[str, BroadcastPublished]
    cap_xml: bytes | None = None
    warnings: tuple[str, ...] = ()
    non_superseding: tuple[str, ...] = ()
    """Channels whose older versions must still be delivered (they keep history)."""


class Planner:
    """Turns a :class:`Subject` into a :class:`Plan` (pure apart from the ``now`` passed in)."""

    def __init__(self, composer: Composer, namespace: str, routes: Sequence[ChannelRoute],
                 *, validator: CapValidator | None = None) -> None:
        names = [r.name for r in routes]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique, got {names}")
        self._composer = composer
        self._namespace = namespace
        self._routes = tuple(routes)
        self._validator = validator or CapValidator()
        self._tz = ZoneInfo(composer.region.pack.timezone)

    @property
    def routes(self) -> tuple[ChannelRoute, ...]:
        """The channels planned for."""
        return self._routes

    def plan(self, subject: Subject, *, now: datetime, previous: CapRef | None = None) -> Plan:
        """Compose, build CAP (orders) and plan every delivery of ``subject``.

        ``previous`` is the CAP reference of the version an update or lift
        replaces (looked up by the caller); without it ``references`` is left
        out and a warning says so. Raises TemplateError if the message cannot
        be composed (an area the region does not know).
        """
        composed = self._compose(subject)
        warnings = list(composed.warnings)
        if composed.truncated:
            warnings.append(f"texts cut to their limit: {', '.join(composed.truncated)}")
        ns = self._namespace
        cap_identifier: str | None = None
        cap_xml: bytes | None = None
        cap_meta: dict[str, Any] = {}
        cap_error: str | None = None
        order = subject.order
        if order is not None:
            cap_identifier = identifier_for(self._composer.region.id, ns,
                                            order.payload.order_id, order.payload.version)
            if previous is None and order.payload.supersedes_version is not None:
                warnings.append(
                    f"version {order.payload.supersedes_version} of order "
                    f"{order.payload.order_id} is unknown here; CAP references left out")
            try:
                cap_xml, cap_meta = self._cap(subject, order, composed, cap_identifier, previous)
            except CapInvalid as e:
                cap_error = str(e)
                warnings.append(f"CAP document not published: {e}")

        published: dict[str, BroadcastPublished] = {
            lang: self._published(subject, composed, lang, cap_identifier, now)
            for lang in composed.texts}
        deliveries: list[PlannedDelivery] = []
        events: list[Envelope] = []
        for r in self._routes:
            if (r.carries == "cap" and order is None) or (
                    r.kinds is not None and subject.kind not in r.kinds):
                continue
            languages = (CAP_LANGUAGE,) if r.carries == "cap" else tuple(
                lang for lang in r.languages if lang in published)
            if not languages:
                continue
            events.append(self._requested(subject, r.name, languages, now))
            reason = refusal(r.name, r.live, subject.exercise)
            for lang in languages:
                delivery_id = delivery_id_for(ns, subject.message_id, subject.version, lang,
                                              r.name)
                if reason is not None:
                    deliveries.append(PlannedDelivery(lang, r.name, delivery_id, "refused",
                                                      error=reason))
                    events.append(self._failed(subject, lang, r.name, delivery_id, reason, now))
                elif r.carries == "cap" and cap_xml is None:
                    error = cap_error or "CAP document could not be built"
                    deliveries.append(PlannedDelivery(lang, r.name, delivery_id, "failed",
                                                      error=error))
                    events.append(self._failed(subject, lang, r.name, delivery_id, error, now))
                elif r.carries == "cap":
                    assert cap_xml is not None
                    deliveries.append(PlannedDelivery(lang, r.name, delivery_id, "pending",
                                                      body=cap_xml, meta=cap_meta))
                else:
                    deliveries.append(PlannedDelivery(
                        lang, r.name, delivery_id, "pending",
                        body=encode_event(published[lang]),
                        meta={"event_id": str(published[lang].event_id)}))
        message = MessageRecord(
            namespace=ns,
            message_id=subject.message_id,
            version=subject.version,
            kind=subject.kind,
            subject=str(order.payload.order_id) if order is not None else str(subject.shelter_id),
            exercise=subject.exercise,
            occurred_at=subject.cause.occurred_at,
            cause_event_id=subject.cause.event_id,
            correlation_id=subject.cause.correlation_id,
            cap_identifier=cap_identifier,
        )
        return Plan(message, tuple(deliveries), tuple(events), published, cap_xml,
                    tuple(warnings),
                    non_superseding=tuple(r.name for r in self._routes if r.keeps_history))

    # --- parts ---

    def _compose(self, subject: Subject) -> Composed:
        if subject.order is not None:
            p = subject.order.payload
            facts = OrderFacts(subject.kind, p.level, p.hazard, p.area_ids,
                               p.designated_shelter_ids)
            return self._composer.order(facts, exercise=subject.exercise)
        assert subject.shelter_id is not None
        return self._composer.shelter(ShelterFacts(subject.kind, subject.shelter_id),
                                      exercise=subject.exercise)

    def _cap(self, subject: Subject, order: OrderEvent, composed: Composed, identifier: str,
             previous: CapRef | None) -> tuple[bytes, dict[str, Any]]:
        templates = self._composer.templates
        msg_type = {
            BroadcastKind.ORDER_ISSUED: MsgType.ALERT,
            BroadcastKind.ORDER_UPDATED: MsgType.UPDATE,
            BroadcastKind.ORDER_LIFTED: MsgType.CANCEL,
        }[subject.kind]
        sent = order.occurred_at.replace(microsecond=0)
        notice = " / ".join(templates.drill.notice.get(lang) for lang in composed.texts)
        alert = CapAlert(
            identifier=identifier,
            sender=templates.cap.sender,
            sent=sent,
            exercise=subject.exercise,
            msg_type=msg_type,
            order_id=order.payload.order_id,
            level=order.payload.level,
            hazard=order.payload.hazard,
            area_ids=order.payload.area_ids,
            composed=composed,
            references=(previous,) if previous is not None else (),
            web=templates.cap.web,
            drill_note=notice,
        )
        xml = to_bytes(build_alert(alert, self._composer.region))
        self._validator.check(xml)
        # A Cancel stays in the index long enough for polling aggregators to see it.
        expires = (cancel_expiry(sent, templates.cap.cancel_listed_hours)
                   if msg_type is MsgType.CANCEL else None)
        default = self._composer.region.default_language
        meta = {
            "identifier": identifier,
            "order_id": str(order.payload.order_id),
            "version": order.payload.version,
            "status": "Exercise" if subject.exercise else "Actual",
            "msg_type": msg_type.value,
            "sent": sent.isoformat(),
            "expires": expires.isoformat() if expires is not None else None,
            "title": composed.texts[default].headline,
        }
        return xml, meta

    def _published(self, subject: Subject, composed: Composed, lang: Language,
                   cap_identifier: str | None, now: datetime) -> BroadcastPublished:
        texts = composed.texts[lang]
        order = subject.order
        payload: dict[str, Any] = {
            "message_id": subject.message_id,
            "version": subject.version,
            "kind": subject.kind,
            "language": lang,
            "headline": texts.headline,
            "push": texts.push,
            "sms": texts.sms,
            "full": texts.full,
            "area_ids": tuple(a for a, _ in texts.area_names),
            "cap_identifier": cap_identifier,
        }
        if order is not None:
            payload.update(order_id=order.payload.order_id, level=order.payload.level,
                           hazard=order.payload.hazard)
        else:
            payload["shelter_id"] = subject.shelter_id
        return new_event(
            BroadcastPublished, payload, occurred_at=subject.cause.occurred_at, source=SOURCE,
            cause=subject.cause, recorded_at=now,
            event_id=derive_id("broadcast.published", self._namespace or "live",
                               subject.message_id, subject.version, lang),
        )

    def _requested(self, subject: Subject, channel: str, languages: tuple[str, ...],
                   now: datetime) -> BroadcastRequested:
        order = subject.order
        return new_event(
            BroadcastRequested,
            {
                "message_id": subject.message_id,
                "version": subject.version,
                "kind": subject.kind,
                "order_id": order.payload.order_id if order is not None else None,
                "shelter_id": subject.shelter_id,
                "languages": languages,
                "channels": (channel,),
            },
            occurred_at=subject.cause.occurred_at, source=SOURCE, cause=subject.cause,
            recorded_at=now,
            event_id=derive_id("broadcast.requested", self._namespace or "live",
                               subject.message_id, subject.version, channel),
        )

    def _failed(self, subject: Subject, lang: str, channel: str, delivery_id: UUID,
                error: str, now: datetime) -> BroadcastFailed:
        return new_event(
            BroadcastFailed,
            {
                "message_id": subject.message_id,
                "version": subject.version,
                "language": lang,
                "channel": channel,
                "attempt": 1,
                "error": error[:1000],
                "will_retry": False,
            },
            occurred_at=now, source=SOURCE, cause=subject.cause, recorded_at=now,
            event_id=derive_id("broadcast.failed", delivery_id, "planned"),
        )


def meta_json(meta: Mapping[str, Any]) -> str:
    """A delivery's meta as JSON text (for the jsonb column)."""
    return json.dumps(dict(meta), ensure_ascii=False, sort_keys=True)
