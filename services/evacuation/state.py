"""The decision state: plain frozen models the engine folds events into.

One :class:`DecisionState` holds the whole ward: what each gauge, warning, quake
and shelter last said, the recent reports, the per-(area, hazard) cells with
their order and pending recommendation, and every recommendation and order still
kept. The engine never mutates it; it returns a new one.

For the faust table the state is stored as many small entries
(:func:`flatten`), so that an event writes only the entries it changed to the
changelog instead of the whole state.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Final
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from schemas.evacuation import RecommendationKind
from schemas.hazards import Hazard, Shindo, WarningOrigin, WarningSource
from schemas.reports import ReportCategory
from schemas.shelters import ShelterStatus

__all__ = [
    "CellState",
    "CommandSeen",
    "DecisionState",
    "GaugeState",
    "OrderState",
    "QuakeArea",
    "QuakeState",
    "Reading",
    "RecommendationState",
    "RecommendationStatus",
    "ReportEntry",
    "ShelterView",
    "WarningState",
    "cell_key",
    "changes",
    "encode_entry",
    "flatten",
    "unflatten",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reading(_Frozen):
    """One gauge reading, as kept."""

    event_id: UUID
    level_m: float
    observed_at: datetime


class GaugeState(_Frozen):
    """What a gauge last said, and where it stands against the lifting threshold."""

    last: Reading
    clear_since: datetime | None = None
    """Time of the first reading below the rules' ``lift_below`` threshold since the
    last one at or above it; null while at or above it (or after a silence)."""
    stale: bool = False
    """Silent for longer than its reporting period allows: its level is not used."""


class WarningState(_Frozen):
    """The latest version of a warning."""

    warning_id: str
    sender: str | None = None
    """Whose warning it is (``hazard.warning``'s ``sender``); warnings are kept per sender."""
    kind: str
    name: str
    hazard: Hazard | None
    level_equivalent: int
    source: WarningSource
    area_ids: tuple[str, ...]
    """Areas it covers now (known areas only)."""
    ended_areas: dict[str, datetime] = {}
    """Areas it covered once and no longer does, with the time it stopped."""
    issued_at: datetime
    expires_at: datetime | None
    cancelled_at: datetime | None = None
    updated_at: datetime
    """Event time of the latest message about it (orders its updates)."""
    event_id: UUID
    """The latest message about it."""
    event_ids: tuple[UUID, ...]
    """Every message about it (evidence), oldest first."""
    origin: WarningOrigin | None = None
    """The authority's message of the latest version (JMA: title, report time, office)."""


class QuakeArea(_Frozen):
    """The highest intensity reported for one area in one quake."""

    shindo: Shindo
    event_id: UUID


class QuakeState(_Frozen):
    """One earthquake's intensities."""

    quake_id: str
    at: datetime
    """Event time of its first report."""
    magnitude: float | None
    epicentre: str | None
    areas: dict[str, QuakeArea]
    withdrawn_at: datetime | None = None
    """Event time of its withdrawal (a JMA 取消): from then on it is a cleared condition."""
    withdrawal_event_id: UUID | None = None


class ReportEntry(_Frozen):
    """An accepted report that a rule may count."""

    report_id: UUID
    event_id: UUID
    area_id: str
    category: ReportCategory
    severity: int
    at: datetime


class ShelterView(_Frozen):
    """Our own view of a site from ``shelter.status_changed`` (latest version)."""

    shelter_id: str
    version: int
    status: ShelterStatus
    occupancy: int
    capacity: int | None


class RecommendationStatus(StrEnum):
    """Where a recommendation stands."""

    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"
    WITHDRAWN = "withdrawn"


class RecommendationState(_Frozen):
    """A recommendation and its outcome."""

    recommendation_id: UUID
    kind: RecommendationKind
    area_id: str
    hazard: Hazard
    level: int
    order_id: UUID | None
    rule_id: str
    suggested_shelter_ids: tuple[str, ...]
    shelters_to_open: tuple[str, ...]
    status: RecommendationStatus
    created_at: datetime
    closed_at: datetime | None = None
    decided_by: UUID | None = None
    """The command that approved or rejected it."""


class OrderState(_Frozen):
    """The latest version of an order (one area, one hazard)."""

    order_id: UUID
    area_id: str
    hazard: Hazard
    level: int
    version: int
    designated_shelter_ids: tuple[str, ...]
    issued_by: str
    approved_at: datetime
    automatic: bool
    recommendation_id: UUID | None
    lifted: bool = False
    closed_at: datetime | None = None
    last_command_id: UUID | None = None
    """The command behind the latest version (recognises a redelivered command)."""


class CellState(_Frozen):
    """One (area, hazard): its order, its pending recommendation, its episode."""

    order_id: UUID | None = None
    """The active order, if any."""
    open_recommendation_id: UUID | None = None
    recommended_level: int = 0
    """Highest level recommended (or ordered) in the current episode; a new issue or
    raise is recommended only above it. Reset when the conditions clear."""
    lift_recommended: bool = False
    """A lift was recommended in the current clear spell (approved or not)."""
    liftable_at: datetime | None = None
    """When the cell's conditions, last seen all clear, allow a lift: remembered so
    that a lift can still be recommended after their sources were forgotten."""


class CommandSeen(_Frozen):
    """An HQ command already handled (carried out or refused)."""

    at: datetime


class DecisionState(_Frozen):
    """Everything the decision engine remembers."""

    watermark: datetime | None = None
    """The latest event time seen: the engine's only clock."""
    gauges: dict[str, GaugeState] = {}
    warnings: dict[str, WarningState] = {}
    quakes: dict[str, QuakeState] = {}
    reports: dict[str, ReportEntry] = {}
    shelters: dict[str, ShelterView] = {}
    cells: dict[str, CellState] = {}
    recommendations: dict[str, RecommendationState] = {}
    orders: dict[str, OrderState] = {}
    commands: dict[str, CommandSeen] = {}
    """Commands handled, by event id: a redelivered command is recognised and ignored."""


def cell_key(area_id: str, hazard: Hazard) -> str:
    """The key of an (area, hazard) cell."""
    return f"{area_id}:{hazard.value}"


# --- storage as small entries ------------------------------------------------

_META: Final = "meta"
_MAPS: Final[Mapping[str, type[_Frozen]]] = {
    "gauges": GaugeState,
    "warnings": WarningState,
    "quakes": QuakeState,
    "reports": ReportEntry,
    "shelters": ShelterView,
    "cells": CellState,
    "recommendations": RecommendationState,
    "orders": OrderState,
    "commands": CommandSeen,
}


def flatten(state: DecisionState) -> dict[str, BaseModel | datetime | None]:
    """The state as ``{entry key: value}``; ``meta`` holds the watermark."""
    out: dict[str, BaseModel | datetime | None] = {_META: state.watermark}
    for field in _MAPS:
        mapping: dict[str, BaseModel] = getattr(state, field)
        for key, value in mapping.items():
            out[f"{field}/{key}"] = value
    return out


def encode_entry(value: BaseModel | datetime | None) -> Any:
    """A flattened value as JSON-compatible data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return None if value is None else value.isoformat()


def unflatten(entries: Mapping[str, Any]) -> DecisionState:
    """Rebuild the state from stored entries (JSON data, as :func:`encode_entry` made)."""
    maps: dict[str, dict[str, BaseModel]] = {field: {} for field in _MAPS}
    watermark: datetime | None = None
    for key, data in entries.items():
        if key == _META:
            watermark = None if data is None else datetime.fromisoformat(data)
            continue
        field, _, name = key.partition("/")
        model = _MAPS.get(field)
        if model is None or not name:
            raise ValueError(f"unknown state entry {key!r}")
        maps[field][name] = model.model_validate(data)
    return DecisionState.model_validate({"watermark": watermark, **maps})


def changes(
    before: DecisionState, after: DecisionState
) -> tuple[dict[str, BaseModel | datetime | None], tuple[str, ...]]:
    """Entries that differ between two states: (written, deleted keys)."""
    old, new = flatten(before), flatten(after)
    written = {k: v for k, v in new.items() if k not in old or (old[k] is not v and old[k] != v)}
    deleted = tuple(k for k in old if k not in new)
    return written, deleted
