"""Read a region pack from its directory and validate it.

A pack is a directory with three files (see docs/region-packs.md):

- ``pack.toml``: the region, its districts (names, towns), gauges, attribution;
- ``districts.geojson``: one Feature per district, ``properties.id`` naming it;
- ``sites.json``: evacuation sites and shelters;
- ``facilities.json`` (optional, hand-written): stranded-commuter facilities
  (一時滞在施設), each of kind ``temporary_stay`` only; they join the pack's sites
  after those of ``sites.json``.

Packs shipped with Sonae live under ``schemas/region/packs/<name>/`` and are
found by name through :mod:`importlib.resources`, so they load from an editable
install, a wheel or a source checkout alike; any other directory can be passed
as a :class:`~pathlib.Path`.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.common import Slug
from schemas.region.errors import (
    DuplicateId,
    InvalidField,
    InvalidGeometry,
    InvalidPackFile,
    MissingTranslation,
    PackNotFound,
    RegionPackError,
    ThresholdsOutOfOrder,
    UnknownDistrict,
)
from schemas.region.model import (
    LANGUAGES,
    District,
    Gauge,
    Geometry,
    Language,
    Names,
    NonEmptyStr,
    RegionPack,
    Site,
    SiteKind,
)
from schemas.region.region import Origin, Region

DEFAULT_REGION = "chiyoda"
MANIFEST_FILE = "pack.toml"
DISTRICTS_FILE = "districts.geojson"
SITES_FILE = "sites.json"
FACILITIES_FILE = "facilities.json"

_PACK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_NAME_FIELDS = frozenset({"names", "river_names", "station_names"})


def packs_root() -> Traversable:
    """The directory of the packs shipped with Sonae."""
    return resources.files("schemas.region").joinpath("packs")


def available_packs() -> tuple[str, ...]:
    """Names of the packs shipped with Sonae, sorted."""
    return tuple(
        sorted(
            entry.name
            for entry in packs_root().iterdir()
            if entry.is_dir() and entry.joinpath(MANIFEST_FILE).is_file()
        )
    )


def load_region(name_or_path: str | Path = DEFAULT_REGION) -> Region:
    """Load and validate a region pack: a shipped pack's name, or a directory Path.

    A string that looks like a pack name ("chiyoda") names a shipped pack; any
    other string, or a Path, is a directory. Raises a RegionPackError subclass
    naming the file and field of the first problem found.
    """
    directory = _locate(name_or_path)
    manifest_name = _label(directory, MANIFEST_FILE)
    geometry_name = _label(directory, DISTRICTS_FILE)
    sites_name = _label(directory, SITES_FILE)

    manifest = _validate(_Manifest, _read_toml(directory, MANIFEST_FILE), manifest_name)
    features = _validate(
        _FeatureCollection, _read_json(directory, DISTRICTS_FILE), geometry_name
    ).features
    sites = _validate(_SitesFile, _read_json(directory, SITES_FILE), sites_name).sites
    facilities_name = _label(directory, FACILITIES_FILE)
    facilities: tuple[Site, ...] = ()
    if directory.joinpath(FACILITIES_FILE).is_file():
        facilities = _only_facilities(_validate(
            _FacilitiesFile, _read_json(directory, FACILITIES_FILE), facilities_name
        ).facilities, facilities_name)

    polygons = _polygons_by_district(manifest, features, geometry_name)
    districts = tuple(
        District(
            id=entry.id,
            names=entry.names,
            polygon=polygons[entry.id][1],
            towns=entry.towns,
            illustrative=entry.illustrative,
        )
        for entry in manifest.districts
    )
    pack = _validate(
        RegionPack,
        {
            **manifest.model_dump(exclude={"districts", "gauges"}),
            "names": manifest.names,
            "districts": districts,
            "sites": sites + facilities,
            "gauges": manifest.gauges,
        },
        manifest_name,
    )
    origin = Origin(
        manifest=manifest_name,
        geometry=geometry_name,
        sites=sites_name,
        polygon_fields={
            district_id: f"features[{index}].geometry"
            for district_id, (index, _) in polygons.items()
        },
        facilities=facilities_name,
        first_facility=len(sites),
    )
    return Region(pack, origin=origin)


# --- file models: the shape of each file before the parts are joined ---


class _FileModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _DistrictEntry(_FileModel):
    id: Slug
    names: Names
    towns: tuple[NonEmptyStr, ...] = ()
    illustrative: bool


class _Manifest(_FileModel):
    format_version: Literal[1]
    id: Slug
    names: Names
    default_language: Language
    timezone: NonEmptyStr
    municipality_code: str | None = None
    attribution: Annotated[tuple[NonEmptyStr, ...], Field(min_length=1)]
    districts: Annotated[tuple[_DistrictEntry, ...], Field(min_length=1)]
    gauges: tuple[Gauge, ...] = ()


class _FeatureProperties(BaseModel):
    # Other properties (a display name for map viewers, say) are allowed and ignored.
    model_config = ConfigDict(frozen=True, extra="ignore")
    id: Slug


class _Feature(_FileModel):
    type: Literal["Feature"]
    properties: _FeatureProperties
    geometry: Geometry


class _FeatureCollection(BaseModel):
    # GeoJSON allows "foreign members" (RFC 7946 6.1), e.g. a generated_by note.
    model_config = ConfigDict(frozen=True, extra="ignore")
    type: Literal["FeatureCollection"]
    features: Annotated[tuple[_Feature, ...], Field(min_length=1)]


class _SitesFile(_FileModel):
    generated_by: str = ""
    sites: tuple[Site, ...]


class _FacilitiesFile(_FileModel):
    # Hand-written: a note says where the entries come from (or that they are illustrative).
    note: str = ""
    facilities: tuple[Site, ...]


def _only_facilities(facilities: tuple[Site, ...], file: str) -> tuple[Site, ...]:
    for index, site in enumerate(facilities):
        if site.kinds != {SiteKind.TEMPORARY_STAY}:
            raise InvalidField(
                f"{FACILITIES_FILE} lists temporary_stay facilities only; evacuation sites "
                f"and shelters belong in {SITES_FILE}",
                file=file, field=f"facilities[{index}].kinds")
    return facilities


# --- helpers ---


def load_pack_section(
    name_or_path: str | Path, filename: str, model: type[_M]
) -> _M:
    """Load one more TOML file of a pack (e.g. decision rules, message templates) into ``model``.

    Services keep their own region data beside the core pack files and validate
    it with their own model; errors name the file and the field like the core
    loader's.
    """
    directory = _locate(name_or_path)
    return _validate(model, _read_toml(directory, filename), _label(directory, filename))


def _locate(name_or_path: str | Path) -> Traversable:
    if isinstance(name_or_path, str) and _PACK_NAME.fullmatch(name_or_path):
        directory: Traversable = packs_root().joinpath(name_or_path)
        if not directory.is_dir():
            raise PackNotFound(
                f"no region pack named {name_or_path!r}; shipped packs: "
                f"{', '.join(available_packs()) or 'none'}"
            )
        return directory
    path = Path(name_or_path)
    if not path.is_dir():
        raise PackNotFound(f"region pack directory {str(path)!r} does not exist")
    return path


def _label(directory: Traversable, filename: str) -> str:
    return str(directory.joinpath(filename))


def _read_bytes(directory: Traversable, filename: str) -> bytes:
    try:
        return directory.joinpath(filename).read_bytes()
    except FileNotFoundError:
        raise InvalidPackFile("file is missing", file=_label(directory, filename)) from None
    except OSError as e:
        raise InvalidPackFile(f"cannot read: {e}", file=_label(directory, filename)) from e


def _read_toml(directory: Traversable, filename: str) -> dict[str, Any]:
    try:
        return tomllib.loads(_read_bytes(directory, filename).decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InvalidPackFile(f"not valid TOML: {e}", file=_label(directory, filename)) from e


def _read_json(directory: Traversable, filename: str) -> Any:
    try:
        return json.loads(_read_bytes(directory, filename))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidPackFile(f"not valid JSON: {e}", file=_label(directory, filename)) from e


_M = TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], data: Any, file: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise _translate(e, file) from e


def _field_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _translate(error: ValidationError, file: str) -> RegionPackError:
    """Turn pydantic's report into one error naming the file and first bad field."""
    details = error.errors(include_url=False)
    first = details[0]
    loc = first["loc"]
    message = first["msg"]
    if len(details) > 1:
        others = "; ".join(f"{_field_path(d['loc'])}: {d['msg']}" for d in details[1:6])
        message += f" (also: {others}{'; …' if len(details) > 6 else ''})"
    kind: type[RegionPackError] = InvalidField
    if first["type"] == "thresholds_order":
        kind = ThresholdsOutOfOrder
    elif (
        first["type"] == "missing"
        and len(loc) >= 2
        and loc[-2] in _NAME_FIELDS
        and loc[-1] in LANGUAGES
    ):
        kind = MissingTranslation
        message = f"name in {loc[-1]!r} is missing; every name needs {', '.join(LANGUAGES)}"
    return kind(message, file=file, field=_field_path(loc))


def _polygons_by_district(
    manifest: _Manifest, features: tuple[_Feature, ...], geometry_file: str
) -> dict[str, tuple[int, Any]]:
    declared = {d.id for d in manifest.districts}
    found: dict[str, tuple[int, Any]] = {}
    for index, feature in enumerate(features):
        district_id = feature.properties.id
        where = {"file": geometry_file, "field": f"features[{index}].properties.id"}
        if district_id not in declared:
            raise UnknownDistrict(
                f"feature for {district_id!r}, which {MANIFEST_FILE} does not declare", **where
            )
        if district_id in found:
            raise DuplicateId(
                f"second feature for district {district_id!r} "
                f"(first is features[{found[district_id][0]}])",
                **where,
            )
        found[district_id] = (index, feature.geometry)
    for index, entry in enumerate(manifest.districts):
        if entry.id not in found:
            raise InvalidGeometry(
                f"no feature for district {entry.id!r} (declared in {MANIFEST_FILE} "
                f"districts[{index}])",
                file=geometry_file,
                field="features",
            )
    return found
