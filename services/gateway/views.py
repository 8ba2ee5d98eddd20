"""Per-role views of the COP: what HQ, shelter staff, a field team and the public see. Pure.

``view(cop_or_delta, viewer)`` projects the picture (or one change) for a role.
HQ sees everything, exercise events outside a drill included (kind ``exercise``,
each marked), personal fields included. A field team sees everything except
recommendations, exercise entries, at-home counts and supply requests, with
reports, shelters and the welfare-check work list limited to its own areas and
people's names removed; of a work-list item it sees what the visit needs (size,
needs, address, contact), never its notes; of a shelter, never the check-in
counts. Shelter staff see what a field team sees except the work list, plus the
supply requests of their own sites, and the check-in counts (registered,
unregistered, per need) of their own shelters — the token's ``shelters`` claim,
else every site of its areas. The public view is built field by field from
allowlists — orders, shelters' status, area levels, public messages — so
reporter identities, casualties, free text and every people or supplies kind
cannot reach it even if an entity grows a field. Any viewer may also filter by
area.
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
    SHELTER_STAFF = "shelter_staff"
    FIELD = "field"
    PUBLIC = "public"


_TEAM_HIDDEN: Final = frozenset({Kind.RECOMMENDATION, Kind.EXERCISE, Kind.AT_HOME})
_VISIBLE: Final[Mapping[Audience, frozenset[Kind]]] = {
    Audience.HQ: frozenset(Kind),
    Audience.SHELTER_STAFF: frozenset(Kind) - _TEAM_HIDDEN - {Kind.WELFARE},
    Audience.FIELD: frozenset(Kind) - _TEAM_HIDDEN - {Kind.SUPPLY},
    Audience.PUBLIC: frozenset({Kind.META, Kind.AREA, Kind.ORDER, Kind.SHELTER, Kind.MESSAGE}),
}
# A team's own areas bound these kinds; the rest of the picture is ward-wide.
_OWN_AREA_KINDS: Final = frozenset({Kind.REPORT, Kind.SHELTER, Kind.WELFARE, Kind.SUPPLY})
_TEAMS: Final = frozenset({Audience.FIELD, Audience.SHELTER_STAFF})
_CHECK_IN_FIELDS: Final = ("registered", "registered_households", "unregistered",
                           "household_needs")
"""A shelter's counts from check-ins: HQ's and the shelter's own staff's."""
_WELFARE_FIELD_FIELDS: Final = ("household_id", "area_id", "size", "needs", "contact",
                                "address", "via", "reported_at", "status")
"""What a field team needs of a work-list item to make the visit (no notes)."""


@dataclass(frozen=True)
class Viewer:
    """A view: its audience, the areas it asked for, and a field team's own areas."""

    audience: Audience
    areas: frozenset[str] | None = None
    """The client's area filter (``None``: every area)."""
    own_areas: frozenset[str] | None = None
    """For a team: the areas whose reports, shelters and work list it sees."""
    own_sites: frozenset[str] | None = None
    """For shelter staff: the sites they run (``None``: every site of their areas)."""

    def allowed(self, kind: Kind) -> frozenset[str] | None:
        """The areas of ``kind`` this viewer sees (``None``: all)."""
        allowed = self.areas
        if self.audience in _TEAMS and kind in _OWN_AREA_KINDS:
            own = self.own_areas or frozenset()
            allowed = own if allowed is None else allowed & own
        return allowed

    def runs(self, site_id: str | None) -> bool:
        """Whether shelter staff run ``site_id`` (within their areas, checked apart)."""
        return self.audience is Audience.SHELTER_STAFF and (
            self.own_sites is None or site_id in self.own_sites)

    def sees(self, kind: Kind, entity: Entity) -> bool:
        """Whether an entity within the viewer's areas is in its view (its own sites)."""
        if kind is Kind.SUPPLY and self.audience is Audience.SHELTER_STAFF:
            return self.runs(entity.get("site_id"))
        return True


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


def _project(kind: Kind, entity: Entity, viewer: Viewer) -> Entity:
    audience = viewer.audience
    if audience is Audience.HQ:
        return entity
    if audience is Audience.PUBLIC:
        # Built from an allowlist, never by copying and deleting.
        return pick(entity, _PUBLIC_FIELDS[kind])
    if kind is Kind.REPORT:
        return {**entity, "reporter": _without_name(entity["reporter"])}
    if kind is Kind.SHELTER:
        shown = {**entity, "last_reported_by": _without_name(entity.get("last_reported_by"))}
        if not viewer.runs(entity.get("shelter_id")):
            for name in _CHECK_IN_FIELDS:
                shown.pop(name, None)
        return shown
    if kind is Kind.WELFARE:
        last = entity.get("last_check")
        return {**pick(entity, _WELFARE_FIELD_FIELDS),
                "last_check": None if last is None else pick(last, ("outcome", "at"))}
    if kind is Kind.SUPPLY:
        return {**entity, "requested_by": _without_name(entity.get("requested_by"))}
    if kind is Kind.GENERATOR:
        return {**entity, "reported_by": _without_name(entity.get("reported_by"))}
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
    if value is not None and not viewer.sees(delta.kind, value):
        return None  # another site's (which an entity never changes)
    if value is not None and not _in(areas_of(delta.kind, value), allowed):
        value = None  # it left the viewer's areas: remove it there
    return delta.kind, delta.key, None if value is None else _project(delta.kind, value,
                                                                      viewer)


def view_state(cop: COP, viewer: Viewer) -> dict[str, dict[str, Entity]]:
    """Every entity ``viewer`` sees, by kind."""
    out: dict[str, dict[str, Entity]] = {}
    for kind in Kind:
        if kind not in _VISIBLE[viewer.audience]:
            continue
        allowed = viewer.allowed(kind)
        out[kind.value] = {
            key: _project(kind, entity, viewer)
            for key, entity in cop.entities.get(kind, {}).items()
            if _in(areas_of(kind, entity), allowed) and viewer.sees(kind, entity)
        }
    return out


def view(subject: COP | Delta, viewer: Viewer) -> Any:
    """``view_state`` for a picture, ``view_delta`` for a change."""
    if isinstance(subject, COP):
        return view_state(subject, viewer)
    return view_delta(subject, viewer)
