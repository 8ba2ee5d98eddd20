"""The common operating picture (COP): what it holds, as plain frozen data.

The picture is a set of *entities* — ``kind`` + ``key`` → a JSON-ready object —
that clients mirror: a snapshot is every entity, a delta is entities set to a
new value or removed (``None``). A delta always carries the entity's *whole*
current value, never an increment.

:mod:`services.gateway.reducer` folds events into a :class:`COP` (and states the
order-independence contract, with :mod:`services.gateway.people` for the people and
supplies kinds); :mod:`services.gateway.views` projects it for HQ, shelter staff,
field teams and the public. No I/O, no clock, no globals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final, TypeAlias

from schemas.hazards import Shindo
from schemas.region import Region

__all__ = [
    "COP",
    "EXERCISE_KEPT",
    "GAUGE_SERIES",
    "OUTSIDE",
    "QUAKES_KEPT",
    "REPORTS_PER_AREA",
    "Delta",
    "Entity",
    "GaugeInfo",
    "Kind",
    "Rank",
    "RegionIndex",
    "area_entity",
    "areas_of",
    "pick",
]

Entity: TypeAlias = Mapping[str, Any]
"""A JSON-ready object (strings, numbers, booleans, lists, objects, null)."""
Rank: TypeAlias = tuple[Any, ...]
"""A sort key; the entity's winning event is the one with the highest rank."""

REPORTS_PER_AREA: Final = 50
"""Most recent accepted reports kept per area (by event time)."""
QUAKES_KEPT: Final = 10
"""Most recent earthquakes kept."""
EXERCISE_KEPT: Final = 50
"""Most recent exercise events kept for HQ in a picture that is not a drill's."""
GAUGE_SERIES: Final = 48
"""Readings kept per gauge for its trend (8 hours at the usual 10-minute period)."""
OUTSIDE: Final = ""
"""The area key of reports outside every area of the region."""


class Kind(StrEnum):
    """The kinds of entity in the picture."""

    META = "meta"
    AREA = "area"
    ORDER = "order"
    RECOMMENDATION = "recommendation"
    SHELTER = "shelter"
    REPORT = "report"
    GAUGE = "gauge"
    WARNING = "warning"
    QUAKE = "quake"
    MESSAGE = "message"
    EXERCISE = "exercise"
    """Exercise events seen outside a drill: recorded for HQ, never part of the picture."""
    AT_HOME = "at_home"
    """Per area: households sheltering at home (在宅避難), people, and counts per need."""
    WELFARE = "welfare_check"
    """HQ's work list: at-home households asking for a welfare check not yet found safe
    or moved (personal fields: HQ, and address and contact for the area's field teams)."""
    SUPPLY = "supply_request"
    """A supply request: its lines, site, urgency, status and steps."""
    GENERATOR = "generator"
    """A community generator: its registration and its latest state."""


@dataclass(frozen=True, slots=True)
class Delta:
    """One entity set to ``value`` (``None``: removed).

    ``areas`` are the areas the change concerns, before and after (``None``:
    ward-wide), so a viewer filtering by area also learns that an entity left
    its areas.
    """

    kind: Kind
    key: str
    value: Entity | None
    areas: frozenset[str] | None


# --- region data the reducer needs --------------------------------------------------


@dataclass(frozen=True)
class GaugeInfo:
    """What the picture needs to know about a gauge."""

    thresholds: tuple[tuple[str, float], ...]
    """Set thresholds, lowest first: (name, metres)."""
    areas: frozenset[str]
    """Districts its river floods."""


@dataclass(frozen=True)
class RegionIndex:
    """The region pack, reduced to the lookups the reducer makes."""

    area_ids: tuple[str, ...]
    shelter_area: Mapping[str, str]
    gauges: Mapping[str, GaugeInfo]

    @classmethod
    def from_region(cls, region: Region) -> RegionIndex:
        """Index a loaded region pack."""
        return cls(
            area_ids=tuple(d.id for d in region.districts),
            shelter_area={s.id: s.district_id for s in region.sites},
            gauges={
                g.id: GaugeInfo(g.thresholds.levels(), frozenset(g.affected_district_ids))
                for g in region.gauges
            },
        )


# --- the picture ----------------------------------------------------------------------


@dataclass(frozen=True)
class COP:
    """The picture: entities by kind, and what decided each of them.

    Treat every mapping as immutable: :func:`~services.gateway.reducer.reduce` copies what it
    changes.
    """

    region: RegionIndex
    entities: Mapping[Kind, Mapping[str, Entity]]
    drill: bool = False
    """Whether this is a drill namespace's picture: there, exercise events are the
    picture; elsewhere each is kept apart as a :attr:`Kind.EXERCISE` entity for HQ and
    changes nothing else. ``meta.cop.exercise`` says this, and only this (the DRILL
    banner shows what the namespace is, never what some event claimed)."""
    sources: Mapping[Kind, Mapping[str, tuple[Rank, Entity]]] = field(default_factory=dict)
    """Per entity, the winning event's rank and body (before overlays such as alerts)."""
    resolutions: Mapping[str, tuple[Rank, Entity]] = field(default_factory=dict)
    """Recommendation id → the strongest answer seen (approve < reject < order)."""
    alerts: Mapping[str, tuple[Rank, Entity]] = field(default_factory=dict)
    """Shelter id → latest capacity alert."""
    series: Mapping[str, tuple[tuple[str, str, float], ...]] = field(default_factory=dict)
    """Gauge id → latest readings (observed_at, event_id, level), oldest first."""
    deliveries: Mapping[str, Mapping[str, tuple[Rank, Entity]]] = field(default_factory=dict)
    """Message key → "language/channel" → best delivery outcome."""
    buckets: Mapping[str, Mapping[str, Rank]] = field(default_factory=dict)
    """Area (``OUTSIDE`` for none) → the most recent accepted reports kept there."""
    texts: Mapping[str, Mapping[str, tuple[Rank, Entity]]] = field(default_factory=dict)
    """Message id → language → the published text of its latest version."""
    summaries: Mapping[str, tuple[Rank, Entity]] = field(default_factory=dict)
    """Area → the shelter tracker's latest summary of its shelters."""
    quality: Mapping[str, tuple[Rank, Entity]] = field(default_factory=dict)
    """Gauge → latest data-quality judgement (stale or restored)."""
    households: Mapping[str, tuple[Rank, Entity]] = field(default_factory=dict)
    """At-home household id → its latest report."""
    checks: Mapping[str, tuple[Rank, Entity]] = field(default_factory=dict)
    """At-home household id → its latest welfare check."""
    steps: Mapping[str, tuple[tuple[Rank, Entity], ...]] = field(default_factory=dict)
    """Supply request id → its steps after the request (assigned, …), in fold order."""
    generator_states: Mapping[str, tuple[Rank, Entity]] = field(default_factory=dict)
    """Generator id → its latest status report."""

    @classmethod
    def empty(cls, region: RegionIndex, *, drill: bool = False) -> COP:
        """The picture before any event: every area of the region, at no level."""
        cop = cls(region=region, entities={kind: {} for kind in Kind}, drill=drill)
        areas = {a: area_entity(cop, a) for a in region.area_ids}
        meta = {"cop": {"exercise": drill}}
        return replace(cop, entities={**cop.entities, Kind.AREA: areas, Kind.META: meta})

    def get(self, kind: Kind, key: str) -> Entity | None:
        """One entity, or None."""
        return self.entities.get(kind, {}).get(key)


def areas_of(kind: Kind, entity: Entity | None) -> frozenset[str] | None:
    """The areas an entity concerns (``None``: ward-wide, or no entity)."""
    if entity is None:
        return None
    if kind is Kind.AREA:
        return frozenset((entity["area_id"],))
    if kind in (Kind.ORDER, Kind.RECOMMENDATION, Kind.WARNING):
        return frozenset(entity["area_ids"])
    if kind in (Kind.AT_HOME, Kind.WELFARE, Kind.SUPPLY, Kind.GENERATOR):
        return frozenset((entity["area_id"],))
    if kind in (Kind.SHELTER, Kind.REPORT):
        area = entity.get("area_id")
        return frozenset((area if area is not None else OUTSIDE,))
    if kind is Kind.GAUGE:
        return frozenset(entity["areas"]) or None
    if kind is Kind.MESSAGE:
        return frozenset(entity["area_ids"]) or None
    if kind is Kind.QUAKE:
        return frozenset(i["area_id"] for i in entity["intensities"])
    return None


def area_entity(cop: COP, area: str) -> Entity:
    """An area's summary, derived from the orders, warnings, quakes and shelters.

    The reducer recomputes it for every area a reduction touched.
    """
    orders = [o for o in cop.entities.get(Kind.ORDER, {}).values()
              if o["status"] == "active" and area in o["area_ids"]]
    warnings = [w for w in cop.entities.get(Kind.WARNING, {}).values()
                if w["in_force"] and area in w["area_ids"]]
    ranks = [Shindo(i["shindo"]).rank for q in cop.entities.get(Kind.QUAKE, {}).values()
             for i in q["intensities"] if i["area_id"] == area]
    summary = cop.summaries.get(area)
    shelters: dict[str, int] = {}
    if summary is not None:
        # The tracker counts every shelter of the region pack, reported or not.
        shelters = {k: v for k, v in summary[1]["shelters"].items() if v}
    else:
        for s in cop.entities.get(Kind.SHELTER, {}).values():
            if s["area_id"] == area:
                shelters[s["status"]] = shelters.get(s["status"], 0) + 1
    open_now = sum(shelters.get(k, 0) for k in ("open", "crowded", "full"))
    return {
        "area_id": area,
        "level": max((o["level"] for o in orders), default=None),
        "order_ids": sorted(o["order_id"] for o in orders),
        "warning_level": max((w["alert_level_equivalent"] for w in warnings), default=None),
        "warning_ids": sorted(w["warning_id"] for w in warnings),
        "shindo": list(Shindo)[max(ranks)].value if ranks else None,
        "shelters": dict(sorted(shelters.items())),
        "shelters_open": open_now,
        "shelter_summary": None if summary is None else summary[1],
    }


def pick(entity: Entity, names: Iterable[str]) -> dict[str, Any]:
    """The named fields of ``entity`` (``None`` where absent), and nothing else."""
    return {n: entity.get(n) for n in names}
