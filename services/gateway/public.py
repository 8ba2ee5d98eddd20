"""The public picture as cacheable documents: per-area snapshots and the shelter list. Pure.

The residents' portal reads the picture over plain HTTP when websockets are
blocked, and a reverse proxy or CDN carries a ward-wide rush on these
documents. So each is a byte string with a strong ETag derived from those bytes
(the same picture always gives the same bytes and the same tag, on every
gateway), and nothing in it changes unless the public picture does: no
position, no clock. A snapshot is exactly the websocket's public view
(:func:`~services.gateway.views.view_state` for the public audience, built from
its allowlists), optionally for up to :data:`MAX_AREAS` areas.

:class:`PublicDocuments` remembers the encoded snapshots of the picture it last
saw (the COP is immutable, so "the same picture" is object identity): a
revalidation costs a dictionary look-up and a string comparison, not a
projection and an encoding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from schemas.region import Region
from services.gateway.cop import COP
from services.gateway.errors import TooManyAreas, UnknownArea
from services.gateway.views import Audience, Viewer, view_state

__all__ = [
    "MAX_AREAS",
    "Document",
    "PublicDocuments",
    "document",
    "etag_matches",
    "public_areas",
    "shelter_list",
    "snapshot_document",
]

MAX_AREAS: Final = 3
"""Areas a resident may follow at once (and so ask for in one snapshot)."""
CACHED_SNAPSHOTS: Final = 128
"""Encoded snapshots kept for one picture (area sets); more start the memo afresh."""


@dataclass(frozen=True, slots=True)
class Document:
    """An encoded JSON document and its strong entity tag."""

    body: bytes
    etag: str


def document(value: Any) -> Document:
    """``value`` as compact UTF-8 JSON with sorted keys, tagged by its SHA-256."""
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                      sort_keys=True).encode("utf-8")
    return Document(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (RFC 9110 weak comparison)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def public_areas(values: Iterable[str], known: Collection[str]) -> frozenset[str] | None:
    """The area filter of a request (``None``: every area); refuses unknown or too many."""
    areas: set[str] = set()
    for value in values:
        areas.update(a for a in (part.strip() for part in value.split(",")) if a)
    unknown = sorted(areas - set(known))
    if unknown:
        raise UnknownArea(f"area: unknown area id(s) {', '.join(unknown)}")
    if len(areas) > MAX_AREAS:
        raise TooManyAreas(f"area: at most {MAX_AREAS} areas, got {len(areas)}")
    return frozenset(areas) or None


def snapshot_document(cop: COP, areas: frozenset[str] | None) -> Document:
    """The public view of ``cop`` (for ``areas``, or ward-wide) as a document."""
    state = view_state(cop, Viewer(Audience.PUBLIC, areas=areas))
    return document({"areas": None if areas is None else sorted(areas), "state": state})


def shelter_list(region: Region) -> Document:
    """Every site of the region pack: names, address, district, position, designations.

    A stranded-commuter facility (kind ``temporary_stay``) carries ``accessible``
    and, as ``hazards``, the hazards after which it opens: the portal lists an open
    one for a point only while an order for one of those hazards is in force there.
    """
    pack = region.pack
    return document({
        "region": pack.id,
        "timezone": pack.timezone,
        "sites": [
            {"id": s.id, "names": s.names.model_dump(), "address": s.address,
             "district_id": s.district_id, "lat": s.lat, "lon": s.lon,
             "kinds": sorted(k.value for k in s.kinds),
             "hazards": sorted(h.value for h in s.hazards), "capacity": s.capacity,
             **({"accessible": s.accessible} if s.is_temporary_stay else {})}
            for s in pack.sites
        ],
    })


@dataclass
class PublicDocuments:
    """Encoded public snapshots of the latest picture, by area set."""

    limit: int = CACHED_SNAPSHOTS
    _cop: COP | None = None
    _documents: dict[frozenset[str] | None, Document] = field(default_factory=dict)

    def snapshot(self, cop: COP, areas: frozenset[str] | None) -> Document:
        """The snapshot document of ``cop`` for ``areas``, encoded once per picture."""
        if cop is not self._cop or len(self._documents) >= self.limit:
            self._cop = cop
            self._documents = {}
        found = self._documents.get(areas)
        if found is None:
            found = self._documents[areas] = snapshot_document(cop, areas)
        return found
