"""External CAP 1.2 alerts → ``hazard.warning`` payloads.

Steps, each refusing with a reason the sender can act on:

1. **Parse** with a hardened lxml parser: no network, no entity resolution, no
   DTD loading, no huge trees; any ``DOCTYPE`` is refused outright (CAP needs
   none, and a DTD is how XXE and entity-expansion attacks get in). Not
   well-formed → :class:`~services.intake.errors.MalformedInput` (HTTP 400).
   Then the element counts are held to :class:`CapLimits` (elements, ``info``,
   ``area``, ``polygon``, ``circle``, polygon points, ``geocode``) before any
   further work → :class:`~services.intake.errors.TooManyElements` (413), one
   error per limit exceeded, naming the count and the limit: the byte limit
   alone lets 1 MiB carry ~30,000 circles, each intersected with every district.
2. **Validate** against the OASIS CAP 1.2 XML Schema, checked in at
   ``schemas/cap/CAP-v1.2.xsd`` → :class:`~services.intake.errors.InvalidInput`
   (422) naming the schema error and its line.
3. **Map** each ``info`` block to one warning (:func:`map_alert`):

   - *language*: CAP repeats an ``info`` block per language; only one language
     is mapped (the region's default, else English, else the first given), so a
     bilingual alert is one warning, not two;
   - *status*: ``Actual`` is live, ``Exercise`` becomes drill traffic
     (``exercise=true``); ``System``, ``Test`` and ``Draft`` are refused;
     *msgType* ``Alert``/``Update``/``Cancel`` → issued/updated/cancelled;
     ``Ack`` and ``Error`` carry no warning and are refused;
   - *kind, hazard, alert level*: :data:`EVENT_CODE_RULES` (by ``eventCode``,
     e.g. SAME codes) then :data:`EVENT_NAME_RULES` (by ``event`` text, the
     JMA warning names); failing both, the kind is a slug of the event text and
     the level comes from severity and urgency (:func:`level_from`). The tables
     are defaults kept here; a region pack could carry its own (open item);
   - *areas*: see :class:`RegionAreas` — geocodes, names and geometry matched
     against the region pack. An ``info`` naming no area of the region is
     skipped; an alert with no mappable ``info`` is refused;
   - *ids*: ``warning_id`` is ``<sender>/<identifier>`` of the original alert
     (for an Update or Cancel: the first message it ``references``), so updates
     of one warning share an id and a Kafka key; a second ``info`` adds ``/1``…;
   - *times*: ``issued_at`` = ``sent``; ``expires_at`` = the ``info``'s
     ``expires``;
   - *sender*: the alert speaks for ``cap:<sender>`` (:func:`sender_of`), which
     intake binds to the token (:func:`services.intake.domain.bind_sender`).

Why one file over ~500 lines: parsing, the rule tables and the area matching
are the three steps of one mapping whose contract is this docstring, and every
step refuses with the same error paths into the alert; split apart, a reader
would follow one CAP element through three modules.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

import shapely
import shapely.affinity
from lxml import etree
from pydantic import ValidationError
from shapely.geometry import Point, Polygon, shape

from infra.settings import Settings
from schemas.cap import cap_schema
from schemas.envelope import derive_id
from schemas.hazards import Hazard, HazardWarningPayload, WarningAction, WarningSource
from schemas.region import Region
from schemas.xml import hardened_parser
from services.intake.errors import FieldError, InvalidInput, MalformedInput, TooManyElements
from services.intake.parsing import field_errors

__all__ = [
    "CAP_NS",
    "EVENT_CODE_RULES",
    "EVENT_NAME_RULES",
    "CapAlert",
    "CapArea",
    "CapInfo",
    "CapLimits",
    "KindRule",
    "MappedAlert",
    "RegionAreas",
    "level_from",
    "map_alert",
    "read_alert",
    "read_and_map",
    "sender_of",
]

CAP_NS: Final = "urn:oasis:names:tc:emergency:cap:1.2"
_NS: Final = {"cap": CAP_NS}

# ExternalId in schemas.common: what a warning_id / cap_identifier may look like.
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}$")
_SLUG_CHARS = re.compile(r"[^a-z0-9]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# --- parsing and validation -------------------------------------------------------


def _parse(data: bytes) -> Any:
    if not data.strip():
        raise MalformedInput("the body is empty; expected a CAP 1.2 <alert> document")
    try:
        root = etree.fromstring(data, hardened_parser())
    except etree.XMLSyntaxError as e:
        raise MalformedInput(f"the body is not well-formed XML: {e}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise MalformedInput("a DOCTYPE is not allowed in a CAP alert (no DTDs, no entities)")
    return root


_DEFAULTS: Final = Settings.model_fields


def _default(name: str) -> int:
    value = _DEFAULTS[f"intake_cap_max_{name}"].default
    assert isinstance(value, int)
    return value


@dataclass(frozen=True)
class CapLimits:
    """How much one alert may contain (counts over the whole document).

    The defaults (the ``intake_cap_max_*`` settings) are far above what real alerts carry —
    a JMA or NWS alert has a few ``info`` blocks, tens of areas and geocodes, a
    handful of polygons — and keep one alert's parse, validation and mapping to tens
    of milliseconds of a core (30,000 circles, which fit in 1 MiB, took 4.7 s).
    """

    elements: int = _default("elements")
    infos: int = _default("infos")
    areas: int = _default("areas")
    polygons: int = _default("polygons")
    circles: int = _default("circles")
    polygon_points: int = _default("polygon_points")
    """Points summed over every polygon (the cost of a geometry test grows with them)."""
    geocodes: int = _default("geocodes")

    @classmethod
    def from_settings(cls, settings: Settings) -> CapLimits:
        """The limits a process's ``intake_cap_max_*`` settings give."""
        return cls(**{f.name: getattr(settings, f"intake_cap_max_{f.name}")
                      for f in fields(cls)})


_LIMITED: Final = (
    # (field of CapLimits, element, pointer, setting)
    ("infos", "info", "/alert/info", "SONAE_INTAKE_CAP_MAX_INFOS"),
    ("areas", "area", "/alert/info/area", "SONAE_INTAKE_CAP_MAX_AREAS"),
    ("polygons", "polygon", "/alert/info/area/polygon", "SONAE_INTAKE_CAP_MAX_POLYGONS"),
    ("circles", "circle", "/alert/info/area/circle", "SONAE_INTAKE_CAP_MAX_CIRCLES"),
    ("geocodes", "geocode", "/alert/info/area/geocode", "SONAE_INTAKE_CAP_MAX_GEOCODES"),
)


def _check_limits(root: Any, limits: CapLimits) -> None:
    """Refuse, before validating or mapping, an alert with more elements than allowed."""
    errors: list[FieldError] = []
    total = sum(1 for _ in root.iter())
    if total > limits.elements:
        errors.append(FieldError(
            "/alert", f"{total} elements; the limit is {limits.elements} "
            "(SONAE_INTAKE_CAP_MAX_ELEMENTS)", "too_many"))
    for name, tag, where, setting in _LIMITED:
        limit = getattr(limits, name)
        count = sum(1 for _ in root.iter(f"{{{CAP_NS}}}{tag}"))
        if count > limit:
            errors.append(FieldError(
                where, f"{count} {tag} elements; the limit is {limit} ({setting})", "too_many"))
    points = sum(len(str(p.text or "").split()) for p in root.iter(f"{{{CAP_NS}}}polygon"))
    if points > limits.polygon_points:
        errors.append(FieldError(
            "/alert/info/area/polygon", f"{points} polygon points in all; the limit is "
            f"{limits.polygon_points} (SONAE_INTAKE_CAP_MAX_POLYGON_POINTS)", "too_many"))
    if errors:
        summary = "; ".join(e.message for e in errors)
        raise TooManyElements(f"the alert is too large to process: {summary}", errors=errors)


def _validate(root: Any) -> None:
    schema = cap_schema()
    if schema.validate(root):
        return
    errors = [
        FieldError(f"line {e.line}", _CONTROL.sub(" ", e.message)[:1000], "cap_schema")
        for e in list(schema.error_log)[:20]
    ]
    first = errors[0].message if errors else "invalid"
    raise InvalidInput(f"the alert is not valid CAP 1.2 (OASIS schema): {first}", errors=errors)


# --- the alert as plain data --------------------------------------------------------


@dataclass(frozen=True)
class CapArea:
    """One ``area`` of an ``info`` block."""

    desc: str
    polygons: tuple[str, ...] = ()
    circles: tuple[str, ...] = ()
    geocodes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CapInfo:
    """The parts of one ``info`` block that intake maps."""

    index: int
    """Position among the alert's ``info`` blocks (0-based)."""
    language: str
    categories: tuple[str, ...]
    event: str
    urgency: str
    severity: str
    certainty: str
    event_codes: tuple[tuple[str, str], ...]
    expires: datetime | None
    headline: str
    areas: tuple[CapArea, ...]


@dataclass(frozen=True)
class CapAlert:
    """A schema-valid CAP alert."""

    identifier: str
    sender: str
    sent: datetime
    status: str
    msg_type: str
    references: tuple[tuple[str, str], ...]
    """(sender, identifier) of each referenced message, in order."""
    infos: tuple[CapInfo, ...]


def _text(element: Any, path: str) -> str:
    value = element.findtext(path, default="", namespaces=_NS)
    return " ".join(str(value).split())


def _pairs(element: Any, path: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (_text(item, "cap:valueName"), _text(item, "cap:value"))
        for item in element.findall(path, namespaces=_NS)
    )


def _time(text: str) -> datetime | None:
    # The schema's pattern guarantees YYYY-MM-DDThh:mm:ss±hh:mm, which Python reads.
    return datetime.fromisoformat(text) if text else None


def read_alert(data: bytes, limits: CapLimits | None = None) -> CapAlert:
    """Parse, bound and schema-validate a CAP 1.2 document; return the parts intake uses."""
    root = _parse(data)
    _check_limits(root, limits or CapLimits())
    _validate(root)
    references = []
    for triple in _text(root, "cap:references").split():
        parts = triple.split(",")
        if len(parts) >= 2:
            references.append((parts[0], parts[1]))
    infos = []
    for i, info in enumerate(root.findall("cap:info", namespaces=_NS)):
        areas = tuple(
            CapArea(
                desc=_text(area, "cap:areaDesc"),
                polygons=tuple(" ".join(str(p.text or "").split())
                               for p in area.findall("cap:polygon", namespaces=_NS)),
                circles=tuple(" ".join(str(c.text or "").split())
                              for c in area.findall("cap:circle", namespaces=_NS)),
                geocodes=_pairs(area, "cap:geocode"),
            )
            for area in info.findall("cap:area", namespaces=_NS)
        )
        infos.append(CapInfo(
            index=i,
            language=_text(info, "cap:language") or "en-US",  # the schema's default
            categories=tuple(str(c.text or "").strip()
                             for c in info.findall("cap:category", namespaces=_NS)),
            event=_text(info, "cap:event"),
            urgency=_text(info, "cap:urgency"),
            severity=_text(info, "cap:severity"),
            certainty=_text(info, "cap:certainty"),
            event_codes=_pairs(info, "cap:eventCode"),
            expires=_time(_text(info, "cap:expires")),
            headline=_text(info, "cap:headline"),
            areas=areas,
        ))
    sent = _time(_text(root, "cap:sent"))
    assert sent is not None  # required by the schema
    return CapAlert(
        identifier=_text(root, "cap:identifier"),
        sender=_text(root, "cap:sender"),
        sent=sent,
        status=_text(root, "cap:status"),
        msg_type=_text(root, "cap:msgType"),
        references=tuple(references),
        infos=tuple(infos),
    )


# --- kind, hazard and level ------------------------------------------------------------


@dataclass(frozen=True)
class KindRule:
    """How an event maps: warning kind, designated hazard, 警戒レベル equivalent (or None)."""

    kind: str
    hazard: Hazard | None
    level: int | None
    """None: derive from severity and urgency."""


def _rule(kind: str, hazard: Hazard | None, level: int | None) -> KindRule:
    return KindRule(kind, hazard, level)


EVENT_CODE_RULES: Mapping[tuple[str, str], KindRule] = MappingProxyType({
    # US EAS/SAME codes, as used in the OASIS examples and many CAP feeds.
    ("SAME", "FFW"): _rule("flash_flood_warning", Hazard.FLOOD, 4),
    ("SAME", "FLW"): _rule("flood_warning", Hazard.FLOOD, 3),
    ("SAME", "FLA"): _rule("flood_watch", Hazard.FLOOD, 2),
    ("SAME", "SVR"): _rule("severe_thunderstorm_warning", None, None),
    ("SAME", "TOR"): _rule("tornado_warning", None, None),
    ("SAME", "TSW"): _rule("tsunami_warning", Hazard.TSUNAMI, 4),
    ("SAME", "TSA"): _rule("tsunami_watch", Hazard.TSUNAMI, 3),
    ("SAME", "EQW"): _rule("earthquake_warning", Hazard.EARTHQUAKE, None),
    ("SAME", "FRW"): _rule("fire_warning", Hazard.LARGE_FIRE, None),
    ("SAME", "SSW"): _rule("storm_surge_warning", Hazard.STORM_SURGE, 4),
    ("SAME", "EVI"): _rule("evacuation_immediate", None, 5),
    ("SAME", "CAE"): _rule("child_abduction_emergency", None, None),
    ("SAME", "CEM"): _rule("civil_emergency", None, None),
})
"""(eventCode valueName, value) → rule; valueName compared case-insensitively."""

EVENT_NAME_RULES: Mapping[str, KindRule] = MappingProxyType({
    # JMA warnings and river flood forecasts, with the alert-level equivalents
    # of the Cabinet Office guideline (避難情報に関するガイドライン).
    "大雨特別警報": _rule("heavy_rain_emergency", Hazard.INLAND_FLOOD, 5),
    "大雨警報": _rule("heavy_rain_warning", Hazard.INLAND_FLOOD, 3),
    "大雨注意報": _rule("heavy_rain_advisory", Hazard.INLAND_FLOOD, 2),
    "洪水警報": _rule("flood_warning", Hazard.FLOOD, 3),
    "洪水注意報": _rule("flood_advisory", Hazard.FLOOD, 2),
    "氾濫発生情報": _rule("river_flood_occurred", Hazard.FLOOD, 5),
    "氾濫危険情報": _rule("river_flood_danger", Hazard.FLOOD, 4),
    "氾濫警戒情報": _rule("river_flood_warning", Hazard.FLOOD, 3),
    "氾濫注意情報": _rule("river_flood_watch", Hazard.FLOOD, 2),
    "土砂災害警戒情報": _rule("landslide_alert", Hazard.LANDSLIDE, 4),
    "高潮特別警報": _rule("storm_surge_emergency", Hazard.STORM_SURGE, 4),
    "高潮警報": _rule("storm_surge_warning", Hazard.STORM_SURGE, 4),
    "高潮注意報": _rule("storm_surge_advisory", Hazard.STORM_SURGE, 2),
    "大津波警報": _rule("major_tsunami_warning", Hazard.TSUNAMI, 5),
    "津波警報": _rule("tsunami_warning", Hazard.TSUNAMI, 4),
    "津波注意報": _rule("tsunami_advisory", Hazard.TSUNAMI, 3),
    "緊急地震速報": _rule("earthquake_early_warning", Hazard.EARTHQUAKE, None),
})
"""JMA ``event`` names → rule; an event text *containing* a name matches (longest first)."""

_NAMES_LONGEST_FIRST: Final = tuple(sorted(EVENT_NAME_RULES, key=len, reverse=True))

_HAZARD_WORDS: Final = (
    ("tsunami", Hazard.TSUNAMI), ("earthquake", Hazard.EARTHQUAKE),
    ("landslide", Hazard.LANDSLIDE), ("storm surge", Hazard.STORM_SURGE),
    ("flood", Hazard.FLOOD), ("fire", Hazard.LARGE_FIRE),
)

_SEVERITY_BASE: Final = {"Extreme": 4, "Severe": 3, "Moderate": 2, "Minor": 1, "Unknown": 2}


def level_from(severity: str, urgency: str) -> int:
    """A 警戒レベル equivalent (1..5) from CAP severity and urgency, for unmapped events.

    Severity sets the base (Extreme 4, Severe 3, Moderate/Unknown 2, Minor 1) and
    an Immediate urgency raises it by one; a Past event is informational (1).
    """
    if urgency == "Past":
        return 1
    level = _SEVERITY_BASE.get(severity, 2) + (1 if urgency == "Immediate" else 0)
    return max(1, min(5, level))


def _kind_rule(info: CapInfo) -> KindRule:
    for name, value in info.event_codes:
        rule = EVENT_CODE_RULES.get((name.upper(), value.strip().upper()))
        if rule is not None:
            return rule
    for name in _NAMES_LONGEST_FIRST:
        if name in info.event:
            return EVENT_NAME_RULES[name]
    slug = _SLUG_CHARS.sub("_", info.event.lower()).strip("_")[:64].strip("_")
    if not slug:
        category = info.categories[0] if info.categories else "other"
        slug = "cap_" + _SLUG_CHARS.sub("_", category.lower()).strip("_")
    lowered = info.event.lower()
    hazard = next((h for word, h in _HAZARD_WORDS if word in lowered), None)
    return KindRule(slug, hazard, None)


# --- areas ------------------------------------------------------------------------

AreaMatcher = Callable[[CapArea], frozenset[str]]
"""Area → the region's area ids it covers (empty when none)."""

_SEPARATORS = re.compile(r"[,、，;；\n]")


def _norm(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


class RegionAreas:
    """Matches CAP areas to the region pack's districts.

    An area covers:

    - every district, when a ``geocode`` value is the region's municipality
      code (JIS X 0402, 5 digits; also with its check digit, or JMA's 7-digit
      form ``<code>00``), or when ``areaDesc`` (or one of its comma- or
      ``、``-separated parts) names the region itself in any pack language,
      possibly after a prefecture (``東京都千代田区``);
    - a district, when a geocode value is its id, or a part of ``areaDesc``
      names it (id, any language, with or without ``地区``), or names one of its
      towns (``神田司町``, also after the region's name: ``千代田区神田司町``);
    - the districts a ``polygon`` or ``circle`` intersects (WGS 84).
    """

    def __init__(self, region: Region) -> None:
        self.region = region
        self._all = frozenset(d.id for d in region.districts)
        self._region_names = {_norm(region.id)} | {
            _norm(region.pack.names.get(lang)) for lang in ("ja", "en", "zh", "ko")
        }
        names: dict[str, str] = {}
        for d in region.districts:
            keys = {d.id, *(d.names.get(lang) for lang in ("ja", "en", "zh", "ko")), *d.towns}
            for key in keys:
                norm = _norm(key)
                names.setdefault(norm, d.id)
                if norm.endswith("地区") and len(norm) > 2:
                    names.setdefault(norm[:-2], d.id)
        self._names = names
        self._code = region.pack.municipality_code
        self._shapes = tuple((d.id, shape(d.polygon.model_dump())) for d in region.districts)

    def __call__(self, area: CapArea) -> frozenset[str]:
        """The district ids ``area`` covers."""
        found: set[str] = set()
        for _, value in area.geocodes:
            found |= self._by_code(value.strip())
        for part in _SEPARATORS.split(area.desc):
            found |= self._by_name(_norm(part))
        for text in area.polygons:
            found |= self._by_geometry(_polygon(text))
        for text in area.circles:
            found |= self._by_geometry(_circle(text))
        return frozenset(found)

    def _by_code(self, value: str) -> frozenset[str]:
        if self._code and value.startswith(self._code) and len(value) in (5, 6, 7):
            return self._all
        district = self._names.get(_norm(value))
        return frozenset({district}) if district in self._all else frozenset()

    def _by_name(self, name: str) -> frozenset[str]:
        if not name:
            return frozenset()
        if name in self._names:
            return frozenset({self._names[name]})
        for region_name in self._region_names:
            if name.endswith(region_name):
                return self._all
            if region_name in name:
                rest = name.split(region_name, 1)[1]
                if rest in self._names:
                    return frozenset({self._names[rest]})
        return frozenset()

    def _by_geometry(self, geometry: Any) -> frozenset[str]:
        return frozenset(i for i, s in self._shapes if shapely.intersects(s, geometry))


def _points(text: str) -> list[tuple[float, float]]:
    points = []
    for pair in text.split():
        lat_text, _, lon_text = pair.partition(",")
        lat, lon = float(lat_text), float(lon_text)
        if not (math.isfinite(lat) and math.isfinite(lon)):
            raise ValueError("not finite")
        points.append((lon, lat))
    return points


def _polygon(text: str) -> Any:
    try:
        points = _points(text)
        polygon = Polygon(points)
        if len(points) < 4 or not polygon.is_valid:
            raise ValueError("not a valid ring")
    except ValueError:
        raise InvalidInput("an area polygon is not valid", errors=[FieldError(
            "/alert/info/area/polygon",
            "expected four or more 'lat,lon' pairs forming a closed, valid ring")]) from None
    return polygon


def _circle(text: str) -> Any:
    try:
        centre_text, radius_text = text.split()
        [(lon, lat)] = _points(centre_text)
        radius_km = float(radius_text)
        if not (math.isfinite(radius_km) and radius_km >= 0):
            raise ValueError("bad radius")
    except ValueError:
        raise InvalidInput("an area circle is not valid", errors=[FieldError(
            "/alert/info/area/circle", "expected 'lat,lon radius_km'")]) from None
    # Equirectangular approximation: fine at ward scale, and errs by metres.
    degrees = radius_km / 111.32
    squash = max(math.cos(math.radians(lat)), 1e-6)
    return shapely.affinity.scale(Point(lon, lat).buffer(max(degrees, 1e-9)), 1 / squash, 1.0)


# --- mapping ------------------------------------------------------------------------


@dataclass(frozen=True)
class MappedAlert:
    """What an alert becomes: warnings (one per mapped info), and its drill flag."""

    client_id: str
    """``<sender>,<identifier>``: CAP makes it unique, so it is the idempotency key."""
    exercise: bool
    occurred_at: datetime
    warnings: tuple[HazardWarningPayload, ...]
    skipped: tuple[str, ...]
    """Why each unmapped info block was skipped."""


_ACTIONS: Final = {
    "Alert": WarningAction.ISSUED,
    "Update": WarningAction.UPDATED,
    "Cancel": WarningAction.CANCELLED,
}


def _external_id(sender: str, identifier: str, suffix: str = "") -> str:
    candidate = f"{sender}/{identifier}{suffix}"
    if _EXTERNAL_ID.fullmatch(candidate):
        return candidate
    return f"cap:{derive_id('cap', sender, identifier)}{suffix}"


def sender_of(alert: CapAlert) -> str:
    """The sender an alert speaks for: ``cap:<sender>`` (spaces, never in a sender, as _)."""
    return "cap:" + re.sub(r"[\s\x00-\x1f\x7f]", "_", alert.sender.strip())[:200]


def _choose_language(infos: Sequence[CapInfo], preferred: Sequence[str]) -> list[CapInfo]:
    def primary(tag: str) -> str:
        return tag.split("-")[0].lower()

    for lang in preferred:
        chosen = [i for i in infos if primary(i.language) == lang]
        if chosen:
            return chosen
    first = primary(infos[0].language)
    return [i for i in infos if primary(i.language) == first]


def map_alert(
    alert: CapAlert, areas: AreaMatcher, *, preferred_languages: Sequence[str] = ("ja", "en")
) -> MappedAlert:
    """Map a schema-valid alert to warning payloads; raise InvalidInput when none results."""
    if alert.status not in ("Actual", "Exercise"):
        raise InvalidInput(f"CAP status {alert.status!r} is not ingested (only Actual and "
                           "Exercise are)", errors=[FieldError("/alert/status", "not ingested")])
    action = _ACTIONS.get(alert.msg_type)
    if action is None:
        raise InvalidInput(f"CAP msgType {alert.msg_type!r} carries no warning",
                           errors=[FieldError("/alert/msgType", "not ingested")])
    if not alert.infos:
        raise InvalidInput("the alert has no info block", errors=[
            FieldError("/alert/info", "at least one info block is needed", "missing")])
    origin = (alert.sender, alert.identifier)
    if action is not WarningAction.ISSUED and alert.references:
        origin = alert.references[0]
    cap_identifier = alert.identifier if _EXTERNAL_ID.fullmatch(alert.identifier) else None

    warnings: list[HazardWarningPayload] = []
    skipped: list[str] = []
    for n, info in enumerate(_choose_language(alert.infos, preferred_languages)):
        where = f"/alert/info[{info.index + 1}]"
        covered = frozenset().union(*(areas(a) for a in info.areas)) if info.areas else frozenset()
        if not covered:
            described = "; ".join(a.desc for a in info.areas) or "no area given"
            skipped.append(f"{where}: no area of the region ({described[:300]})")
            continue
        rule = _kind_rule(info)
        name = _CONTROL.sub(" ", info.event or info.headline or rule.kind)[:200].strip()
        try:
            warnings.append(HazardWarningPayload(
                warning_id=_external_id(*origin, f"/{n}" if n else ""),
                action=action,
                kind=rule.kind,
                name=name or rule.kind,
                hazard=rule.hazard,
                alert_level_equivalent=(
                    rule.level if rule.level is not None
                    else level_from(info.severity, info.urgency)
                ),
                area_ids=tuple(sorted(covered)),
                issued_at=alert.sent,
                expires_at=info.expires,
                source=WarningSource.CAP,
                cap_identifier=cap_identifier,
            ))
        except ValidationError as e:
            errors = [FieldError(f"{where}{err.pointer}", err.message, err.code)
                      for err in field_errors(e)]
            raise InvalidInput(f"{where} cannot become a warning", errors=errors) from None
    if not warnings:
        raise InvalidInput(
            "the alert concerns no area of this region",
            errors=[FieldError(s.split(":", 1)[0], s.split(": ", 1)[1], "outside_region")
                    for s in skipped],
        )
    return MappedAlert(
        client_id=f"{alert.sender},{alert.identifier}",
        exercise=alert.status == "Exercise",
        occurred_at=alert.sent,
        warnings=tuple(warnings),
        skipped=tuple(skipped),
    )


def read_and_map(data: bytes, areas: AreaMatcher, *, limits: CapLimits | None = None,
                 preferred_languages: Sequence[str] = ("ja", "en")
                 ) -> tuple[CapAlert, MappedAlert]:
    """:func:`read_alert` then :func:`map_alert`: the whole CPU-bound part of a CAP input.

    Blocking and pure (the region's areas are read-only): intake runs it in its
    bounded parsing pool, never on the event loop.
    """
    alert = read_alert(data, limits)
    return alert, map_alert(alert, areas, preferred_languages=preferred_languages)
