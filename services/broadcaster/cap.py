"""CAP 1.2 alerts for evacuation orders, built with lxml's element API (pure, no I/O).

One alert per order version:

- ``identifier``: :func:`identifier_for` — derived from the region, the order id
  and the version (plus the namespace outside live operations), so a replay
  builds the same document and a drill never reuses a live identifier;
- ``sender``: the pack's ``[cap] sender``; ``sent``: the order event's time, in
  the region's time zone, whole seconds (CAP forbids "Z"; UTC is ``-00:00``);
- ``status``: ``Actual``, or ``Exercise`` for drill traffic (with a ``note``);
- ``msgType``: ``Alert`` (version 1), ``Update`` (a later version), ``Cancel``
  (lifted), with ``references`` "sender,identifier,sent" of the version it
  replaces; ``scope`` ``Public``; ``incidents`` the order id, grouping versions;
- one ``info`` per language (ja-JP, en-US, zh-CN, ko-KR) with the texts of the
  composer, graded from the level by :data:`LEVEL_GRADING` and one ``area`` per
  district (``areaDesc`` in that language, the district polygon, a geocode).

Grading (documented in docs/broadcaster.md):

======  ==========  ========  =========  ==================
level   urgency     severity  certainty  responseType
======  ==========  ========  =========  ==================
3       Expected    Moderate  Possible   Prepare, Evacuate
4       Immediate   Severe    Likely     Evacuate
5       Immediate   Extreme   Observed   Shelter
lifted  Past        Minor     Observed   AllClear
======  ==========  ========  =========  ==================

Polygons: CAP wants "lat,lon" pairs, a closed ring of at least four points. A
district's exterior rings are used (CAP has no holes: leaving a hole in would
warn slightly more area, never less); a ring longer than ``max_points`` is
simplified with an increasing tolerance, which keeps it closed.

:class:`CapValidator` checks a document against ``schemas/cap/CAP-v1.2.xsd``;
the service refuses to publish a document that fails (:class:`CapInvalid`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final
from uuid import UUID
from zoneinfo import ZoneInfo

import shapely
from lxml import etree
from shapely.geometry import Polygon

from schemas.cap import cap_schema
from schemas.hazards import Hazard
from schemas.region import LANGUAGES, Language, Region
from schemas.region.model import MultiPolygonGeometry, PolygonGeometry
from services.broadcaster.errors import CapInvalid
from services.broadcaster.templates import Composed

__all__ = [
    "CAP_CONTENT_TYPE",
    "CAP_LANGUAGES",
    "CAP_NS",
    "HAZARD_CATEGORY",
    "LEVEL_GRADING",
    "LIFTED_GRADING",
    "CapAlert",
    "CapRef",
    "CapValidator",
    "Grading",
    "MsgType",
    "build_alert",
    "cap_time",
    "identifier_for",
    "polygons_for",
    "to_bytes",
]

CAP_NS: Final = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_CONTENT_TYPE: Final = "application/cap+xml"
_C = f"{{{CAP_NS}}}"

CAP_LANGUAGES: Mapping[Language, str] = MappingProxyType(
    {"ja": "ja-JP", "en": "en-US", "zh": "zh-CN", "ko": "ko-KR"}
)
"""RFC 3066 codes of each ``info`` block."""


class MsgType(StrEnum):
    """CAP msgType of an order version."""

    ALERT = "Alert"
    UPDATE = "Update"
    CANCEL = "Cancel"


@dataclass(frozen=True)
class Grading:
    """CAP urgency, severity, certainty and response types for one state of an order."""

    urgency: str
    severity: str
    certainty: str
    response_types: tuple[str, ...]


LEVEL_GRADING: Mapping[int, Grading] = MappingProxyType({
    # Level 3 asks those who need time to leave and everyone else to get ready.
    3: Grading("Expected", "Moderate", "Possible", ("Prepare", "Evacuate")),
    4: Grading("Immediate", "Severe", "Likely", ("Evacuate",)),
    # Level 5 says it may be too late to go anywhere: secure safety where you are.
    5: Grading("Immediate", "Extreme", "Observed", ("Shelter",)),
})
LIFTED_GRADING: Final = Grading("Past", "Minor", "Observed", ("AllClear",))

HAZARD_CATEGORY: Mapping[Hazard, str] = MappingProxyType({
    Hazard.FLOOD: "Met",
    Hazard.INLAND_FLOOD: "Met",
    Hazard.STORM_SURGE: "Met",
    Hazard.LANDSLIDE: "Geo",
    Hazard.EARTHQUAKE: "Geo",
    Hazard.TSUNAMI: "Geo",
    Hazard.LARGE_FIRE: "Fire",
})
"""CAP category of each hazard (an evacuation order is also ``Safety``)."""

_MAX_POLYGON_POINTS: Final = 100


def identifier_for(region_id: str, namespace: str, order_id: UUID, version: int) -> str:
    """The CAP identifier of an order version: stable, unique per sender, URL-safe.

    Outside live operations the namespace is part of it, so a replayed drill of a
    recorded order never collides with the live alert of that order.
    """
    scope = f"{region_id}-{namespace}" if namespace else region_id
    return f"sonae-{scope}-{order_id}-v{version}"


def cap_time(moment: datetime, tz: ZoneInfo) -> str:
    """A CAP dateTime: local to ``tz``, whole seconds, numeric offset (UTC as -00:00)."""
    text = moment.astimezone(tz).replace(microsecond=0).isoformat()
    return text[:-6] + "-00:00" if text.endswith("+00:00") else text


@dataclass(frozen=True)
class CapRef:
    """An earlier alert, as CAP ``references`` names it."""

    sender: str
    identifier: str
    sent: datetime

    def text(self, tz: ZoneInfo) -> str:
        """``sender,identifier,sent``."""
        return f"{self.sender},{self.identifier},{cap_time(self.sent, tz)}"


@dataclass(frozen=True)
class CapAlert:
    """Everything one CAP document says, prepared by the service."""

    identifier: str
    sender: str
    sent: datetime
    exercise: bool
    msg_type: MsgType
    order_id: UUID
    level: int
    hazard: Hazard
    area_ids: tuple[str, ...]
    composed: Composed
    references: tuple[CapRef, ...] = ()
    expires: datetime | None = None
    web: str | None = None
    drill_note: str = ""


def _sub(parent: Any, tag: str, text: str | None = None) -> Any:
    element = etree.SubElement(parent, _C + tag)
    if text is not None:
        element.text = text
    return element


def build_alert(alert: CapAlert, region: Region) -> Any:
    """The ``<alert>`` element of ``alert`` (an lxml element)."""
    if alert.level not in LEVEL_GRADING:
        raise ValueError(f"no CAP grading for alert level {alert.level}")
    tz = ZoneInfo(region.pack.timezone)
    grading = LIFTED_GRADING if alert.msg_type is MsgType.CANCEL else LEVEL_GRADING[alert.level]
    polygons = {a: polygons_for(region.district(a).polygon) for a in alert.area_ids}

    root = etree.Element(_C + "alert", nsmap={None: CAP_NS})
    _sub(root, "identifier", alert.identifier)
    _sub(root, "sender", alert.sender)
    _sub(root, "sent", cap_time(alert.sent, tz))
    _sub(root, "status", "Exercise" if alert.exercise else "Actual")
    _sub(root, "msgType", alert.msg_type.value)
    _sub(root, "scope", "Public")
    if alert.exercise and alert.drill_note:
        _sub(root, "note", alert.drill_note)
    if alert.references:
        _sub(root, "references", " ".join(r.text(tz) for r in alert.references))
    _sub(root, "incidents", str(alert.order_id))
    for lang in LANGUAGES:
        rendered = alert.composed.texts[lang]
        info = _sub(root, "info")
        _sub(info, "language", CAP_LANGUAGES[lang])
        _sub(info, "category", HAZARD_CATEGORY[alert.hazard])
        _sub(info, "category", "Safety")
        _sub(info, "event", rendered.event)
        for response in grading.response_types:
            _sub(info, "responseType", response)
        _sub(info, "urgency", grading.urgency)
        _sub(info, "severity", grading.severity)
        _sub(info, "certainty", grading.certainty)
        code = _sub(info, "eventCode")
        _sub(code, "valueName", "sonae:alert-level")
        _sub(code, "value", str(alert.level))
        if alert.expires is not None:
            _sub(info, "expires", cap_time(alert.expires, tz))
        _sub(info, "senderName", rendered.sender_name)
        _sub(info, "headline", rendered.headline)
        _sub(info, "description", rendered.description)
        _sub(info, "instruction", rendered.instruction)
        if alert.web:
            _sub(info, "web", alert.web)
        for area_id, name in rendered.area_names:
            area = _sub(info, "area")
            _sub(area, "areaDesc", name)
            for ring in polygons[area_id]:
                _sub(area, "polygon", ring)
            geocode = _sub(area, "geocode")
            _sub(geocode, "valueName", "sonae:district")
            _sub(geocode, "value", area_id)
    return root


def to_bytes(element: Any) -> bytes:
    """Serialise an element as a UTF-8 XML document with a declaration."""
    data: bytes = etree.tostring(
        element, xml_declaration=True, encoding="UTF-8", pretty_print=True
    )
    return data


def cancel_expiry(sent: datetime, hours: int) -> datetime:
    """When a Cancel leaves the Atom index (it stays at its URL)."""
    return sent + timedelta(hours=hours)


# --- polygons -----------------------------------------------------------------------------


def polygons_for(
    geometry: PolygonGeometry | MultiPolygonGeometry, *, max_points: int = _MAX_POLYGON_POINTS
) -> tuple[str, ...]:
    """CAP ``polygon`` texts ("lat,lon lat,lon ...", closed) of a district's exterior rings."""
    parts: Sequence[Sequence[Sequence[tuple[float, float]]]]
    if isinstance(geometry, PolygonGeometry):
        parts = (geometry.coordinates,)
    else:
        parts = geometry.coordinates
    return tuple(_ring_text(_simplified(part[0], max_points)) for part in parts)


def _simplified(ring: Sequence[tuple[float, float]], max_points: int) -> list[tuple[float, float]]:
    points = [(float(lon), float(lat)) for lon, lat in ring]
    if len(points) <= max_points:
        return points
    polygon = Polygon(points)
    # Tolerance in degrees; start near a metre and grow until the ring is short enough.
    tolerance = 1e-5
    while True:
        simple = shapely.simplify(polygon, tolerance, preserve_topology=True)
        coords = [(float(x), float(y)) for x, y in simple.exterior.coords]
        if len(coords) <= max_points:
            return coords
        tolerance *= 1.5


def _ring_text(points: Iterable[tuple[float, float]]) -> str:
    pairs: list[str] = []
    for lon, lat in points:
        pair = f"{lat:.6f},{lon:.6f}"
        if not pairs or pairs[-1] != pair:  # rounding can merge neighbours
            pairs.append(pair)
    if pairs[0] != pairs[-1]:
        pairs.append(pairs[0])
    if len(pairs) < 4:
        raise ValueError("a CAP polygon needs at least four points (a closed triangle)")
    return " ".join(pairs)


# --- validation ---------------------------------------------------------------------------


class CapValidator:
    """Validates CAP documents against the OASIS CAP 1.2 schema (loaded once)."""

    def __init__(self) -> None:
        self._schema = cap_schema()

    def check(self, document: bytes | Any) -> None:
        """Raise :class:`CapInvalid` naming the first schema error; return if valid."""
        if isinstance(document, bytes | bytearray):
            parser = etree.XMLParser(resolve_entities=False, no_network=True)
            try:
                element = etree.fromstring(bytes(document), parser)
            except etree.XMLSyntaxError as e:
                raise CapInvalid(f"CAP document is not well-formed XML: {e}") from e
        else:
            element = document
        if not self._schema.validate(element):
            errors = list(self._schema.error_log)
            first = errors[0] if errors else None
            detail = f"line {first.line}: {first.message}" if first is not None else "invalid"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise CapInvalid(f"CAP document fails CAP-v1.2.xsd: {detail}{more}")
