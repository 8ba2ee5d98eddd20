"""What the engine knows about the region, precomputed once from the pack and the rules.

The engine is pure and runs per event, so everything it needs from the region
pack (names, gauges and thresholds, sites and their designations, which sites are
near which area) is reduced here to plain immutable lookups. Building it is the
only place geometry is computed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo

import shapely
from shapely.geometry import Point, shape

from schemas.hazards import Hazard
from schemas.region import Region, load_region
from services.evacuation.rules import RulesFile, ThresholdName, load_rules

__all__ = ["EngineConfig", "GaugeInfo", "SiteInfo", "build_config", "load_config"]

# Metres per degree of latitude; longitude is scaled by cos(latitude). A ward is a
# few kilometres across, so a local equirectangular projection is accurate to well
# under a metre for the "near" test.
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQUATOR = 111_320.0


@dataclass(frozen=True)
class GaugeInfo:
    """A river gauge as the rules see it."""

    gauge_id: str
    name_ja: str
    """River and station, e.g. 神田川（お茶の水橋）."""
    thresholds: Mapping[ThresholdName, float]
    """The thresholds the pack gives, in metres."""
    affected_area_ids: tuple[str, ...]
    reporting_period: timedelta
    bank_full_m: float | None
    """Overtopping level from the rules, if set for this gauge."""


@dataclass(frozen=True)
class SiteInfo:
    """A designated site as the rules see it."""

    site_id: str
    name_ja: str
    area_id: str
    hazards: frozenset[Hazard]
    capacity: int
    """Planned capacity from the pack (a shelter state may report the real figure)."""


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine reads besides the state and the event."""

    region_id: str
    rules: RulesFile
    timezone: ZoneInfo
    area_ids: tuple[str, ...]
    """Areas in pack order: the order decisions are evaluated and emitted in."""
    area_names_ja: Mapping[str, str]
    gauges: Mapping[str, GaugeInfo]
    gauges_by_area: Mapping[str, tuple[str, ...]]
    sites: Mapping[str, SiteInfo]
    nearby: Mapping[tuple[str, Hazard], tuple[tuple[str, float], ...]]
    """(area, hazard) -> sites designated for the hazard in or near the area, as
    (site id, metres from the area; 0 inside), nearest first."""
    drill: bool = False
    """Whether the engine decides for a drill namespace. Only there do ``exercise``
    inputs count; elsewhere (live) the engine ignores them (:func:`~services.evacuation.
    engine.step`), so exercise traffic never raises a live recommendation or order."""


def _scale(lat0: float) -> tuple[float, float]:
    """Metres per degree of (longitude, latitude) around latitude ``lat0``."""
    return (_M_PER_DEG_LON_EQUATOR * math.cos(math.radians(lat0)), _M_PER_DEG_LAT)


def build_config(region: Region, rules: RulesFile) -> EngineConfig:
    """Reduce a validated region and its rules to the engine's lookups."""
    names = region.names("ja")
    area_ids = tuple(d.id for d in region.districts)
    lat0 = sum(s.lat for s in region.sites) / len(region.sites) if region.sites else 35.0
    kx, ky = _scale(lat0)
    polygons = {
        d.id: shapely.transform(shape(d.polygon.model_dump()), lambda xy: xy * (kx, ky))
        for d in region.districts
    }
    for polygon in polygons.values():
        shapely.prepare(polygon)

    bank_full: Mapping[str, float] = {}
    if rules.river is not None and rules.river.overtopping is not None:
        bank_full = rules.river.overtopping.bank_full_m
    gauges = {
        g.id: GaugeInfo(
            gauge_id=g.id,
            name_ja=f"{g.river_names.ja}（{g.station_names.ja}）",
            thresholds=MappingProxyType(
                {name: metres for name, metres in g.thresholds.levels()}  # type: ignore[misc]
            ),
            affected_area_ids=tuple(g.affected_district_ids),
            reporting_period=timedelta(seconds=g.reporting_period_seconds),
            bank_full_m=bank_full.get(g.id),
        )
        for g in region.gauges
    }
    gauges_by_area = {
        a: tuple(g.id for g in region.gauges if a in g.affected_district_ids) for a in area_ids
    }
    sites = {
        s.id: SiteInfo(
            site_id=s.id,
            name_ja=names[s.id],
            area_id=s.district_id,
            hazards=frozenset(s.hazards),
            capacity=s.capacity,
        )
        for s in region.sites
    }
    near = rules.shelters.near_metres
    nearby: dict[tuple[str, Hazard], tuple[tuple[str, float], ...]] = {}
    for area_id, polygon in polygons.items():
        for hazard in Hazard:
            found: list[tuple[str, float]] = []
            for site in region.sites_for_hazard(hazard):
                if site.district_id == area_id:
                    distance = 0.0
                else:
                    point = Point(site.lon * kx, site.lat * ky)
                    distance = round(float(polygon.distance(point)), 1)
                if distance <= near:
                    found.append((site.id, distance))
            # Sites in the area first, then by distance; the id breaks ties so the
            # order (and so every recommendation) is the same on every machine.
            found.sort(key=lambda item: (item[1], item[0]))
            nearby[(area_id, hazard)] = tuple(found)
    return EngineConfig(
        region_id=region.id,
        rules=rules,
        timezone=ZoneInfo(region.pack.timezone),
        area_ids=area_ids,
        area_names_ja=MappingProxyType({a: names[a] for a in area_ids}),
        gauges=MappingProxyType(gauges),
        gauges_by_area=MappingProxyType(gauges_by_area),
        sites=MappingProxyType(sites),
        nearby=MappingProxyType(nearby),
    )


def load_config(region_setting: str | Path) -> EngineConfig:
    """Load the region pack and its rules and build the engine's configuration.

    Raises a :class:`~schemas.region.RegionPackError` naming the file and field.
    """
    region = load_region(region_setting)
    return build_config(region, load_rules(region_setting, region))
