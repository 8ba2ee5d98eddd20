"""Which shelters a recommendation names: open ones with room, else ones to open.

Only sites the region pack designates for the hazard are ever considered
(:attr:`~services.evacuation.config.EngineConfig.nearby` is built from the
designations), so a site is never suggested for a hazard it is not designated
for. Availability comes from the service's own view of ``shelter.status_changed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from schemas.hazards import Hazard
from schemas.shelters import ShelterStatus
from services.evacuation import text
from services.evacuation.config import EngineConfig
from services.evacuation.state import ShelterView

__all__ = ["ShelterChoice", "choose_shelters", "designated_for"]

_RECEIVING = frozenset({ShelterStatus.OPEN, ShelterStatus.CROWDED})
# A closing site is being given up (often because of the hazard itself) and a
# full one has no room: neither is proposed for opening.
_CAN_OPEN = frozenset({ShelterStatus.CLOSED, ShelterStatus.OPENING})


@dataclass(frozen=True)
class ShelterChoice:
    """The shelters for one recommendation, and the sentence that explains them."""

    suggested: tuple[str, ...]
    to_open: tuple[str, ...]
    text: str


def designated_for(config: EngineConfig, site_id: str, hazard: Hazard) -> bool:
    """Whether the pack designates ``site_id`` for ``hazard``."""
    site = config.sites.get(site_id)
    return site is not None and hazard in site.hazards


def choose_shelters(
    config: EngineConfig, shelters: Mapping[str, ShelterView], area_id: str, hazard: Hazard
) -> ShelterChoice:
    """Open designated sites with free capacity in or near the area; if none, sites to open."""
    limit = config.rules.shelters.max_suggestions
    near = int(config.rules.shelters.near_metres)
    area_name = config.area_names_ja[area_id]
    label = text.hazard(hazard)
    candidates = config.nearby.get((area_id, hazard), ())
    receiving: list[str] = []
    clauses: list[str] = []
    for site_id, distance in candidates:
        view = shelters.get(site_id)
        if view is None or view.status not in _RECEIVING:
            continue
        site = config.sites[site_id]
        capacity = view.capacity if view.capacity is not None else site.capacity
        free = capacity - view.occupancy
        if free <= 0:
            continue
        receiving.append(site_id)
        where = _where(config, area_id, site_id, distance)
        clauses.append(f"{site.name_ja}（{where}、空き{free}人）")
        if len(receiving) == limit:
            break
    if receiving:
        return ShelterChoice(tuple(receiving), (),
                             f"受け入れ可能な{label}の指定緊急避難場所：{'、'.join(clauses)}。")
    if not candidates:
        return ShelterChoice((), (),
                             f"{area_name}とその周辺（{near}m以内）に{label}の指定緊急避難場所が"
                             "ありません。区域外の避難先を検討してください。")
    to_open: list[str] = []
    names: list[str] = []
    for site_id, distance in candidates:
        view = shelters.get(site_id)
        if view is not None and view.status not in _CAN_OPEN:
            continue
        site = config.sites[site_id]
        state = "準備中" if view is not None and view.status is ShelterStatus.OPENING else "未開設"
        to_open.append(site_id)
        names.append(f"{site.name_ja}（{_where(config, area_id, site_id, distance)}、{state}）")
        if len(to_open) == limit:
            break
    if not to_open:
        return ShelterChoice((), (),
                             f"{area_name}とその周辺（{near}m以内）の{label}の指定緊急避難場所は"
                             "満員または閉鎖中です。区域外の避難先を検討してください。")
    return ShelterChoice((), tuple(to_open),
                         f"{area_name}とその周辺（{near}m以内）に受け入れ可能な{label}の"
                         f"指定緊急避難場所がないため、開設を推奨：{'、'.join(names)}。")


def _where(config: EngineConfig, area_id: str, site_id: str, distance: float) -> str:
    site = config.sites[site_id]
    if site.area_id == area_id:
        return "地区内"
    return f"{config.area_names_ja[site.area_id]}、約{int(round(distance, -1))}m"
