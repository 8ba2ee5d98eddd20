"""A loaded region: cross-record checks and the queries services use.

Building a :class:`Region` checks what single records cannot: ids unique across
the pack, references between records, polygon validity, districts not
overlapping, and every site lying inside the district it names. Indexes and
prepared geometries are built once here so that queries are cheap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import shapely
from shapely.geometry import Point, shape
from shapely.strtree import STRtree

from schemas.hazards import Hazard
from schemas.region.errors import (
    DuplicateId,
    DuplicateTown,
    InvalidGeometry,
    OverlappingDistricts,
    SiteOutsideDistrict,
    UnknownDistrict,
    UnknownGauge,
    UnknownSite,
    UnsupportedLanguage,
)
from schemas.region.model import LANGUAGES, District, Gauge, Language, RegionPack, Site

# Districts whose overlap is at most this fraction of the smaller one's area are
# treated as sharing a boundary: coordinates rounded to 6 decimals (~0.1 m) can
# leave slivers that far below anything a person could stand in.
_OVERLAP_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Origin:
    """Where each part of a pack came from, so that errors name file and field.

    The defaults describe a pack built in memory; the loader passes file names
    and the index of each district's feature in the GeoJSON file.
    """

    manifest: str = "<RegionPack>"
    geometry: str = "<RegionPack>"
    sites: str = "<RegionPack>"
    #: district id -> field path of its polygon in ``geometry``.
    polygon_fields: Mapping[str, str] = field(default_factory=dict)
    #: The file the stranded-commuter facilities came from, and the index in the
    #: pack's ``sites`` of the first of them (they follow the sites file's records).
    facilities: str = "<RegionPack>"
    first_facility: int | None = None

    def district(self, index: int, suffix: str = "") -> dict[str, str]:
        """Location of ``districts[index]`` (plus a sub-field)."""
        return {"file": self.manifest, "field": f"districts[{index}]{suffix}"}

    def polygon(self, index: int, district_id: str) -> dict[str, str]:
        """Location of a district's polygon."""
        default = f"districts[{index}].polygon"
        return {"file": self.geometry, "field": self.polygon_fields.get(district_id, default)}

    def site(self, index: int, suffix: str = "") -> dict[str, str]:
        """Location of ``sites[index]`` (plus a sub-field), in the file it came from."""
        if self.first_facility is not None and index >= self.first_facility:
            return {"file": self.facilities,
                    "field": f"facilities[{index - self.first_facility}]{suffix}"}
        return {"file": self.sites, "field": f"sites[{index}]{suffix}"}

    def gauge(self, index: int, suffix: str = "") -> dict[str, str]:
        """Location of ``gauges[index]`` (plus a sub-field)."""
        return {"file": self.manifest, "field": f"gauges[{index}]{suffix}"}


class Region:
    """A validated region pack with lookups by id, hazard, district and position."""

    __slots__ = (
        "_districts",
        "_gauges",
        "_geometries",
        "_names",
        "_pack",
        "_sites",
        "_sites_by_district",
        "_sites_by_hazard",
        "_tree",
    )

    def __init__(self, pack: RegionPack, *, origin: Origin | None = None) -> None:
        """Check ``pack`` as a whole and index it; raises a RegionPackError subclass."""
        origin = origin or Origin()
        self._pack = pack
        _check_unique_ids(pack, origin)
        self._districts: dict[str, District] = {d.id: d for d in pack.districts}
        self._sites: dict[str, Site] = {s.id: s for s in pack.sites}
        self._gauges: dict[str, Gauge] = {g.id: g for g in pack.gauges}
        _check_towns(pack, origin)
        _check_references(pack, self._districts, origin)

        self._geometries: tuple[Any, ...] = tuple(
            _district_geometry(d, i, origin) for i, d in enumerate(pack.districts)
        )
        self._tree = STRtree(self._geometries)
        _check_overlaps(pack, self._geometries, self._tree, origin)
        self._check_sites_inside(origin)

        by_district: dict[str, list[Site]] = {d.id: [] for d in pack.districts}
        by_hazard: dict[Hazard, list[Site]] = {h: [] for h in Hazard}
        for site in pack.sites:
            by_district[site.district_id].append(site)
            if not site.is_evacuation_site:
                continue  # a facility's hazards say when it opens, not a designation
            for hazard in site.hazards:
                by_hazard[hazard].append(site)
        self._sites_by_district = {k: tuple(v) for k, v in by_district.items()}
        self._sites_by_hazard = {k: tuple(v) for k, v in by_hazard.items()}
        self._names = {lang: _names_for(pack, lang) for lang in LANGUAGES}

    # --- the pack as a whole ---

    @property
    def pack(self) -> RegionPack:
        """The underlying pack model."""
        return self._pack

    @property
    def id(self) -> str:
        """The region's id, e.g. "chiyoda"."""
        return self._pack.id

    @property
    def default_language(self) -> Language:
        """The language used when a reader has not chosen one."""
        return self._pack.default_language

    @property
    def attribution(self) -> tuple[str, ...]:
        """Attribution lines every derived publication must carry."""
        return self._pack.attribution

    @property
    def districts(self) -> tuple[District, ...]:
        """All districts, in pack order."""
        return self._pack.districts

    @property
    def sites(self) -> tuple[Site, ...]:
        """All sites (evacuation sites, shelters, then stranded-commuter facilities)."""
        return self._pack.sites

    @property
    def gauges(self) -> tuple[Gauge, ...]:
        """All river gauges, in pack order."""
        return self._pack.gauges

    def name(self, lang: Language) -> str:
        """The region's own name in ``lang``."""
        return self.names(lang)[self._pack.id]

    def names(self, lang: Language) -> Mapping[str, str]:
        """Names in ``lang`` of the region and every district, site and gauge, by id.

        A gauge's name is its station's name.
        """
        try:
            return self._names[lang]
        except KeyError:
            raise UnsupportedLanguage(
                f"no names in {lang!r}; packs carry {', '.join(LANGUAGES)}"
            ) from None

    # --- lookups by id ---

    def district(self, district_id: str) -> District:
        """The district with that id; raises UnknownDistrict."""
        try:
            return self._districts[district_id]
        except KeyError:
            raise UnknownDistrict(
                f"no district {district_id!r} in region {self.id!r}", field="district_id"
            ) from None

    def site(self, site_id: str) -> Site:
        """The site with that id; raises UnknownSite."""
        try:
            return self._sites[site_id]
        except KeyError:
            raise UnknownSite(
                f"no site {site_id!r} in region {self.id!r}", field="site_id"
            ) from None

    def gauge(self, gauge_id: str) -> Gauge:
        """The gauge with that id; raises UnknownGauge."""
        try:
            return self._gauges[gauge_id]
        except KeyError:
            raise UnknownGauge(
                f"no gauge {gauge_id!r} in region {self.id!r}", field="gauge_id"
            ) from None

    # --- queries ---

    def sites_for_hazard(self, hazard: Hazard, district_id: str | None = None) -> tuple[Site, ...]:
        """Evacuation sites designated for ``hazard``, optionally only in one district.

        Stranded-commuter facilities are not designations and are never among them.
        """
        sites = self._sites_by_hazard[Hazard(hazard)]
        if district_id is None:
            return sites
        self.district(district_id)  # unknown ids are errors, not empty answers
        return tuple(s for s in sites if s.district_id == district_id)

    def sites_in(self, district_id: str) -> tuple[Site, ...]:
        """Every site in a district."""
        self.district(district_id)
        return self._sites_by_district[district_id]

    def shelters_in(self, district_id: str) -> tuple[Site, ...]:
        """Designated shelters (指定避難所) in a district."""
        return tuple(s for s in self.sites_in(district_id) if s.is_shelter)

    def facilities(self) -> tuple[Site, ...]:
        """Stranded-commuter facilities (一時滞在施設), in pack order."""
        return tuple(s for s in self._pack.sites if s.is_temporary_stay)

    def gauges_affecting(self, district_id: str) -> tuple[Gauge, ...]:
        """Gauges whose river's flooding affects a district."""
        self.district(district_id)
        return tuple(g for g in self._pack.gauges if district_id in g.affected_district_ids)

    def district_at(self, lat: float, lon: float) -> District | None:
        """The district containing (lat, lon), or None outside every district.

        A point exactly on a boundary shared by two districts belongs to the
        one listed first in the pack, so the answer is deterministic.
        """
        index = self._district_index_at(lat, lon)
        return None if index is None else self._pack.districts[index]

    def _district_index_at(self, lat: float, lon: float) -> int | None:
        if not (math.isfinite(lat) and math.isfinite(lon)):
            raise ValueError(f"not a position: lat={lat!r}, lon={lon!r}")
        # The tree narrows to districts whose bounding box holds the point; the
        # prepared polygons then answer the exact test.
        for candidate in sorted(int(i) for i in self._tree.query(Point(lon, lat))):
            if shapely.intersects_xy(self._geometries[candidate], lon, lat):
                return candidate
        return None

    def _check_sites_inside(self, origin: Origin) -> None:
        index_of = {d.id: i for i, d in enumerate(self._pack.districts)}
        for i, site in enumerate(self._pack.sites):
            geometry = self._geometries[index_of[site.district_id]]
            if shapely.intersects_xy(geometry, site.lon, site.lat):
                continue
            found = self.district_at(site.lat, site.lon)
            raise SiteOutsideDistrict(
                f"site {site.id!r} at lat={site.lat}, lon={site.lon} is not inside district "
                f"{site.district_id!r}"
                + (f"; it is inside {found.id!r}" if found else "; it is outside every district"),
                **origin.site(i, ".district_id"),
            )


def _check_unique_ids(pack: RegionPack, origin: Origin) -> None:
    # Ids are unique across kinds because they key Kafka messages and names(lang).
    seen: dict[str, str] = {pack.id: "the region id"}
    entries: list[tuple[str, str, dict[str, str]]] = []
    entries += [
        (d.id, f"district {i}", origin.district(i, ".id")) for i, d in enumerate(pack.districts)
    ]
    entries += [(s.id, f"site {i}", origin.site(i, ".id")) for i, s in enumerate(pack.sites)]
    entries += [(g.id, f"gauge {i}", origin.gauge(i, ".id")) for i, g in enumerate(pack.gauges)]
    for ident, what, where in entries:
        if ident in seen:
            raise DuplicateId(f"id {ident!r} of {what} is already used by {seen[ident]}", **where)
        seen[ident] = what


def _check_towns(pack: RegionPack, origin: Origin) -> None:
    owner: dict[str, str] = {}
    for i, district in enumerate(pack.districts):
        for j, town in enumerate(district.towns):
            if town in owner:
                raise DuplicateTown(
                    f"town {town!r} is already in district {owner[town]!r}",
                    **origin.district(i, f".towns[{j}]"),
                )
            owner[town] = district.id


def _check_references(pack: RegionPack, districts: Mapping[str, District], origin: Origin) -> None:
    known = ", ".join(districts)
    for i, site in enumerate(pack.sites):
        if site.district_id not in districts:
            raise UnknownDistrict(
                f"unknown district {site.district_id!r} (known: {known})",
                **origin.site(i, ".district_id"),
            )
    for i, gauge in enumerate(pack.gauges):
        for j, district_id in enumerate(gauge.affected_district_ids):
            if district_id not in districts:
                raise UnknownDistrict(
                    f"unknown district {district_id!r} (known: {known})",
                    **origin.gauge(i, f".affected_district_ids[{j}]"),
                )


def _district_geometry(district: District, index: int, origin: Origin) -> Any:
    geometry = shape(district.polygon.model_dump())
    if not geometry.is_valid:
        raise InvalidGeometry(
            f"polygon of district {district.id!r} is invalid: {shapely.is_valid_reason(geometry)}",
            **origin.polygon(index, district.id),
        )
    if geometry.is_empty or geometry.area <= 0:
        raise InvalidGeometry(
            f"polygon of district {district.id!r} has no area", **origin.polygon(index, district.id)
        )
    shapely.prepare(geometry)
    return geometry


def _check_overlaps(
    pack: RegionPack, geometries: tuple[Any, ...], tree: STRtree, origin: Origin
) -> None:
    for i, geometry in enumerate(geometries):
        for j in sorted(int(k) for k in tree.query(geometry, predicate="intersects")):
            if j <= i:
                continue
            other = geometries[j]
            shared = float(geometry.intersection(other).area)
            if shared > _OVERLAP_TOLERANCE * min(float(geometry.area), float(other.area)):
                a, b = pack.districts[i].id, pack.districts[j].id
                raise OverlappingDistricts(
                    f"district {b!r} overlaps district {a!r}; districts may share "
                    "boundaries but not area",
                    **origin.polygon(j, b),
                )


def _names_for(pack: RegionPack, lang: Language) -> Mapping[str, str]:
    named: Iterable[tuple[str, str]] = [
        (pack.id, pack.names.get(lang)),
        *((d.id, d.names.get(lang)) for d in pack.districts),
        *((s.id, s.names.get(lang)) for s in pack.sites),
        *((g.id, g.station_names.get(lang)) for g in pack.gauges),
    ]
    return MappingProxyType(dict(named))
