"""The shelter tracker's area aggregates: every shelter of a district folded into one summary.

Pure, like :mod:`services.shelter_tracker.domain`: :func:`decide_area` folds a
shelter's published state (``shelter.status_changed``) into the area's tracked
shelters and emits a ``shelter.area_summary`` when the summary changes; event
ids are derived from the input's, so a replay yields the same events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.envelope import derive_id, new_event
from schemas.shelters import (
    AreaHazardCapacity,
    AreaStatusCounts,
    ShelterAreaSummary,
    ShelterAreaSummaryPayload,
    ShelterStatus,
    ShelterStatusChanged,
)
from services.shelter_tracker.domain import ADMITTING, HAZARD_ORDER, SOURCE, ShelterSite
from services.shelter_tracker.errors import ShelterNotRegistered

__all__ = ["AreaDecision", "AreaShelter", "AreaTracked", "decide_area", "summarize_area"]


class AreaShelter(BaseModel):
    """What an area summary needs of one shelter's published state."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int
    status: ShelterStatus
    capacity: int | None
    occupancy: int


class AreaTracked(BaseModel):
    """What the tracker keeps per area (its table value)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shelters: dict[str, AreaShelter] = Field(default_factory=dict)
    """The latest state of each of the area's shelters that has been reported."""
    summary: ShelterAreaSummaryPayload | None = None
    """The last published summary; None before the first."""

    def to_bytes(self) -> bytes:
        """JSON for the table."""
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> AreaTracked:
        """The table value back (an empty area for None)."""
        return cls() if raw is None else cls.model_validate_json(raw)


@dataclass(frozen=True)
class AreaDecision:
    """The result of folding one shelter state into its area."""

    tracked: AreaTracked
    emit: ShelterAreaSummary | None
    """The new summary to publish, if it changed."""
    reason: str = ""
    """Why nothing was published."""


def summarize_area(
    area_id: str,
    version: int,
    sites: Sequence[ShelterSite],
    shelters: Mapping[str, AreaShelter],
) -> ShelterAreaSummaryPayload:
    """The summary of an area's shelters; those never reported count as closed."""
    counts = dict.fromkeys(ShelterStatus, 0)
    capacity = occupancy = free = shelters_open = 0
    per_hazard = {hazard: [0, 0] for site in sites for hazard in site.hazards}
    for site in sites:
        entry = shelters.get(site.shelter_id)
        status = entry.status if entry is not None else ShelterStatus.CLOSED
        counts[status] += 1
        if entry is None:
            continue
        occupancy += entry.occupancy
        if status not in ADMITTING:
            continue
        shelters_open += 1
        capacity += entry.capacity or 0
        # A full shelter admits no one even if hysteresis leaves a few places.
        room = 0 if status is ShelterStatus.FULL \
            else max(0, (entry.capacity or 0) - entry.occupancy)
        free += room
        for hazard in site.hazards:
            per_hazard[hazard][0] += 1
            per_hazard[hazard][1] += room
    return ShelterAreaSummaryPayload(
        area_id=area_id, version=version,
        shelters=AreaStatusCounts(**{status.value: n for status, n in counts.items()}),
        shelters_open=shelters_open, capacity=capacity, occupancy=occupancy, free_capacity=free,
        by_hazard=tuple(
            AreaHazardCapacity(hazard=hazard, shelters_open=n, free_capacity=room)
            for hazard, (n, room) in sorted(per_hazard.items(),
                                            key=lambda item: HAZARD_ORDER[item[0]])
        ),
    )


def decide_area(
    tracked: AreaTracked,
    change: ShelterStatusChanged,
    sites: Sequence[ShelterSite],
    *,
    recorded_at: datetime,
) -> AreaDecision:
    """Fold one shelter's new state into its area; publish a summary if it changed."""
    state = change.payload
    if state.shelter_id not in {site.shelter_id for site in sites}:
        raise ShelterNotRegistered(f"shelter {state.shelter_id!r} is not in this area")
    known = tracked.shelters.get(state.shelter_id)
    if known is not None and known.version >= state.version:
        # At-least-once delivery and restarts replay states: keep the highest.
        return AreaDecision(tracked, None, reason=f"version {state.version} of "
                            f"{state.shelter_id} is not newer than {known.version}")
    entry = AreaShelter(version=state.version, status=state.status, capacity=state.capacity,
                        occupancy=state.occupancy)
    shelters = {**tracked.shelters, state.shelter_id: entry}
    area_id = sites[0].area_id
    previous = tracked.summary
    version = previous.version + 1 if previous is not None else 1
    summary = summarize_area(area_id, version, sites, shelters)
    if previous is not None and summary.model_dump(exclude={"version"}) == \
            previous.model_dump(exclude={"version"}):
        # Needs, power or a repeat count change the shelter but not the area.
        return AreaDecision(tracked.model_copy(update={"shelters": shelters}), None,
                            reason="the area's figures did not change")
    event = new_event(
        ShelterAreaSummary, summary, occurred_at=change.occurred_at, source=SOURCE, cause=change,
        event_id=derive_id(SOURCE, change.event_id, "area_summary"), recorded_at=recorded_at,
    )
    return AreaDecision(AreaTracked(shelters=shelters, summary=summary), event)
