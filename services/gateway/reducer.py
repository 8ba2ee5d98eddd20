"""The COP reducer: ``reduce(cop, event) -> (cop, deltas)``, pure.

It folds one event into the picture (:mod:`services.gateway.cop`) and says
which entities changed. No I/O, no clock, no globals. Outside a drill namespace
(``COP.drill`` false) an ``exercise`` event goes to no handler: it is kept as an
HQ-only ``exercise`` entity and changes nothing else, so exercise traffic in the
live namespace never shows as a live order, level, message or DRILL banner.

**Order independence.** For every entity the reducer keeps what the *winning*
event under a total order says (an order's or shelter's highest version, a
warning's latest event time, ...), and bounded lists keep the top N under a
total order. So the picture after a set of records does not depend on the
order they were applied in, duplicates (at-least-once delivery) change
nothing, and two gateways that have read the same offsets hold the same
picture even though they interleaved partitions differently. Together with
whole-value deltas this is what lets a client resume on another gateway
(see :mod:`services.gateway.positions`).

People and supplies (at-home households and their welfare checks, supply
requests, generators) follow the same contract: the handlers here keep each
part's winning event, and :mod:`services.gateway.people` derives the entities
from those parts alone.

This module stays over 500 lines for a reason: one handler per event type, all
editing one copy-on-write transaction (:class:`_Tx`) under that one contract;
split across modules, the handlers that decide one entity (a recommendation:
recommended, command, rejected, closed, order) would no longer read together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final

from schemas.broadcasts import (
    BroadcastDelivered,
    BroadcastFailed,
    BroadcastPublished,
    BroadcastRequested,
)
from schemas.evacuation import (
    CommandAction,
    CommandRejected,
    EvacuationCommand,
    EvacuationRecommended,
    OrderIssued,
    OrderLifted,
    OrderUpdated,
    RecommendationClosed,
)
from schemas.events import Event
from schemas.hazards import (
    DataQualityStatus,
    GaugeReading,
    HazardDataQuality,
    HazardWarning,
    SeismicIntensity,
    WarningAction,
    sender_key,
)
from schemas.people import AtHomeReported, WelfareChecked
from schemas.reports import ReportAccepted
from schemas.shelters import ShelterAreaSummary, ShelterCapacityAlert, ShelterStatusChanged
from schemas.supplies import (
    GeneratorRegistered,
    GeneratorStatusReported,
    SupplyAssigned,
    SupplyCancelled,
    SupplyDispatched,
    SupplyReceived,
    SupplyRequested,
)
from services.gateway.cop import (
    COP,
    EXERCISE_KEPT,
    GAUGE_SERIES,
    OUTSIDE,
    QUAKES_KEPT,
    REPORTS_PER_AREA,
    Delta,
    Entity,
    GaugeInfo,
    Kind,
    Rank,
    area_entity,
    areas_of,
    pick,
)
from services.gateway.people import (
    STEPS_KEPT,
    at_home_entity,
    generator_entity,
    step_key,
    supply_entity,
    welfare_entity,
)

__all__ = ["reduce"]


class _Tx:
    """Copy-on-write edits of one reduction, collecting deltas."""

    def __init__(self, cop: COP) -> None:
        self.cop = cop
        self.entities: dict[Kind, dict[str, Entity]] = {}
        self.sources: dict[Kind, dict[str, tuple[Rank, Entity]]] = {}
        self.top: dict[str, Any] = {}
        self.deltas: list[Delta] = []
        self.areas: set[str] = set()

    def _entities(self, kind: Kind) -> dict[str, Entity]:
        if kind not in self.entities:
            self.entities[kind] = dict(self.cop.entities.get(kind, {}))
        return self.entities[kind]

    def entity(self, kind: Kind, key: str) -> Entity | None:
        mapping = self.entities.get(kind)
        if mapping is None:
            return self.cop.get(kind, key)
        return mapping.get(key)

    def set(self, kind: Kind, key: str, value: Entity | None) -> None:
        """Set (or remove) an entity and record the delta if it changed."""
        old = self.entity(kind, key)
        if old == value:
            return
        mapping = self._entities(kind)
        if value is None:
            mapping.pop(key, None)
        else:
            mapping[key] = value
        self.deltas.append(Delta(kind, key, value, _union(areas_of(kind, old),
                                                          areas_of(kind, value))))

    def source(self, kind: Kind, key: str) -> tuple[Rank, Entity] | None:
        mapping = self.sources.get(kind)
        if mapping is None:
            return self.cop.sources.get(kind, {}).get(key)
        return mapping.get(key)

    def set_source(self, kind: Kind, key: str, value: tuple[Rank, Entity] | None) -> None:
        if kind not in self.sources:
            self.sources[kind] = dict(self.cop.sources.get(kind, {}))
        if value is None:
            self.sources[kind].pop(key, None)
        else:
            self.sources[kind][key] = value

    def sources_of(self, kind: Kind) -> Mapping[str, tuple[Rank, Entity]]:
        return self.sources.get(kind) or self.cop.sources.get(kind, {})

    def mapping(self, name: str) -> dict[Any, Any]:
        """A copy of one of the COP's other top-level maps, made once per reduction."""
        if name not in self.top:
            self.top[name] = dict(getattr(self.cop, name))
        result: dict[Any, Any] = self.top[name]
        return result

    def view_of(self, name: str) -> Mapping[Any, Any]:
        found: Mapping[Any, Any] = self.top.get(name, getattr(self.cop, name))
        return found

    def commit(self) -> tuple[COP, tuple[Delta, ...]]:
        entities = {**self.cop.entities, **self.entities}
        sources = {**self.cop.sources, **self.sources}
        cop = replace(self.cop, entities=entities, sources=sources, **self.top)
        if self.areas:
            # Areas are derived from other entities: recompute those touched, once.
            self.cop = cop
            self.entities = {}
            self.sources = {}
            self.top = {}
            for area in sorted(self.areas):
                self.set(Kind.AREA, area, area_entity(cop, area))
            cop = replace(cop, entities={**cop.entities, **self.entities})
        return cop, tuple(self.deltas)


def _union(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None or b is None:
        return None if a is None and b is None else (a or b)
    return a | b


def _iso(event: Event) -> str:
    return event.occurred_at.isoformat()


def _rank(event: Event, *middle: Any) -> Rank:
    """Event time, then any type-specific tie-breaks, then the event id (total)."""
    return (_iso(event), *middle, str(event.event_id))


# --- the reducer ------------------------------------------------------------------------


def reduce(cop: COP, event: Event) -> tuple[COP, tuple[Delta, ...]]:
    """Fold ``event`` into ``cop``: the new picture and the entities that changed."""
    tx = _Tx(cop)
    if event.exercise and not cop.drill:
        # Outside a drill an exercise event is shown to HQ as one and nothing else:
        # no order, recommendation, message, level or banner follows from it.
        _exercise(tx, event)
    else:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(tx, event)
    if not (tx.deltas or tx.areas or tx.top or tx.sources):
        return cop, ()  # nothing changed, not even what decides later entities
    return tx.commit()


def _exercise(tx: _Tx, event: Event) -> None:
    """Keep the ``EXERCISE_KEPT`` latest exercise events (by event time, then id)."""
    key = str(event.event_id)
    rank = _rank(event)
    kept = tx.sources_of(Kind.EXERCISE)
    if key in kept:
        return  # a duplicate delivery
    if len(kept) >= EXERCISE_KEPT and rank < min(r for r, _ in kept.values()):
        return  # older than every one kept
    body = {"event_id": key, "type": event.type, "source": event.source,
            "occurred_at": _iso(event), "exercise": True,
            "payload": event.payload.model_dump(mode="json")}
    tx.set_source(Kind.EXERCISE, key, (rank, body))
    tx.set(Kind.EXERCISE, key, body)
    kept = tx.sources_of(Kind.EXERCISE)
    if len(kept) > EXERCISE_KEPT:
        oldest = min(kept, key=lambda k: kept[k][0])
        tx.set_source(Kind.EXERCISE, oldest, None)
        tx.set(Kind.EXERCISE, oldest, None)


def _report_accepted(tx: _Tx, event: Event) -> None:
    assert isinstance(event, ReportAccepted)
    p = event.payload
    area = p.area_id if p.area_id is not None else OUTSIDE
    rid = str(p.report_id)
    rank = _rank(event)
    current: Mapping[str, Rank] = tx.view_of("buckets").get(area, {})
    if rid in current and current[rid] >= rank:
        return
    bucket = dict(current)
    bucket[rid] = rank
    evicted = None
    if len(bucket) > REPORTS_PER_AREA:
        evicted = min(bucket, key=lambda r: bucket[r])
        del bucket[evicted]
        if evicted == rid:
            return  # older than every report kept: it would be evicted at once
    tx.mapping("buckets")[area] = bucket
    r = p.report
    tx.set(Kind.REPORT, rid, {
        "report_id": rid,
        "area_id": p.area_id,
        "outside_region": p.outside_region,
        "category": r.category.value,
        "severity": r.severity,
        "location": None if r.location is None else {"lat": r.location.lat,
                                                     "lon": r.location.lon},
        "casualties": r.casualties.model_dump(mode="json"),
        "description": r.description,
        "reporter": r.reporter.model_dump(mode="json"),
        "occurred_at": _iso(event),
        "event_id": str(event.event_id),
    })
    if evicted is not None:
        tx.set(Kind.REPORT, evicted, None)


def _shelter_entity(tx: _Tx, shelter_id: str) -> Entity | None:
    source = tx.source(Kind.SHELTER, shelter_id)
    if source is None:
        return None
    alert = tx.view_of("alerts").get(shelter_id)
    return {**source[1], "area_id": tx.cop.region.shelter_area.get(shelter_id),
            "alert": None if alert is None else alert[1]}


def _shelter_status(tx: _Tx, event: Event) -> None:
    assert isinstance(event, ShelterStatusChanged)
    p = event.payload
    rank = (p.version, str(event.event_id))
    current = tx.source(Kind.SHELTER, p.shelter_id)
    if current is not None and current[0] >= rank:
        return
    body = {**p.model_dump(mode="json"), "changed_at": _iso(event)}
    tx.set_source(Kind.SHELTER, p.shelter_id, (rank, body))
    tx.set(Kind.SHELTER, p.shelter_id, _shelter_entity(tx, p.shelter_id))
    area = tx.cop.region.shelter_area.get(p.shelter_id)
    if area is not None:
        tx.areas.add(area)


def _capacity_alert(tx: _Tx, event: Event) -> None:
    assert isinstance(event, ShelterCapacityAlert)
    p = event.payload
    rank = _rank(event)
    current = tx.view_of("alerts").get(p.shelter_id)
    if current is not None and current[0] >= rank:
        return
    body = {**p.model_dump(mode="json", exclude={"shelter_id"}), "at": _iso(event)}
    tx.mapping("alerts")[p.shelter_id] = (rank, body)
    entity = _shelter_entity(tx, p.shelter_id)
    if entity is not None:
        tx.set(Kind.SHELTER, p.shelter_id, entity)


def _gauge_stage(info: GaugeInfo | None, level: float) -> str | None:
    stage = None
    for name, metres in info.thresholds if info is not None else ():
        if level >= metres:
            stage = name
    return stage


def _gauge_reading(tx: _Tx, event: Event) -> None:
    assert isinstance(event, GaugeReading)
    p = event.payload
    point = (p.observed_at.isoformat(), str(event.event_id), p.level_m)
    series = tx.view_of("series").get(p.gauge_id, ())
    if point in series or (len(series) >= GAUGE_SERIES and point < series[0]):
        return
    tx.mapping("series")[p.gauge_id] = tuple(sorted((*series, point))[-GAUGE_SERIES:])
    tx.set(Kind.GAUGE, p.gauge_id, _gauge_entity(tx, p.gauge_id))


def _gauge_entity(tx: _Tx, gauge_id: str) -> Entity | None:
    kept = tx.view_of("series").get(gauge_id)
    if not kept:
        return None
    info = tx.cop.region.gauges.get(gauge_id)
    observed_at, _, level = kept[-1]
    quality = tx.view_of("quality").get(gauge_id)
    return {
        "gauge_id": gauge_id,
        "level_m": level,
        "observed_at": observed_at,
        "stage": _gauge_stage(info, level),
        "areas": sorted(info.areas) if info is not None else [],
        "series": [[t, v] for t, _, v in kept],
        "stale": quality is not None and quality[1]["status"] == DataQualityStatus.STALE.value,
        "quality": None if quality is None else quality[1],
    }


def _data_quality(tx: _Tx, event: Event) -> None:
    assert isinstance(event, HazardDataQuality)
    p = event.payload
    rank = _rank(event)
    current = tx.view_of("quality").get(p.gauge_id)
    if current is not None and current[0] >= rank:
        return
    tx.mapping("quality")[p.gauge_id] = (rank, {
        "status": p.status.value, "message": p.message,
        "last_observed_at": p.last_observed_at.isoformat(), "at": _iso(event)})
    tx.set(Kind.GAUGE, p.gauge_id, _gauge_entity(tx, p.gauge_id))


_WARNING_ACTION_ORDER: Final = {WarningAction.ISSUED: 0, WarningAction.UPDATED: 1,
                                 WarningAction.CANCELLED: 2}


def _winner(tx: _Tx, kind: Kind, key: str, rank: Rank, body: Entity) -> bool:
    """Keep ``body`` as the entity if its rank beats the current one; say whether it did."""
    current = tx.source(kind, key)
    if current is not None and current[0] >= rank:
        return False
    tx.set_source(kind, key, (rank, body))
    old = tx.entity(kind, key)
    tx.set(kind, key, body)
    tx.areas.update(areas_of(kind, old) or ())
    tx.areas.update(areas_of(kind, body) or ())
    return True


def _warning(tx: _Tx, event: Event) -> None:
    assert isinstance(event, HazardWarning)
    p = event.payload
    body = {**p.model_dump(mode="json"), "in_force": p.action is not WarningAction.CANCELLED,
            "occurred_at": _iso(event)}
    _winner(tx, Kind.WARNING, sender_key(p.sender, p.warning_id),
            _rank(event, _WARNING_ACTION_ORDER[p.action]), body)


def _quake(tx: _Tx, event: Event) -> None:
    assert isinstance(event, SeismicIntensity)
    p = event.payload
    rank = _rank(event)
    key = sender_key(p.sender, p.quake_id)
    current = tx.entity(Kind.QUAKE, key)
    if current is not None and current.get("withdrawn") and not p.withdrawn:
        return  # withdrawn for good (a JMA 取消), as the evacuation engine has it
    kept = tx.sources_of(Kind.QUAKE)
    if key not in kept and len(kept) >= QUAKES_KEPT and rank < min(
            r for r, _ in kept.values()):
        return  # older than every quake kept
    body = {**p.model_dump(mode="json"), "occurred_at": _iso(event)}
    if not _winner(tx, Kind.QUAKE, key, rank, body):
        return
    kept = tx.sources_of(Kind.QUAKE)
    if len(kept) > QUAKES_KEPT:
        oldest = min(kept, key=lambda q: kept[q][0])
        tx.areas.update(areas_of(Kind.QUAKE, tx.entity(Kind.QUAKE, oldest)) or ())
        tx.set_source(Kind.QUAKE, oldest, None)
        tx.set(Kind.QUAKE, oldest, None)


# A later answer of the same strength wins by event time; a stronger one always wins.
# "refused" is the decision service turning down an approval: the recommendation is
# pending again.
_RESOLUTION_ORDER: Final = {"approved": 1, "refused": 1, "rejected": 2, "superseded": 2,
                            "withdrawn": 2, "ordered": 3}


def _recommendation_entity(tx: _Tx, rec_id: str) -> Entity | None:
    source = tx.source(Kind.RECOMMENDATION, rec_id)
    if source is None:
        return None
    resolution = tx.view_of("resolutions").get(rec_id)
    status = "pending" if resolution is None else resolution[1]["status"]
    return {**source[1], "status": "pending" if status == "refused" else status,
            "resolution": None if resolution is None else resolution[1]}


def _recommended(tx: _Tx, event: Event) -> None:
    assert isinstance(event, EvacuationRecommended)
    p = event.payload
    key = str(p.recommendation_id)
    rank = _rank(event)
    current = tx.source(Kind.RECOMMENDATION, key)
    if current is not None and current[0] >= rank:
        return
    body = {**p.model_dump(mode="json"), "occurred_at": _iso(event)}
    tx.set_source(Kind.RECOMMENDATION, key, (rank, body))
    tx.set(Kind.RECOMMENDATION, key, _recommendation_entity(tx, key))


def _resolve(tx: _Tx, event: Event, rec_id: str, status: str, body: Entity) -> None:
    rank = (_RESOLUTION_ORDER[status], *_rank(event))
    current = tx.view_of("resolutions").get(rec_id)
    if current is not None and current[0] >= rank:
        return
    tx.mapping("resolutions")[rec_id] = (rank, {"status": status, "at": _iso(event), **body})
    entity = _recommendation_entity(tx, rec_id)
    if entity is not None:
        tx.set(Kind.RECOMMENDATION, rec_id, entity)


def _command(tx: _Tx, event: Event) -> None:
    assert isinstance(event, EvacuationCommand)
    p = event.payload
    if p.recommendation_id is None or p.action not in (CommandAction.APPROVE,
                                                       CommandAction.REJECT):
        return  # manual issues and lifts show up as orders
    status = "approved" if p.action is CommandAction.APPROVE else "rejected"
    _resolve(tx, event, str(p.recommendation_id), status,
             {"operator": p.operator, "reason": p.reason, "order_id": None})


def _recommendation_closed(tx: _Tx, event: Event) -> None:
    assert isinstance(event, RecommendationClosed)
    p = event.payload
    _resolve(tx, event, str(p.recommendation_id), p.outcome.value,
             {"operator": p.operator, "reason": p.reason, "order_id": None})


def _command_rejected(tx: _Tx, event: Event) -> None:
    assert isinstance(event, CommandRejected)
    p = event.payload
    if p.recommendation_id is not None and p.action is CommandAction.APPROVE:
        _resolve(tx, event, str(p.recommendation_id), "refused",
                 {"operator": p.operator, "reason": p.reason, "code": p.code,
                  "order_id": None})


def _order(tx: _Tx, event: Event) -> None:
    assert isinstance(event, OrderIssued | OrderUpdated | OrderLifted)
    p = event.payload
    body = {**p.model_dump(mode="json"),
            "status": "lifted" if isinstance(event, OrderLifted) else "active",
            "event_type": event.type, "changed_at": _iso(event)}
    body.setdefault("lifted_by", None)
    body.setdefault("reason", None)
    _winner(tx, Kind.ORDER, str(p.order_id), (p.version, str(event.event_id)), body)
    if p.recommendation_id is not None:
        _resolve(tx, event, str(p.recommendation_id), "ordered",
                 {"operator": p.issued_by, "reason": None, "order_id": str(p.order_id)})


def _message_key(message_id: Any, version: int) -> str:
    return f"{message_id}:{version}"


def _message_entity(tx: _Tx, message_id: str) -> Entity | None:
    """The latest version of a message: its request, texts and delivery outcomes.

    Only the highest version of each message is kept (a higher version supersedes
    the text of a lower one), so the entity does not depend on arrival order.
    """
    request = tx.source(Kind.MESSAGE, message_id)
    texts = tx.view_of("texts").get(message_id, {})
    if request is None and not texts:
        return None
    first = request[1] if request is not None else next(iter(texts.values()))[1]
    version = first["version"]
    outcomes = tx.view_of("deliveries").get(_message_key(message_id, version), {})
    published = {lang: t for lang, (_, t) in sorted(texts.items())}
    any_text: Entity = next(iter(published.values()), {})
    return {
        "message_id": message_id,
        "version": version,
        "kind": first["kind"],
        "order_id": first["order_id"],
        "shelter_id": first["shelter_id"],
        "languages": request[1]["languages"] if request is not None else sorted(published),
        "channels": request[1]["channels"] if request is not None else [],
        "requested_at": request[1]["requested_at"] if request is not None else None,
        "area_ids": any_text.get("area_ids", []),
        "level": any_text.get("level"),
        "hazard": any_text.get("hazard"),
        "texts": {lang: pick(t, ("headline", "push", "full")) for lang, t in published.items()},
        "published_at": min((t["published_at"] for t in published.values()), default=None),
        "deliveries": {k: v for k, (_, v) in sorted(outcomes.items())},
    }


def _supersede(tx: _Tx, message_id: str, version: int) -> bool:
    """Drop parts of versions older than ``version``; False if a newer one is kept."""
    request = tx.source(Kind.MESSAGE, message_id)
    texts = tx.view_of("texts").get(message_id, {})
    kept = [request[1]["version"]] if request is not None else []
    kept += [t["version"] for _, t in texts.values()]
    if any(v > version for v in kept):
        return False
    if request is not None and request[1]["version"] < version:
        tx.set_source(Kind.MESSAGE, message_id, None)
    if any(t["version"] < version for _, t in texts.values()):
        tx.mapping("texts")[message_id] = {}
    return True


def _broadcast_requested(tx: _Tx, event: Event) -> None:
    assert isinstance(event, BroadcastRequested)
    p = event.payload
    key = str(p.message_id)
    rank = _rank(event)
    current = tx.source(Kind.MESSAGE, key)
    if not _supersede(tx, key, p.version) or (
            current is not None and current[1]["version"] == p.version and current[0] >= rank):
        return
    body = {**p.model_dump(mode="json"), "requested_at": _iso(event)}
    tx.set_source(Kind.MESSAGE, key, (rank, body))
    tx.set(Kind.MESSAGE, key, _message_entity(tx, key))


def _published(tx: _Tx, event: Event) -> None:
    assert isinstance(event, BroadcastPublished)
    p = event.payload
    key = str(p.message_id)
    rank = _rank(event)
    if not _supersede(tx, key, p.version):
        return
    texts = tx.view_of("texts").get(key, {})
    current = texts.get(p.language)
    if current is not None and current[0] >= rank:
        return
    body = {**p.model_dump(mode="json"), "published_at": _iso(event)}
    tx.mapping("texts")[key] = {**texts, p.language: (rank, body)}
    tx.set(Kind.MESSAGE, key, _message_entity(tx, key))


_OUTCOME_ORDER: Final = {"failed": 1, "delivered": 2}


def _delivery(tx: _Tx, event: Event) -> None:
    assert isinstance(event, BroadcastDelivered | BroadcastFailed)
    p = event.payload
    key = _message_key(p.message_id, p.version)
    status = "delivered" if isinstance(event, BroadcastDelivered) else "failed"
    rank = (_OUTCOME_ORDER[status], p.attempt, *_rank(event))
    slot = f"{p.language}/{p.channel}"
    outcomes = tx.view_of("deliveries").get(key, {})
    if slot in outcomes and outcomes[slot][0] >= rank:
        return
    outcome: dict[str, Any] = {"status": status, "attempt": p.attempt, "at": _iso(event)}
    if isinstance(event, BroadcastFailed):
        outcome.update(error=event.payload.error, will_retry=event.payload.will_retry)
    elif p.channel == "push":
        outcome["counts"] = event.payload.receipt  # "sent=N,failed=N,removed=N": HQ only
    tx.mapping("deliveries")[key] = {**outcomes, slot: (rank, outcome)}
    tx.set(Kind.MESSAGE, str(p.message_id), _message_entity(tx, str(p.message_id)))


def _area_summary(tx: _Tx, event: Event) -> None:
    assert isinstance(event, ShelterAreaSummary)
    p = event.payload
    rank = (p.version, str(event.event_id))
    current = tx.view_of("summaries").get(p.area_id)
    if current is not None and current[0] >= rank:
        return
    tx.mapping("summaries")[p.area_id] = (rank, p.model_dump(mode="json",
                                                             exclude={"area_id", "version"}))
    tx.areas.add(p.area_id)


# --- people and supplies (entities from services.gateway.people) -----------------------


def _household(tx: _Tx, household_id: str, areas: set[str]) -> None:
    """Recompute a household's work-list item and the at-home counts of ``areas``."""
    report = tx.view_of("households").get(household_id)
    check = tx.view_of("checks").get(household_id)
    if report is not None:
        tx.set(Kind.WELFARE, household_id, welfare_entity(report, check))
        areas.add(report[1]["area_id"])
    households = tx.view_of("households").items()
    for area in sorted(areas):
        tx.set(Kind.AT_HOME, area, at_home_entity(area, households, tx.view_of("checks")))


def _at_home(tx: _Tx, event: Event) -> None:
    assert isinstance(event, AtHomeReported)
    p = event.payload
    key = str(p.household_id)
    rank = _rank(event)
    current = tx.view_of("households").get(key)
    if current is not None and current[0] >= rank:
        return
    body = {**p.model_dump(mode="json"), "reported_at": _iso(event)}
    tx.mapping("households")[key] = (rank, body)
    # A later report may move the household to another area: both areas change.
    _household(tx, key, {current[1]["area_id"]} if current is not None else set())


def _welfare_checked(tx: _Tx, event: Event) -> None:
    assert isinstance(event, WelfareChecked)
    p = event.payload
    key = str(p.household_id)
    rank = _rank(event)
    current = tx.view_of("checks").get(key)
    if current is not None and current[0] >= rank:
        return
    tx.mapping("checks")[key] = (rank, {
        "outcome": p.outcome.value, "note": p.note, "checked_by": p.checked_by,
        "at": _iso(event)})
    _household(tx, key, set())


def _supply_update(tx: _Tx, request_id: str) -> None:
    source = tx.source(Kind.SUPPLY, request_id)
    if source is not None:  # steps before their request wait for it
        steps = tx.view_of("steps").get(request_id, ())
        tx.set(Kind.SUPPLY, request_id, supply_entity(source[1], steps))


def _supply_requested(tx: _Tx, event: Event) -> None:
    assert isinstance(event, SupplyRequested)
    p = event.payload
    key = str(p.request_id)
    rank = _rank(event)
    current = tx.source(Kind.SUPPLY, key)
    if current is not None and current[0] >= rank:
        return
    tx.set_source(Kind.SUPPLY, key, (rank, {**p.model_dump(mode="json"),
                                            "requested_at": _iso(event)}))
    _supply_update(tx, key)


def _supply_step(tx: _Tx, event: Event) -> None:
    assert isinstance(event, SupplyAssigned | SupplyDispatched | SupplyReceived
                      | SupplyCancelled)
    p = event.payload
    key = str(p.request_id)
    rank = step_key(event.type, _rank(event))
    kept = tx.view_of("steps").get(key, ())
    if any(r == rank for r, _ in kept) or (len(kept) >= STEPS_KEPT and rank > kept[-1][0]):
        return  # a duplicate, or past every step kept
    step = {"type": event.type, "by": p.by, "assignee": p.assignee, "note": p.note,
            "at": _iso(event)}
    tx.mapping("steps")[key] = tuple(sorted((*kept, (rank, step)),
                                            key=lambda s: s[0])[:STEPS_KEPT])
    _supply_update(tx, key)


def _generator_update(tx: _Tx, generator_id: str) -> None:
    source = tx.source(Kind.GENERATOR, generator_id)
    if source is None:
        return  # a status before its registration waits for it
    status = tx.view_of("generator_states").get(generator_id)
    tx.set(Kind.GENERATOR, generator_id,
           generator_entity(source[1], None if status is None else status[1]))


def _generator_registered(tx: _Tx, event: Event) -> None:
    assert isinstance(event, GeneratorRegistered)
    p = event.payload
    rank = _rank(event)
    current = tx.source(Kind.GENERATOR, p.generator_id)
    if current is not None and current[0] >= rank:
        return
    tx.set_source(Kind.GENERATOR, p.generator_id, (rank, {
        **p.model_dump(mode="json"), "registered_at": _iso(event)}))
    _generator_update(tx, p.generator_id)


def _generator_status(tx: _Tx, event: Event) -> None:
    assert isinstance(event, GeneratorStatusReported)
    p = event.payload
    rank = _rank(event)
    current = tx.view_of("generator_states").get(p.generator_id)
    if current is not None and current[0] >= rank:
        return
    tx.mapping("generator_states")[p.generator_id] = (rank, {
        **p.model_dump(mode="json", exclude={"generator_id"}), "reported_at": _iso(event)})
    _generator_update(tx, p.generator_id)


_HANDLERS: Final[Mapping[type, Callable[[_Tx, Event], None]]] = {
    ReportAccepted: _report_accepted,
    ShelterStatusChanged: _shelter_status,
    ShelterCapacityAlert: _capacity_alert,
    GaugeReading: _gauge_reading,
    HazardWarning: _warning,
    SeismicIntensity: _quake,
    EvacuationRecommended: _recommended,
    EvacuationCommand: _command,
    OrderIssued: _order,
    OrderUpdated: _order,
    OrderLifted: _order,
    BroadcastRequested: _broadcast_requested,
    BroadcastDelivered: _delivery,
    BroadcastFailed: _delivery,
    BroadcastPublished: _published,
    RecommendationClosed: _recommendation_closed,
    CommandRejected: _command_rejected,
    HazardDataQuality: _data_quality,
    ShelterAreaSummary: _area_summary,
    AtHomeReported: _at_home,
    WelfareChecked: _welfare_checked,
    SupplyRequested: _supply_requested,
    SupplyAssigned: _supply_step,
    SupplyDispatched: _supply_step,
    SupplyReceived: _supply_step,
    SupplyCancelled: _supply_step,
    GeneratorRegistered: _generator_registered,
    GeneratorStatusReported: _generator_status,
}
