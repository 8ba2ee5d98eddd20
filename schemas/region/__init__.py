"""Region packs: everything specific to one municipality, as validated data.

``load_region()`` loads the default pack (Chiyoda); ``load_region("testville")``
or ``load_region(Path(...))`` loads another. See docs/region-packs.md.
"""

from schemas.region.errors import (
    DuplicateId,
    DuplicateTown,
    InvalidField,
    InvalidGeometry,
    InvalidPackFile,
    MissingTranslation,
    OverlappingDistricts,
    PackNotFound,
    RegionPackError,
    SiteOutsideDistrict,
    ThresholdsOutOfOrder,
    UnknownDistrict,
    UnknownGauge,
    UnknownSite,
    UnsupportedLanguage,
)
from schemas.region.loader import (
    DEFAULT_REGION,
    available_packs,
    load_pack_section,
    load_region,
    packs_root,
)
from schemas.region.model import (
    LANGUAGES,
    THRESHOLD_LEVELS,
    District,
    Gauge,
    Language,
    MultiPolygonGeometry,
    Names,
    PolygonGeometry,
    RegionPack,
    Site,
    SiteKind,
    Thresholds,
)
from schemas.region.region import Origin, Region

__all__ = [
    "DEFAULT_REGION",
    "LANGUAGES",
    "THRESHOLD_LEVELS",
    "District",
    "DuplicateId",
    "DuplicateTown",
    "Gauge",
    "InvalidField",
    "InvalidGeometry",
    "InvalidPackFile",
    "Language",
    "MissingTranslation",
    "MultiPolygonGeometry",
    "Names",
    "Origin",
    "OverlappingDistricts",
    "PackNotFound",
    "PolygonGeometry",
    "Region",
    "RegionPack",
    "RegionPackError",
    "Site",
    "SiteKind",
    "SiteOutsideDistrict",
    "Thresholds",
    "ThresholdsOutOfOrder",
    "UnknownDistrict",
    "UnknownGauge",
    "UnknownSite",
    "UnsupportedLanguage",
    "available_packs",
    "load_pack_section",
    "load_region",
    "packs_root",
]
