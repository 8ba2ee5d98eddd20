"""Build the generated files of the Chiyoda region pack from public source data.

Inputs:
- ``<source>/towns.geojson`` (59 町 polygons, © Linked Open Addresses Japan),
  ``<source>/chiyoda_13101_designated_emergency_evacuation_sites_gsi.csv`` and
  ``<source>/chiyoda_13101_designated_shelters_gsi.csv`` (出典：国土地理院);
- ``<pack>/pack.toml`` (hand-written: which towns make each district);
- ``infra/tools/chiyoda_sites.toml`` (hand-written: names in en/zh/ko, capacity category).

Outputs, in ``<pack>``: ``districts.geojson`` and ``sites.json``. Output is
deterministic (sorted, fixed float rounding), so a rebuild from the same inputs
gives byte-identical files. The service never reads the source data: only the
generated files are checked in and shipped.

Usage::

    .venv/bin/python -m infra.tools.build_region_chiyoda [--source DIR] [--pack DIR] [--check]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import Point, mapping, shape
from shapely.geometry.polygon import orient
from shapely.ops import unary_union

from schemas.hazards import HAZARD_LABELS_JA, Hazard

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "chiyoda"
DEFAULT_PACK = REPO_ROOT / "schemas" / "region" / "packs" / "chiyoda"
DEFAULT_SITE_INPUTS = Path(__file__).resolve().with_name("chiyoda_sites.toml")

TOWNS_FILE = "towns.geojson"
EVACUATION_SITES_FILE = "chiyoda_13101_designated_emergency_evacuation_sites_gsi.csv"
SHELTERS_FILE = "chiyoda_13101_designated_shelters_gsi.csv"
#: Town names in towns.geojson and GSI addresses carry this prefix; the pack does not.
TOWN_PREFIX = "東京都千代田区"
GENERATED_BY = "infra/tools/build_region_chiyoda.py (do not edit by hand; see README.md)"

#: GSI hazard column → Hazard. The columns are named exactly as the official
#: labels. 火山現象 (volcanic phenomena) is not among them on purpose: no Chiyoda
#: site is designated for it and Hazard has no such member; the build fails if
#: a row ever marks it, rather than dropping the designation silently.
HAZARD_COLUMNS: Mapping[str, Hazard] = {label: hazard for hazard, label in HAZARD_LABELS_JA.items()}
UNSUPPORTED_HAZARD_COLUMNS = ("火山現象",)

# GeoJSON coordinates are rounded to 6 decimals (about 0.1 m): plenty for a
# district boundary and keeps the file small.
GRID = 1e-6
DECIMALS = 6


class BuildError(Exception):
    """The inputs cannot produce a consistent pack; the message says which and why."""


@dataclass(frozen=True)
class GsiRow:
    """One row of a GSI CSV, reduced to what the pack needs."""

    common_id: str
    name: str
    address: str
    lat: float
    lon: float
    hazards: tuple[Hazard, ...]
    same_address_flag: bool


def build(source: Path, pack: Path, site_inputs: Path) -> dict[str, bytes]:
    """Generated file name → content for the pack, from the given inputs."""
    manifest = _read_toml(pack / "pack.toml")
    inputs = _read_toml(site_inputs)
    towns = _read_towns(source / TOWNS_FILE)
    mapping_ = _town_mapping(manifest, towns)
    polygons = _district_polygons(mapping_, towns)
    evacuation_sites = _read_gsi(source / EVACUATION_SITES_FILE, with_hazards=True)
    shelters = _read_gsi(source / SHELTERS_FILE, with_hazards=False)
    sites = _sites(evacuation_sites, shelters, inputs, polygons, mapping_, towns)
    return {
        "districts.geojson": _districts_geojson(polygons, manifest),
        "sites.json": _sites_json(sites),
    }


# --- towns and districts ---


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BuildError(f"{path}: {e}") from e


def _read_towns(path: Path) -> dict[str, Any]:
    try:
        collection = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BuildError(f"{path}: {e}") from e
    towns: dict[str, Any] = {}
    for index, feature in enumerate(collection["features"]):
        full_name = feature["properties"]["name"]
        if not full_name.startswith(TOWN_PREFIX):
            raise BuildError(f"{path}: features[{index}]: {full_name!r} lacks {TOWN_PREFIX!r}")
        town = full_name.removeprefix(TOWN_PREFIX)
        if town in towns:
            raise BuildError(f"{path}: features[{index}]: town {town!r} appears twice")
        geometry = shape(feature["geometry"])
        if not geometry.is_valid:
            raise BuildError(f"{path}: features[{index}] ({town}): invalid polygon")
        towns[town] = geometry
    return towns


def _town_mapping(manifest: Mapping[str, Any], towns: Mapping[str, Any]) -> dict[str, str]:
    """town → district id; every town of the source mapped exactly once."""
    owner: dict[str, str] = {}
    for district in manifest["districts"]:
        for town in district.get("towns", []):
            if town in owner:
                raise BuildError(
                    f"pack.toml: town {town!r} is in both {owner[town]!r} and {district['id']!r}"
                )
            owner[town] = district["id"]
    unknown = sorted(set(owner) - set(towns))
    if unknown:
        raise BuildError(f"pack.toml: towns not in {TOWNS_FILE}: {', '.join(unknown)}")
    unmapped = sorted(set(towns) - set(owner))
    if unmapped:
        raise BuildError(
            f"pack.toml: {len(unmapped)} town(s) of {TOWNS_FILE} are in no district: "
            + ", ".join(unmapped)
        )
    empty = [d["id"] for d in manifest["districts"] if d["id"] not in owner.values()]
    if empty:
        raise BuildError(f"pack.toml: districts without towns: {', '.join(empty)}")
    return owner


def _district_polygons(mapping_: Mapping[str, str], towns: Mapping[str, Any]) -> dict[str, Any]:
    members: dict[str, list[Any]] = {}
    for town in sorted(mapping_):  # sorted: union input order must not vary
        members.setdefault(mapping_[town], []).append(towns[town])
    polygons: dict[str, Any] = {}
    for district_id, geometries in members.items():
        # set_precision snaps to the grid *and* keeps the result valid, which
        # rounding coordinates by themselves would not guarantee.
        union = shapely.set_precision(unary_union(geometries), GRID)
        if union.geom_type != "Polygon":
            raise BuildError(
                f"district {district_id!r} is not one contiguous polygon "
                f"({union.geom_type}); check its towns in pack.toml"
            )
        polygons[district_id] = orient(union, sign=1.0)  # RFC 7946: exterior counter-clockwise
    return polygons


def _districts_geojson(polygons: Mapping[str, Any], manifest: Mapping[str, Any]) -> bytes:
    lines = []
    for district in manifest["districts"]:
        feature = {
            "type": "Feature",
            "properties": {"id": district["id"], "name": district["names"]["ja"]},
            "geometry": _rounded(mapping(polygons[district["id"]])),
        }
        lines.append(json.dumps(feature, ensure_ascii=False, separators=(",", ":")))
    # One feature per line keeps diffs readable without bloating the file.
    body = ",\n".join(lines)
    header = json.dumps(GENERATED_BY, ensure_ascii=False)
    return (
        f'{{"type":"FeatureCollection","generated_by":{header},"features":[\n{body}\n]}}\n'
    ).encode()


def _rounded(geometry: Mapping[str, Any]) -> dict[str, Any]:
    def walk(value: Any) -> Any:
        if isinstance(value, float | int):
            return round(float(value), DECIMALS)
        return [walk(v) for v in value]

    return {"type": geometry["type"], "coordinates": walk(geometry["coordinates"])}


# --- sites ---


def _read_gsi(path: Path, *, with_hazards: bool) -> list[GsiRow]:
    flag_column = "指定避難所との住所同一" if with_hazards else "指定緊急避難場所との住所同一"
    required = {"共通ID", "施設・場所名", "住所", "緯度", "経度", flag_column}
    if with_hazards:
        required |= set(HAZARD_COLUMNS) | set(UNSUPPORTED_HAZARD_COLUMNS)
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            missing = required - set(reader.fieldnames or ())
            if missing:
                raise BuildError(f"{path}: missing columns: {', '.join(sorted(missing))}")
            rows = list(reader)
    except OSError as e:
        raise BuildError(f"{path}: {e}") from e
    result = []
    for line, row in enumerate(rows, start=2):
        if with_hazards:
            for column in UNSUPPORTED_HAZARD_COLUMNS:
                if row[column].strip():
                    raise BuildError(
                        f"{path}:{line}: {column} is set but Hazard has no such member"
                    )
        hazards = tuple(
            hazard
            for column, hazard in HAZARD_COLUMNS.items()
            if with_hazards and row[column].strip() == "1"
        )
        try:
            lat, lon = float(row["緯度"]), float(row["経度"])
        except ValueError as e:
            raise BuildError(f"{path}:{line}: bad 緯度/経度: {e}") from e
        result.append(
            GsiRow(
                common_id=row["共通ID"].strip(),
                name=row["施設・場所名"].strip(),
                address=row["住所"].strip(),
                lat=lat,
                lon=lon,
                hazards=hazards,
                same_address_flag=row[flag_column].strip() == "1",
            )
        )
    return result


def _sites(
    evacuation_sites: Sequence[GsiRow],
    shelters: Sequence[GsiRow],
    inputs: Mapping[str, Any],
    polygons: Mapping[str, Any],
    mapping_: Mapping[str, str],
    towns: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One record per physical place: a shelter at an evacuation site's address joins it."""
    categories = inputs["capacity_by_category"]
    named = dict(inputs["sites"])
    records = []
    for site, shelter in _link_places(evacuation_sites, shelters):
        primary = site or shelter
        assert primary is not None  # _link_places never yields (None, None)
        site_id = primary.common_id.lower()
        entry = named.pop(site_id, None)
        if entry is None:
            raise BuildError(f"chiyoda_sites.toml: no [sites.{site_id}] for {primary.name}")
        if entry["ja"] != primary.name:
            raise BuildError(
                f"chiyoda_sites.toml: sites.{site_id}.ja is {entry['ja']!r}, "
                f"GSI says {primary.name!r}"
            )
        # The evacuation site's coordinates win: they are the designation hazards refer to.
        district_id = _district_of(primary, polygons, mapping_, towns)
        if site and shelter and _district_of(shelter, polygons, mapping_, towns) != district_id:
            raise BuildError(f"{shelter.common_id}: shelter and site coordinates disagree")
        if entry.get("category") not in categories:
            raise BuildError(
                f"chiyoda_sites.toml: sites.{site_id}.category must be one of "
                + ", ".join(sorted(categories))
            )
        kinds = [k for k, row in (("evacuation_site", site), ("shelter", shelter)) if row]
        records.append(
            {
                "id": site_id,
                "kinds": kinds,
                "source_ids": [row.common_id for row in (site, shelter) if row],
                "names": {lang: entry[lang] for lang in ("ja", "en", "zh", "ko")},
                "address": primary.address,
                "lat": round(primary.lat, DECIMALS),
                "lon": round(primary.lon, DECIMALS),
                "district_id": district_id,
                # Listed in the enum's order so that the file reads the same way each time.
                "hazards": [h.value for h in Hazard if site and h in site.hazards],
                "capacity": int(categories[entry["category"]]),
                "capacity_illustrative": True,
            }
        )
    if named:
        raise BuildError(
            f"chiyoda_sites.toml: entries for unknown sites: {', '.join(sorted(named))}"
        )
    return sorted(records, key=lambda r: str(r["id"]))


def _link_places(
    evacuation_sites: Sequence[GsiRow], shelters: Sequence[GsiRow]
) -> list[tuple[GsiRow | None, GsiRow | None]]:
    """Pair each shelter with the evacuation site at the same address, if the data says so."""
    places: dict[str, tuple[GsiRow | None, GsiRow | None]] = {}
    for row in evacuation_sites:
        if row.address in places:
            raise BuildError(f"{EVACUATION_SITES_FILE}: two sites at {row.address!r}")
        places[row.address] = (row, None)
    for shelter in shelters:
        site, other = places.get(shelter.address, (None, None))
        if other is not None:
            raise BuildError(f"{SHELTERS_FILE}: two shelters at {shelter.address!r}")
        # Both files flag "same address as a designation in the other file"; the
        # flags and the addresses must agree, or the pairing would be a guess.
        if shelter.same_address_flag != (site is not None):
            raise BuildError(
                f"{SHELTERS_FILE}: {shelter.common_id} ({shelter.name}) says "
                f"same-address={shelter.same_address_flag} but an evacuation site at "
                f"{shelter.address!r} {'exists' if site else 'does not exist'}"
            )
        if site is not None and (site.name != shelter.name or not site.same_address_flag):
            raise BuildError(
                f"{SHELTERS_FILE}: {shelter.common_id} does not match site {site.common_id}"
            )
        places[shelter.address] = (site, shelter)
    unpaired = [s.common_id for s, sh in places.values() if s and s.same_address_flag and not sh]
    if unpaired:
        raise BuildError(
            f"{EVACUATION_SITES_FILE}: flagged as shelters, no shelter row: {', '.join(unpaired)}"
        )
    return list(places.values())


def _district_of(
    row: GsiRow,
    polygons: Mapping[str, Any],
    mapping_: Mapping[str, str],
    towns: Mapping[str, Any],
) -> str:
    """District by point-in-polygon, cross-checked against the town in the address."""
    point = Point(row.lon, row.lat)
    found = sorted(d for d, polygon in polygons.items() if polygon.intersects(point))
    if len(found) != 1:
        raise BuildError(f"{row.common_id} ({row.name}) lies in districts {found or 'none'}")
    # A point can fall a few metres into the next town (上智大学 lies in 麹町 by
    # its coordinates, 紀尾井町 by its address); only a different *district* is an error.
    address = row.address.removeprefix(TOWN_PREFIX)
    address_towns = [t for t in towns if address.startswith(t)]
    if address_towns:
        by_address = mapping_[max(address_towns, key=len)]
        if by_address != found[0]:
            raise BuildError(
                f"{row.common_id} ({row.name}): coordinates are in {found[0]!r} "
                f"but the address is in {by_address!r}"
            )
    return found[0]


def _sites_json(sites: Sequence[Mapping[str, Any]]) -> bytes:
    document = {"generated_by": GENERATED_BY, "sites": list(sites)}
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode()


# --- entry point ---


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or with --check, verify) the Chiyoda pack's generated files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="source data dir")
    parser.add_argument("--pack", type=Path, default=DEFAULT_PACK, help="pack directory")
    parser.add_argument("--sites", type=Path, default=DEFAULT_SITE_INPUTS, help="site names")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the pack files differ from a rebuild"
    )
    args = parser.parse_args(argv)
    try:
        files = build(args.source, args.pack, args.sites)
    except BuildError as e:
        print(f"build_region_chiyoda: error: {e}", file=sys.stderr)
        return 2
    stale = [name for name, content in files.items() if _existing(args.pack / name) != content]
    if args.check:
        for name in stale:
            print(f"build_region_chiyoda: {args.pack / name} is out of date", file=sys.stderr)
        return 1 if stale else 0
    for name in stale:
        (args.pack / name).write_bytes(files[name])
        print(f"wrote {args.pack / name}")
    _verify(args.pack)
    return 0


def _existing(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def _verify(pack: Path) -> None:
    # Load what was written with the service's own loader, so a build can never
    # leave a pack the services would refuse at start-up.
    from schemas.region import load_region

    region = load_region(pack)
    print(
        f"{region.id}: {len(region.districts)} districts, {len(region.sites)} sites, "
        f"{len(region.gauges)} gauges: OK"
    )


if __name__ == "__main__":
    raise SystemExit(main())
