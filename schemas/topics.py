"""The topic catalogue: every Kafka topic, its key, partitions, cleanup and event types.

Declared once, here. Topic admin creates topics from :data:`CATALOGUE`;
producers route through :func:`route` (or :func:`check_carries` and
:func:`key_for`), so an event can only be produced to the topic that carries
its type, keyed by its aggregate.

Keys: the key is the aggregate id so one aggregate's events stay in order on
one partition. Where an event type has several candidate paths, the first one
that is not null is used:

- ``reports``: the area id when known, so every report about one area is
  ordered on one partition (the evacuation rules count reports per area); else
  the report's own id. Consequence: a report submitted without an area and
  accepted with a resolved one may move partition; nothing relies on the
  order of those two, because ``report.accepted`` carries the whole report.
- ``evacuation.recommendations``: the order a recommendation raises or lifts,
  else the recommendation id, so proposals about one order stay ordered.
- ``evacuation.commands``: the recommendation decided on, else the order
  lifted or updated, else the command's own event id (a fresh manual order).
  A refusal (``evacuation.command_rejected``) is keyed like its command, so it
  follows the command on the same partition.
- ``evacuation.orders``: the order id. The topic is *compacted*: an order's
  latest version is its state, so a cold-starting consumer (gateway, broadcaster)
  reads current orders from the topic; the PostgreSQL event store keeps every
  version for audit.
- ``shelters.areas``: the area (district) id. Compacted: an area's latest
  summary is its state, so the evacuation decision and the COP read every
  area's shelter availability from the topic on a cold start.
- ``people.athome``: the area, so HQ's counts per area fold in order.
- ``supplies.requests``: the request id (each request's steps stay ordered).
- ``generators``: the generator id.
- ``hazards.observations``: the gauge, warning or quake id (each is its own
  aggregate: readings of one gauge, updates of one warning stay ordered).

Namespaces: a drill or a test runs in its own set of topics,
``<namespace>.<name>`` (e.g. ``drill.2025-08-21.reports``); the live namespace is
the empty string and uses the plain names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Literal, NamedTuple
from uuid import UUID

from pydantic import BaseModel

from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope
from schemas.errors import InvalidNamespace, UnknownEventType, UnknownTopic, WrongTopic
from schemas.events import encode_event

__all__ = [
    "CATALOGUE",
    "DRILL_PREFIX",
    "LIVE",
    "Cleanup",
    "Routed",
    "TopicSpec",
    "check_carries",
    "is_drill",
    "key_for",
    "qualified",
    "route",
    "split_qualified",
    "topic_for_type",
    "topics_in",
    "validate_namespace",
]

Cleanup = Literal["delete", "compact"]

LIVE = ""
"""The live namespace: plain topic names."""
DRILL_PREFIX = "drill"
"""The first segment of every drill namespace (``drill.<id>``, see :func:`is_drill`)."""

_DAY_MS = 24 * 60 * 60 * 1000
# PostgreSQL is the durable record; the broker keeps an operational period's
# worth of history for replays and slow consumers.
_DEFAULT_RETENTION_MS = 14 * _DAY_MS

_KAFKA_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# One to three dot-separated segments, so both "t3fa9c" (tests) and
# "drill.2025-08-21" (the drill runner's drill.<id>) fit.
_NAMESPACE = re.compile(r"^[a-z][a-z0-9-]{0,40}(?:\.[a-z0-9][a-z0-9-]{0,40}){0,2}$")


@dataclass(frozen=True)
class TopicSpec:
    """One topic: what it carries, how it is keyed, partitioned and cleaned up."""

    name: str
    """Unqualified name (the live topic's name)."""
    description: str
    """What the topic is for."""
    key: str
    """The aggregate the key identifies, in words (for docs and readers)."""
    key_paths: Mapping[str, tuple[str, ...]]
    """Event type → dotted attribute paths tried in order; the first non-null is the key."""
    partitions: int = 4
    """Partition count at creation (the embedded broker cannot add partitions later)."""
    cleanup: Cleanup = "delete"
    """``compact`` for state topics (latest record per key), else ``delete``."""
    retention_ms: int = _DEFAULT_RETENTION_MS
    """Retention for ``delete`` topics."""
    record_model: type[BaseModel] | None = None
    """For a topic that carries no events, the model of its records (if any)."""
    extra_configs: Mapping[str, str] = field(default_factory=dict)
    """Further topic configs passed to CreateTopics."""

    @property
    def event_types(self) -> frozenset[str]:
        """The event types this topic carries."""
        return frozenset(self.key_paths)

    @property
    def configs(self) -> dict[str, str]:
        """Topic configs for CreateTopics."""
        configs: dict[str, str] = {"cleanup.policy": self.cleanup}
        if self.cleanup == "delete":
            configs["retention.ms"] = str(self.retention_ms)
        configs.update(self.extra_configs)
        return configs


def _frozen(mapping: dict[str, tuple[str, ...]]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType(mapping)


_SPECS = (
    TopicSpec(
        name="intake.raw",
        description=(
            "Raw JSON from machine sources (gauge feeds, JMA, CAP) before validation; "
            "intake turns each record into a typed event or a dead letter."
        ),
        key="the source's own id (gauge, feed); not an event topic",
        key_paths=_frozen({}),
    ),
    TopicSpec(
        name="reports",
        description="Field damage reports: as submitted, then accepted or rejected by intake.",
        key="area (else report)",
        key_paths=_frozen(
            {
                "report.submitted": ("payload.area_id", "payload.client_report_id"),
                "report.accepted": ("payload.area_id", "payload.report_id"),
                "report.rejected": ("payload.client_report_id", "event_id"),
            }
        ),
    ),
    TopicSpec(
        name="shelters.updates",
        description=(
            "What shelter staff report: opening, closing, head counts, needs and power, "
            "and households checked in and out."
        ),
        key="shelter",
        key_paths=_frozen(
            {
                "shelter.opened": ("payload.shelter_id",),
                "shelter.closed": ("payload.shelter_id",),
                "shelter.occupancy_reported": ("payload.shelter_id",),
                "shelter.needs_reported": ("payload.shelter_id",),
                "shelter.household_checked_in": ("payload.shelter_id",),
                "shelter.household_checked_out": ("payload.shelter_id",),
            }
        ),
    ),
    TopicSpec(
        name="shelters.state",
        description="The shelter tracker's full state per shelter (latest kept by compaction).",
        key="shelter",
        key_paths=_frozen({"shelter.status_changed": ("payload.shelter_id",)}),
        cleanup="compact",
    ),
    TopicSpec(
        name="shelters.alerts",
        description="Crowding, full and generator-fuel alerts, and their clearing.",
        key="shelter",
        key_paths=_frozen({"shelter.capacity_alert": ("payload.shelter_id",)}),
    ),
    TopicSpec(
        name="shelters.areas",
        description=(
            "Per area: shelters by status, capacity, occupancy and free capacity, in total "
            "and per designated hazard (latest kept by compaction)."
        ),
        key="area",
        key_paths=_frozen({"shelter.area_summary": ("payload.area_id",)}),
        cleanup="compact",
    ),
    TopicSpec(
        name="hazards.observations",
        description=(
            "River gauge readings, warnings (JMA, CAP, manual), seismic intensity, and "
            "gauge data-quality warnings from the decision service."
        ),
        key="gauge, warning or quake",
        key_paths=_frozen(
            {
                "hazard.gauge_reading": ("payload.gauge_id",),
                "hazard.warning": ("payload.warning_id",),
                "hazard.seismic_intensity": ("payload.quake_id",),
                "hazard.data_quality": ("payload.gauge_id",),
            }
        ),
    ),
    TopicSpec(
        name="evacuation.recommendations",
        description=(
            "Proposals from the decision rules, with rationale and evidence, for HQ; "
            "and how each one that did not become an order was closed."
        ),
        key="order (else recommendation)",
        key_paths=_frozen(
            {
                "evacuation.recommended": ("payload.order_id", "payload.recommendation_id"),
                "evacuation.recommendation_closed": (
                    "payload.order_id",
                    "payload.recommendation_id",
                ),
            }
        ),
    ),
    TopicSpec(
        name="evacuation.commands",
        description=(
            "HQ commands: approve or reject a recommendation, issue or lift an order; "
            "and the decision service's refusals."
        ),
        key="recommendation (else order, else command)",
        key_paths=_frozen(
            {
                "evacuation.command": (
                    "payload.recommendation_id",
                    "payload.order_id",
                    "event_id",
                ),
                "evacuation.command_rejected": (
                    "payload.recommendation_id",
                    "payload.order_id",
                    "payload.command_event_id",
                ),
            }
        ),
    ),
    TopicSpec(
        name="evacuation.orders",
        description="Evacuation orders: issued, updated, lifted (latest version per order kept).",
        key="order",
        key_paths=_frozen(
            {
                "evacuation.order_issued": ("payload.order_id",),
                "evacuation.order_updated": ("payload.order_id",),
                "evacuation.order_lifted": ("payload.order_id",),
            }
        ),
        cleanup="compact",
    ),
    TopicSpec(
        name="broadcasts.requests",
        description="Public messages to render and deliver, per language and channel.",
        key="message",
        key_paths=_frozen({"broadcast.requested": ("payload.message_id",)}),
    ),
    TopicSpec(
        name="broadcasts.deliveries",
        description="The outcome of each delivery attempt.",
        key="message",
        key_paths=_frozen(
            {
                "broadcast.delivered": ("payload.message_id",),
                "broadcast.failed": ("payload.message_id",),
            }
        ),
    ),
    TopicSpec(
        name="public.messages",
        description=(
            "What residents read: one record per message version and language with the "
            "composed texts (the gateway streams it; webhook subscribers get the same documents)."
        ),
        key="message",
        key_paths=_frozen({"broadcast.published": ("payload.message_id",)}),
    ),
    TopicSpec(
        name="people.athome",
        description=(
            "Households sheltering at home (在宅避難): their size and needs, and welfare-check "
            "visits (personal fields: HQ only)."
        ),
        key="area",
        key_paths=_frozen(
            {
                "people.at_home_reported": ("payload.area_id",),
                "people.welfare_checked": ("payload.area_id",),
            }
        ),
    ),
    TopicSpec(
        name="supplies.requests",
        description="Supply requests from shelters, facilities and generators, step by step.",
        key="request",
        key_paths=_frozen(
            {
                "supply.requested": ("payload.request_id",),
                "supply.assigned": ("payload.request_id",),
                "supply.dispatched": ("payload.request_id",),
                "supply.received": ("payload.request_id",),
                "supply.cancelled": ("payload.request_id",),
            }
        ),
    ),
    TopicSpec(
        name="generators",
        description="Community generators: registrations and their state during an outage.",
        key="generator",
        key_paths=_frozen(
            {
                "generator.registered": ("payload.generator_id",),
                "generator.status_reported": ("payload.generator_id",),
            }
        ),
    ),
    TopicSpec(
        name="deadletter",
        description=(
            "Records a service could not process, with the error and their origin "
            "(schemas.deadletter.DeadLetter); keyed by the original key."
        ),
        key="the original record's key",
        key_paths=_frozen({}),
        retention_ms=30 * _DAY_MS,
        record_model=DeadLetter,
    ),
)

CATALOGUE: Mapping[str, TopicSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
"""Unqualified topic name → spec."""

_BY_TYPE: Mapping[str, TopicSpec] = MappingProxyType(
    {event_type: spec for spec in _SPECS for event_type in spec.key_paths}
)
_RESERVED_NAMESPACES = frozenset(name.split(".")[0] for name in CATALOGUE)


def topic_for_type(event_type: str) -> TopicSpec:
    """The topic that carries ``event_type``."""
    try:
        return _BY_TYPE[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is a valid topic prefix, else raise InvalidNamespace."""
    if namespace == LIVE:
        return namespace
    if not _NAMESPACE.fullmatch(namespace):
        raise InvalidNamespace(
            f"namespace {namespace!r} must be 1-3 dot-separated lowercase segments "
            "of letters, digits and '-', starting with a letter (e.g. 'drill.2025-08-21')"
        )
    if namespace.split(".")[0] in _RESERVED_NAMESPACES:
        # "reports.x" would read like a live topic and could collide with a future one.
        raise InvalidNamespace(
            f"namespace {namespace!r} starts with a live topic's name; choose another prefix"
        )
    return namespace


def is_drill(namespace: str) -> bool:
    """Whether ``namespace`` is a drill's (``drill.<id>``).

    Exercise traffic drives state (decisions, shelter states, broadcasts, the
    picture) only in a drill namespace. Anywhere else — the live namespace, and the
    test namespaces that stand in for it — an ``exercise`` event is recorded and
    shown to HQ as exercise, never acted on.
    """
    return namespace.split(".")[0] == DRILL_PREFIX


def qualified(name: str, namespace: str = LIVE) -> str:
    """The Kafka topic name of catalogue topic ``name`` in ``namespace``."""
    if name not in CATALOGUE:
        raise UnknownTopic(name)
    validate_namespace(namespace)
    return f"{namespace}.{name}" if namespace else name


def topics_in(namespace: str = LIVE) -> Iterator[tuple[str, TopicSpec]]:
    """Every catalogue topic as (qualified name, spec), for creating a namespace's topics."""
    validate_namespace(namespace)
    for name, spec in CATALOGUE.items():
        yield qualified(name, namespace), spec


def split_qualified(topic: str) -> tuple[str, TopicSpec]:
    """Split a Kafka topic name into (namespace, spec); raise UnknownTopic if none matches."""
    # Longest catalogue name first, so "x.shelters.state" never matches a shorter name.
    for name in sorted(CATALOGUE, key=len, reverse=True):
        if topic == name:
            return LIVE, CATALOGUE[name]
        if topic.endswith("." + name):
            namespace = topic[: -len(name) - 1]
            try:
                validate_namespace(namespace)
            except InvalidNamespace:
                continue
            return namespace, CATALOGUE[name]
    raise UnknownTopic(topic)


def check_carries(topic: str, event: Envelope) -> TopicSpec:
    """Raise WrongTopic unless ``topic`` (plain or qualified) carries ``event``'s type."""
    _, spec = split_qualified(topic)
    if event.type not in spec.event_types:
        expected = _BY_TYPE.get(event.type)
        raise WrongTopic(topic, event.type, expected.name if expected else None)
    return spec


def _key_text(value: object) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, UUID | str | int):
        return str(value)
    raise TypeError(f"cannot use a {type(value).__name__} as a Kafka key")


def key_for(event: Envelope) -> bytes:
    """The Kafka key of ``event``: its aggregate id, UTF-8 encoded."""
    spec = topic_for_type(event.type)
    for path in spec.key_paths[event.type]:
        value: object = event
        for attribute in path.split("."):
            value = getattr(value, attribute)
            if value is None:
                break
        if value is not None:
            return _key_text(value).encode("utf-8")
    # Every path list ends in a required field, so this is a catalogue bug.
    raise LookupError(f"no key for {event.type}: all of {spec.key_paths[event.type]} are null")


class Routed(NamedTuple):
    """Where and how to produce an event."""

    topic: str
    key: bytes
    value: bytes


def route(event: Envelope, namespace: str = LIVE) -> Routed:
    """The qualified topic, key and encoded value for producing ``event``."""
    spec = topic_for_type(event.type)
    return Routed(qualified(spec.name, namespace), key_for(event), encode_event(event))


# --- the stream processors' own topics -----------------------------------------------
# faust names a worker's internal topics after its app id. They are not in the catalogue
# (faust creates them), but drills look for them to tell which services ran in a
# namespace, so their names are declared here once, beside the catalogue.


def app_id(service: str, namespace: str = LIVE) -> str:
    """The faust app id (and consumer group) of ``service`` in ``namespace``."""
    return f"sonae-{service}{('-' + namespace) if namespace else ''}"


def evacuation_input_log(namespace: str = LIVE) -> str:
    """The evacuation decision's internal single-partition topic its inputs are merged into."""
    return f"{app_id('evacuation', namespace)}-input"


def shelter_tracker_changelog(namespace: str = LIVE) -> str:
    """The changelog of the shelter tracker's table of shelters."""
    return f"{app_id('shelter-tracker', namespace)}-shelters-changelog"
