"""The region pack's JMA code table (``jma.toml``): JMA codes → the region's districts.

JMA names places by code, one code list per kind of place; a pack says which
codes concern it and which of its districts each one covers. A code that is
not in the table is not about the region, and the mapping ignores it.

``jma.toml`` (see docs/jma.md)::

    data_types = ["VPWW54", "VXSE53", …]     # what a feed poller should fetch
    [municipalities]      # 気象・地震・火山情報／市町村等 (VPWW54–61, VXWW50, VXSE53 cities)
    "1310100" = ["kojimachi", "fujimi", …]
    [forecast_regions]    # 気象情報／府県予報区・細分区域等 (VPOA50)
    [seismic_areas]       # 地震情報／細分区域 (VXSE51, VXSE53)
    [rivers]              # 河川 (VXKO)
    [flood_forecast_areas]  # 指定河川洪水予報（予報区域） (VXKO)
    [tsunami_regions]     # 津波予報区 (VTSE41)
    [landslide_municipalities]  # VXWW50 only: districts with 土砂災害警戒区域

The file is read with :func:`schemas.region.load_pack_section`, so errors name
the file and field like every other pack file; district ids are checked against
the pack's districts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.common import Slug
from schemas.jma.model import DataType
from schemas.region import Region, UnknownDistrict, load_pack_section, load_region

__all__ = ["JMA_TABLE_FILE", "JmaAreaTable", "JmaCode", "load_jma_table"]

JMA_TABLE_FILE: Final = "jma.toml"
"""The table's file name in a region pack."""

JmaCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}$")]
"""A JMA code: digits, leading zeros kept."""

_Districts = Annotated[tuple[Slug, ...], Field(min_length=1)]
_CodeMap = dict[JmaCode, _Districts]


class JmaAreaTable(BaseModel):
    """Which JMA codes concern the region, and the districts each one covers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_types: tuple[DataType, ...] = tuple(DataType)
    """The data types the region wants (a feed poller fetches only these)."""
    municipalities: _CodeMap = {}
    """気象・地震・火山情報／市町村等 (7 digits, e.g. 千代田区 1310100)."""
    forecast_regions: _CodeMap = {}
    """気象情報／府県予報区・細分区域等 (6 digits, e.g. 東京都 130000)."""
    seismic_areas: _CodeMap = {}
    """地震情報／細分区域 (3 digits, e.g. 東京都２３区 350)."""
    rivers: _CodeMap = {}
    """河川 codes of 指定河川洪水予報."""
    flood_forecast_areas: _CodeMap = {}
    """指定河川洪水予報（予報区域） codes."""
    tsunami_regions: _CodeMap = {}
    """津波予報区 (3 digits, e.g. 東京湾内湾 312)."""
    landslide_municipalities: _CodeMap = {}
    """For 土砂災害警戒情報 (VXWW50) only: the districts of a municipality it concerns
    (those with 土砂災害警戒区域); a municipality not listed here concerns all its
    ``municipalities`` districts."""

    def districts(self, table: dict[str, tuple[str, ...]], codes: tuple[str, ...]) -> set[str]:
        """The union of the districts of ``codes`` in one of this table's maps."""
        found: set[str] = set()
        for code in codes:
            found.update(table.get(code, ()))
        return found


_MAPS: Final = ("municipalities", "forecast_regions", "seismic_areas", "rivers",
                "flood_forecast_areas", "tsunami_regions", "landslide_municipalities")


def load_jma_table(name_or_path: str | Path, region: Region | None = None) -> JmaAreaTable:
    """Load and check a pack's ``jma.toml`` (a shipped pack's name, or a directory).

    ``region`` is the already loaded pack, to check district ids against (loaded
    here when not given). Raises :class:`~schemas.region.RegionPackError` subclasses.
    """
    table = load_pack_section(name_or_path, JMA_TABLE_FILE, JmaAreaTable)
    known = {d.id for d in (region or load_region(name_or_path)).districts}
    for name in _MAPS:
        for code, districts in getattr(table, name).items():
            for index, district in enumerate(districts):
                if district not in known:
                    raise UnknownDistrict(
                        f"district {district!r} is not a district of the pack",
                        file=JMA_TABLE_FILE, field=f"{name}.{code}[{index}]")
    return table
