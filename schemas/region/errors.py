"""Errors raised by the region-pack model, loader and queries.

Every error derives from :class:`RegionPackError`. An error found in a pack
names the file and the field (``districts[2].names.ko``) so whoever maintains
the pack can fix it without reading the loader::

    RegionPackError
    ├── PackNotFound            no pack by that name or at that path
    ├── InvalidPackFile         a file is missing, unreadable or not TOML/JSON/GeoJSON
    ├── InvalidField            a value breaks the schema
    │   ├── MissingTranslation  a name lacks one of ja/en/zh/ko
    │   └── ThresholdsOutOfOrder
    ├── DuplicateId             an id is used twice (ids are unique across the pack)
    ├── DuplicateTown           a town is mapped to two districts
    ├── UnknownDistrict         a reference to, or lookup of, a district that does not exist
    ├── UnknownSite / UnknownGauge   lookups of ids that do not exist
    ├── InvalidGeometry         a district polygon is invalid
    │   └── OverlappingDistricts
    ├── SiteOutsideDistrict     a site's coordinates are not in its district_id
    └── UnsupportedLanguage     a language the pack does not carry names for
"""

from __future__ import annotations


class RegionPackError(Exception):
    """Base of every error of :mod:`schemas.region`."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None):
        self.message = message
        self.file = file
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.file, self.field) if part)
        return f"{where}: {self.message}" if where else self.message


class PackNotFound(RegionPackError):
    """No region pack with that name or at that path."""


class InvalidPackFile(RegionPackError):
    """A pack file is missing, unreadable, or not valid TOML/JSON."""


class InvalidField(RegionPackError):
    """A value in a pack file breaks the schema."""


class MissingTranslation(InvalidField):
    """A name is missing one of the required languages."""


class ThresholdsOutOfOrder(InvalidField):
    """Gauge thresholds are not strictly increasing."""


class DuplicateId(RegionPackError):
    """An id appears twice; ids are unique across districts, sites and gauges."""


class DuplicateTown(RegionPackError):
    """A town is assigned to more than one district."""


class UnknownDistrict(RegionPackError, LookupError):
    """A district id that the pack does not define."""


class UnknownSite(RegionPackError, LookupError):
    """A site id that the pack does not define."""


class UnknownGauge(RegionPackError, LookupError):
    """A gauge id that the pack does not define."""


class InvalidGeometry(RegionPackError):
    """A district polygon is not a valid (Multi)Polygon."""


class OverlappingDistricts(InvalidGeometry):
    """Two district polygons overlap, so a point could belong to both."""


class SiteOutsideDistrict(RegionPackError):
    """A site's coordinates do not fall inside the district it names."""


class UnsupportedLanguage(RegionPackError, ValueError):
    """A language for which packs carry no names."""
