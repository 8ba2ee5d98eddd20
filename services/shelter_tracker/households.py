"""Occupancy from check-ins: the households a shelter holds, reconciled with typed counts.

Pure, like :mod:`services.shelter_tracker.domain` (which folds the events in):
no I/O, no clock. With ``registered(t)`` the people of the households in at
event time ``t`` (docs/people.md):

- no typed count yet: occupancy = ``registered(now)``;
- after a typed count ``C`` at ``t0``: occupancy = ``C + registered(now) - registered(t0)``,
  never below 0, and unregistered = ``C - registered(t0)`` (null while no household
  has checked in at the shelter: it does not use check-ins).

A household keeps its check-ins and check-outs (*marks*) by event time, so the
answer never depends on the order they arrive in: whether a household is in at
``t`` is read off its newest mark at or before ``t``. A shelter's closing
(``shelter.closed``, stage closed) checks out everyone in at its time, including
households whose check-in arrives after the closing did.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schemas.people import HouseholdCheckedIn, HouseholdCheckedOut, HouseholdNeed
from schemas.shelters import HouseholdNeedCounts

__all__ = [
    "CLOSINGS_KEPT",
    "MARKS_KEPT",
    "Household",
    "HouseholdEvent",
    "Mark",
    "Occupancy",
    "TypedCount",
    "by_code",
    "derive",
    "mark_of",
    "with_closing",
    "with_mark",
]

HouseholdEvent = HouseholdCheckedIn | HouseholdCheckedOut
"""The household events on ``shelters.updates``."""

MARKS_KEPT: Final = 16
"""Marks kept per household: its newest ones by event time. A household checking in
and out more than eight times at one shelter loses its oldest stays, which only a
typed count made during them would still read. Keeping the newest N of all marks
ever seen is the same set whatever order they arrived in."""
CLOSINGS_KEPT: Final = 16
"""Closing times kept per shelter (the newest)."""

# At one instant a check-out follows a check-in, and a closing follows both: a
# household checked in at the very time the shelter closed is out.
_RANK: Final = {"in": 0, "out": 1}


class Mark(BaseModel):
    """One check-in or check-out of a household."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["in", "out"]
    at: datetime
    """Its event time."""
    event_id: UUID
    """The event's id (a redelivery is a duplicate)."""
    size: Annotated[int, Field(ge=1)] = 1
    """People in the household (for a check-in)."""
    needs: tuple[HouseholdNeed, ...] = ()
    """What it needs (for a check-in)."""

    def order(self) -> tuple[datetime, int, str]:
        """The total order of marks: time, then check-in before check-out, then id."""
        return (self.at, _RANK[self.kind], str(self.event_id))


class Household(BaseModel):
    """One household code at one shelter: its newest marks, oldest first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    marks: tuple[Mark, ...] = ()

    def knows(self, event_id: UUID) -> bool:
        """Whether this event was applied already."""
        return any(mark.event_id == event_id for mark in self.marks)

    def stay_at(self, at: datetime | None, closings: Sequence[datetime]) -> Mark | None:
        """The check-in the household is in on at ``at`` (None: now), or None when it is out."""
        latest: Mark | None = None
        for mark in self.marks:  # oldest first
            if at is not None and mark.at > at:
                break
            latest = mark
        if latest is None or latest.kind == "out":
            return None
        if any(latest.at <= closing and (at is None or closing <= at) for closing in closings):
            return None  # the shelter closed since it checked in
        return latest


class TypedCount(BaseModel):
    """The last head count staff typed (``shelter.occupancy_reported``), or a closing's zero."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    occupancy: int
    at: datetime


def mark_of(event: HouseholdEvent) -> Mark:
    """The mark an event leaves on its household."""
    if isinstance(event, HouseholdCheckedIn):
        return Mark(kind="in", at=event.occurred_at, event_id=event.event_id,
                    size=event.payload.size, needs=event.payload.needs)
    return Mark(kind="out", at=event.occurred_at, event_id=event.event_id)


def with_mark(household: Household | None, code: str, mark: Mark) -> Household:
    """The household with ``mark`` added in order (only the newest :data:`MARKS_KEPT` kept)."""
    marks = household.marks if household is not None else ()
    ordered = sorted((*marks, mark), key=Mark.order)
    return Household(code=code, marks=tuple(ordered[-MARKS_KEPT:]))


def with_closing(closings: Sequence[datetime], at: datetime) -> tuple[datetime, ...]:
    """The closing times with ``at`` added (sorted, distinct, the newest kept)."""
    return tuple(sorted({*closings, at})[-CLOSINGS_KEPT:])


@dataclass(frozen=True)
class Occupancy:
    """The check-in fields of a shelter's state, derived from its households and last count."""

    occupancy: int
    registered: int
    registered_households: int
    unregistered: int | None
    household_needs: HouseholdNeedCounts

    def fields(self) -> dict[str, object]:
        """As ``ShelterState`` fields."""
        return {"occupancy": self.occupancy, "registered": self.registered,
                "registered_households": self.registered_households,
                "unregistered": self.unregistered, "household_needs": self.household_needs}


def _registered(households: Iterable[Household], at: datetime | None,
                closings: Sequence[datetime]) -> list[Mark]:
    stays = (household.stay_at(at, closings) for household in households)
    return [stay for stay in stays if stay is not None]


def derive(households: Iterable[Household], count: TypedCount | None,
           closings: Sequence[datetime]) -> Occupancy:
    """Occupancy, registered people and households, unregistered and needs (docs/people.md)."""
    households = tuple(households)
    now = _registered(households, None, closings)
    registered = sum(stay.size for stay in now)
    needs: dict[str, int] = {}
    for stay in now:
        for need in stay.needs:
            needs[need.value] = needs.get(need.value, 0) + 1
    if count is None:
        occupancy, unregistered = registered, None
    else:
        then = sum(stay.size for stay in _registered(households, count.at, closings))
        occupancy = max(0, count.occupancy + registered - then)
        # A shelter where nobody has checked in does not use check-ins: there is
        # nothing to reconcile, and "every counted person unregistered" is noise.
        unregistered = count.occupancy - then if households else None
    return Occupancy(occupancy=occupancy, registered=registered,
                     registered_households=len(now), unregistered=unregistered,
                     household_needs=HouseholdNeedCounts.model_validate(needs))


def by_code(households: Iterable[Household]) -> Mapping[str, Household]:
    """The households by code."""
    return {household.code: household for household in households}
