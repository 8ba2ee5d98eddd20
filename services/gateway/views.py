"""Per-role views of the COP: what HQ, a field team and the public may see. Pure.

``view(cop_or_delta, viewer)`` projects the picture (or one change) for a role.
HQ sees everything, exercise events outside a drill included (kind ``exercise``,
each marked). A field team sees everything except recommendations and those, with
reports and shelters limited to its own areas and people's names removed
(personal data is HQ only). The public view is built field by field from
allowlists — orders, shelters' status, area levels, public messages — so
reporter identities, casualties and free text cannot reach it even if an entity
grows a field. Any viewer may also filter by area.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from services.gateway.cop import COP, Delta, Entity, Kind, areas_of, pick

__all__ = ["Audience", "Viewer", "view", "view_delta", "view_state"]


class Audience(StrEnum):
    """Who a view is for."""

    HQ = "hq"
    FIELD = "field"
    PUBLIC = "public"


_VISIBLE: Final[Mapping[Audience, frozenset[Kind]]] = {
    Audience.HQ: frozenset(Kind),
    Audience.FIELD: frozenset(Kind) - {Kind.RECOMMENDATION, Kind.EXERCISE},
    Audience.PUBLIC: frozenset({Kind.META, Kind.AREA, Kind.ORDER, Kind.SHELTER, Kind.MESSAGE}),
}
# A field team's own areas bound these kinds; the rest of the picture is ward-wide.
_OWN_AREA_KINDS: Final = frozenset({Kind.REPORT, Kind.SHELTER})


@dataclass(frozen=True)
class Viewer:
    """A view: its audience, the areas it asked for, and a field team's own areas."""

    audience: Audience
    areas: frozenset[str] | None = None
    """The client's area filter (``None``: every area)."""
    own_areas: frozenset[str] | None = None
    """For a field team: the areas whose reports and shelters it sees."""

    def allowed(self, kind: Kind) -> frozenset[str] | None:
        """The areas of ``kind`` this viewer sees (``None``: all)."""
        allowed = self.areas
        if self.audience is Audience.FIELD and kind in _OWN_AREA_KINDS:
            own = self.own_areas or frozenset()
            allowed = own if allowed is None else allowed & own
        return allowed


def _without_name(reporter: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if reporter is None else {"team": reporter["team"]}


_PUBLIC_FIELDS: Final[Mapping[Kind, tuple[str, ...]]] = {
    Kind.META: ("exercise",),
    Kind.AREA: ("area_id", "level", "order_ids", "shelters_open"),
    Kind.ORDER: ("order_id", "version", "status", "level", "hazard", "area_ids",
                 "designated_shelter_ids", "approved_at", "changed_at"),
    Kind.SHELTER: ("shelter_id", "name", "status", "area_id", "hazards"),
    Kind.MESSAGE: ("message_id", "version", "kind", "order_id", "shelter_id", "area_ids",
                   "level", "hazard", "texts", "published_at", "requested_at"),
}


def _project(kind: Kind, entity: Entity, audience: Audience) -> Entity:
    if audience is Audience.HQ:
        return entity
    if audience is Audience.PUBLIC:
        # Built from an allowlist, never by copying and deleting.
        return pick(entity, _PUBLIC_FIELDS[kind])
    if kind is Kind.REPORT:
        return {**entity, "reporter": _without_name(entity["reporter"])}
    if kind is Kind.SHELTER:
        return {**entity, "last_reported_by": _without_name(entity.get("last_reported_by"))}
    if kind is Kind.MESSAGE:
        return pick(entity, _PUBLIC_FIELDS[kind])
    return entity


def _in(areas: frozenset[str] | None, allowed: frozenset[str] | None) -> bool:
    return allowed is None or areas is None or bool(areas & allowed)


def view_delta(delta: Delta, viewer: Viewer) -> tuple[Kind, str, Entity | None] | None:
    """The change ``viewer`` sees, or None when it concerns nothing in its view."""
    if delta.kind not in _VISIBLE[viewer.audience]:
        return None
    allowed = viewer.allowed(delta.kind)
    if not _in(delta.areas, allowed):
        return None
    value = delta.value
    if value is not None and not _in(areas_of(delta.kind, value), allowed):
        value = None  # it left the viewer's areas: remove it there
    return delta.kind, delta.key, None if value is None else _project(delta.kind, value,
                                                                      viewer.audience)


def view_state(cop: COP, viewer: Viewer) -> dict[str, dict[str, Entity]]:
    """Every entity ``viewer`` sees, by kind."""
    out: dict[str, dict[str, Entity]] = {}
    for kind in Kind:
        if kind not in _VISIBLE[viewer.audience]:
            continue
        allowed = viewer.allowed(kind)
        out[kind.value] = {
            key: _project(kind, entity, viewer.audience)
            for key, entity in cop.entities.get(kind, {}).items()
            if _in(areas_of(kind, entity), allowed)
        }
    return out


def view(subject: COP | Delta, viewer: Viewer) -> Any:
    """``view_state`` for a picture, ``view_delta`` for a change."""
    if isinstance(subject, COP):
        return view_state(subject, viewer)
    return view_delta(subject, viewer)
