"""The region-pack data model: frozen pydantic models, no I/O.

A region pack is everything specific to one municipality: its districts and
their polygons, designated evacuation sites and shelters, river gauges and their
thresholds, names in every language the public channels use, and attribution.
The models validate each record on its own; rules that span records (unique
ids, references between districts, sites and gauges, geometry) are checked when
a :class:`~schemas.region.region.Region` is built from a pack.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.common import Slug
from schemas.hazards import Hazard

#: Languages every public name must be given in (portal, push, CAP).
Language = Literal["ja", "en", "zh", "ko"]
LANGUAGES: tuple[Language, ...] = ("ja", "en", "zh", "ko")

NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Latitude = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Names(_Frozen):
    """One name in each supported language."""

    ja: NonEmptyStr
    en: NonEmptyStr
    zh: NonEmptyStr
    ko: NonEmptyStr

    def get(self, lang: Language) -> str:
        """The name in ``lang``."""
        return {"ja": self.ja, "en": self.en, "zh": self.zh, "ko": self.ko}[lang]


# --- GeoJSON geometry (RFC 7946 subset: 2-D positions, (Multi)Polygon only) ---

Position = tuple[Longitude, Latitude]
LinearRing = Annotated[tuple[Position, ...], Field(min_length=4)]


def _check_rings_closed(rings: tuple[tuple[Position, ...], ...]) -> None:
    for ring in rings:
        if ring[0] != ring[-1]:
            raise ValueError("a linear ring must end at its first position (RFC 7946 3.1.6)")


class PolygonGeometry(_Frozen):
    """A GeoJSON Polygon: an exterior ring, then any holes, as [lon, lat]."""

    type: Literal["Polygon"]
    coordinates: Annotated[tuple[LinearRing, ...], Field(min_length=1)]

    @field_validator("coordinates")
    @classmethod
    def _closed(cls, v: tuple[tuple[Position, ...], ...]) -> tuple[tuple[Position, ...], ...]:
        _check_rings_closed(v)
        return v


class MultiPolygonGeometry(_Frozen):
    """A GeoJSON MultiPolygon."""

    type: Literal["MultiPolygon"]
    coordinates: Annotated[
        tuple[Annotated[tuple[LinearRing, ...], Field(min_length=1)], ...], Field(min_length=1)
    ]

    @field_validator("coordinates")
    @classmethod
    def _closed(
        cls, v: tuple[tuple[tuple[Position, ...], ...], ...]
    ) -> tuple[tuple[tuple[Position, ...], ...], ...]:
        for polygon in v:
            _check_rings_closed(polygon)
        return v


Geometry = Annotated[PolygonGeometry | MultiPolygonGeometry, Field(discriminator="type")]


# --- pack records ---


class District(_Frozen):
    """An administrative district (for Chiyoda: a 出張所地区) and its area."""

    id: Slug
    names: Names
    polygon: Geometry = Field(repr=False)
    #: The towns (町) the district is made of; informative, and checked for overlaps.
    towns: tuple[NonEmptyStr, ...] = ()
    #: True when the boundary or the town mapping is not an official one.
    illustrative: bool


class SiteKind(StrEnum):
    """What a site is designated as."""

    #: 指定緊急避難場所: a place to flee to from a specific hazard.
    EVACUATION_SITE = "evacuation_site"
    #: 指定避難所: a place to stay while one cannot go home.
    SHELTER = "shelter"
    #: 一時滞在施設: a stranded-commuter facility (帰宅困難者 wait there until they can
    #: go home). Always a record of its own: a facility is never also a designated
    #: evacuation site or shelter in the same record.
    TEMPORARY_STAY = "temporary_stay"


class Site(_Frozen):
    """One physical place designated as an evacuation site, a shelter, or both, or a
    stranded-commuter facility (一時滞在施設).

    ``hazards`` are the hazards the place is designated for as an emergency
    evacuation site, or, for a facility, the hazards after which it opens (an
    earthquake); a place that is only a shelter has none. ``accessible`` is a
    facility's alone: whether it accepts people with disabilities.
    """

    id: Slug
    kinds: Annotated[frozenset[SiteKind], Field(min_length=1)]
    #: Identifiers of the designations in the source data (GSI 共通ID for Chiyoda).
    source_ids: tuple[NonEmptyStr, ...] = ()
    names: Names
    address: NonEmptyStr
    lat: Latitude
    lon: Longitude
    district_id: Slug
    hazards: frozenset[Hazard]
    capacity: Annotated[int, Field(ge=0)]
    capacity_illustrative: bool
    #: A facility's: whether it accepts people with disabilities (step-free, toilets).
    accessible: bool | None = Field(default=None, validate_default=True)

    @field_validator("kinds")
    @classmethod
    def _facility_alone(cls, v: frozenset[SiteKind]) -> frozenset[SiteKind]:
        if SiteKind.TEMPORARY_STAY in v and len(v) > 1:
            raise ValueError("a temporary_stay facility is a record of its own; "
                             "do not combine it with other kinds")
        return v

    @field_validator("hazards")
    @classmethod
    def _hazards_need_evacuation_site(
        cls, v: frozenset[Hazard], info: ValidationInfo
    ) -> frozenset[Hazard]:
        kinds: frozenset[SiteKind] | None = info.data.get("kinds")
        if kinds is None:  # kinds itself failed and is reported on its own
            return v
        if SiteKind.TEMPORARY_STAY in kinds:
            if not v:
                raise ValueError("a temporary_stay facility must name the hazards after "
                                 "which it opens (e.g. earthquake)")
            return v
        if SiteKind.EVACUATION_SITE in kinds and not v:
            raise ValueError("an evacuation_site must be designated for at least one hazard")
        if SiteKind.EVACUATION_SITE not in kinds and v:
            raise ValueError(
                "hazard designations belong to evacuation sites; "
                "add 'evacuation_site' to kinds or remove the hazards"
            )
        return v

    @field_validator("accessible")
    @classmethod
    def _accessible_is_a_facility_field(cls, v: bool | None,
                                        info: ValidationInfo) -> bool | None:
        kinds: frozenset[SiteKind] | None = info.data.get("kinds")
        if kinds is None:
            return v
        if SiteKind.TEMPORARY_STAY in kinds and v is None:
            raise ValueError("a temporary_stay facility must say whether it accepts people "
                             "with disabilities (true or false)")
        if SiteKind.TEMPORARY_STAY not in kinds and v is not None:
            raise ValueError("accessible belongs to temporary_stay facilities only")
        return v

    @property
    def is_shelter(self) -> bool:
        """Whether the place is a designated shelter (指定避難所)."""
        return SiteKind.SHELTER in self.kinds

    @property
    def is_evacuation_site(self) -> bool:
        """Whether the place is a designated emergency evacuation site (指定緊急避難場所)."""
        return SiteKind.EVACUATION_SITE in self.kinds

    @property
    def is_temporary_stay(self) -> bool:
        """Whether the place is a stranded-commuter facility (一時滞在施設)."""
        return SiteKind.TEMPORARY_STAY in self.kinds

    @property
    def takes_people(self) -> bool:
        """Whether people stay there: a shelter or a stranded-commuter facility.

        The one predicate for "opened, filled and closed like a shelter": intake
        accepts status for these sites, and the shelter tracker tracks them.
        """
        return self.is_shelter or self.is_temporary_stay


#: Threshold fields from lowest to highest; each must exceed every lower one given.
THRESHOLD_LEVELS = ("standby", "flood_watch", "evacuation_judgement", "flood_danger")


class Thresholds(_Frozen):
    """River-level thresholds in metres above the gauge's datum, strictly increasing."""

    #: 水防団待機水位 (flood-fighting teams stand by); not every gauge has one.
    standby: float | None = Field(default=None, allow_inf_nan=False)
    #: 氾濫注意水位
    flood_watch: float = Field(allow_inf_nan=False)
    #: 避難判断水位
    evacuation_judgement: float = Field(allow_inf_nan=False)
    #: 氾濫危険水位
    flood_danger: float = Field(allow_inf_nan=False)

    @field_validator("flood_watch", "evacuation_judgement", "flood_danger")
    @classmethod
    def _above_lower_levels(cls, v: float, info: ValidationInfo) -> float:
        # Fields validate in declaration order, so every lower level that was
        # valid is already in info.data; compare with the nearest one given.
        assert info.field_name is not None
        lower_names = THRESHOLD_LEVELS[: THRESHOLD_LEVELS.index(info.field_name)]
        for lower in reversed(lower_names):
            lower_value = info.data.get(lower)
            if lower_value is None:
                continue
            if not v > lower_value:
                raise PydanticCustomError(
                    "thresholds_order",
                    "{field} ({value} m) must be greater than {lower} ({lower_value} m)",
                    {
                        "field": info.field_name,
                        "value": v,
                        "lower": lower,
                        "lower_value": lower_value,
                    },
                )
            break
        return v

    def levels(self) -> tuple[tuple[str, float], ...]:
        """The thresholds that are set, lowest first, as (field name, metres)."""
        values = (self.standby, self.flood_watch, self.evacuation_judgement, self.flood_danger)
        return tuple(
            (name, value)
            for name, value in zip(THRESHOLD_LEVELS, values, strict=True)
            if value is not None
        )


class Gauge(_Frozen):
    """A river water-level gauge, its thresholds and the districts its river floods."""

    id: Slug
    river_names: Names
    station_names: Names
    lat: Latitude | None = None
    lon: Longitude | None = None
    #: What the levels are measured from, e.g. "A.P." (Arakawa Peil) or "gauge zero".
    datum: str = ""
    thresholds: Thresholds
    thresholds_illustrative: bool
    #: Where the threshold values come from, or why they are illustrative.
    thresholds_note: str = ""
    affected_district_ids: Annotated[tuple[Slug, ...], Field(min_length=1)]
    reporting_period_seconds: Annotated[int, Field(gt=0)]

    @model_validator(mode="after")
    def _lat_lon_together(self) -> Self:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        return self


class RegionPack(_Frozen):
    """A whole region pack, as read from its files."""

    format_version: Literal[1] = 1
    id: Slug
    names: Names
    default_language: Language
    #: IANA time zone for local times in messages, e.g. "Asia/Tokyo".
    timezone: NonEmptyStr
    #: National municipality code (全国地方公共団体コード) when there is one.
    municipality_code: str | None = None
    attribution: Annotated[tuple[NonEmptyStr, ...], Field(min_length=1)]
    districts: Annotated[tuple[District, ...], Field(min_length=1)]
    sites: tuple[Site, ...] = ()
    gauges: tuple[Gauge, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown IANA time zone {v!r}") from e
        return v
