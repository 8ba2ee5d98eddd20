"""People and supplies in the picture: the entities the reducer derives for them. Pure.

The reducer (:mod:`services.gateway.reducer`) keeps, per aggregate, the winning
event of each part under a total order (a household's latest report and latest
welfare check, a request's steps, a generator's registration and latest status)
and calls these functions to turn those parts into entities. Each is a function
of the parts alone, never of the order they arrived in, so the reducer's
order-independence contract holds for these kinds too:

- :func:`at_home_entity`: per area, the households sheltering at home, their
  people and the households per need (a household a welfare check found
  ``moved_to_shelter`` after its report is no longer at home);
- :func:`welfare_entity`: an item of HQ's welfare-check work list, while the
  household's latest report asks for a check and no check after it found the
  household safe or moved;
- :func:`supply_entity`: a request folded with :func:`schemas.supplies.next_status`
  over its steps in lifecycle order (a step the table refuses is skipped, so a
  duplicate or a stale step never moves the status);
- :func:`generator_entity`: a registration and its latest state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from schemas.errors import SupplyTransitionRefused
from schemas.people import AtHomeNeed, WelfareCheckOutcome
from schemas.supplies import STEP_EVENTS, SupplyRequestStatus, next_status
from services.gateway.cop import Entity, Rank

__all__ = [
    "STEPS_KEPT",
    "at_home_entity",
    "generator_entity",
    "step_key",
    "supply_entity",
    "welfare_entity",
]

STEPS_KEPT: Final = 12
"""Steps kept per supply request (a valid history has at most four)."""

# A request only moves forward, so its steps fold in lifecycle order, which no clock
# skew between the clients that took them can reorder.
_LIFECYCLE: Final = {
    SupplyRequestStatus.ASSIGNED: 1,
    SupplyRequestStatus.DISPATCHED: 2,
    SupplyRequestStatus.CANCELLED: 2,
    SupplyRequestStatus.RECEIVED: 3,
}
_CLOSED_BY: Final = frozenset({WelfareCheckOutcome.SAFE.value,
                               WelfareCheckOutcome.MOVED_TO_SHELTER.value})


def _after(check: tuple[Rank, Entity] | None, report: tuple[Rank, Entity]) -> Entity | None:
    """The check if it was made after the report (else it answered an earlier one)."""
    if check is None or check[0] < report[0]:
        return None
    return check[1]


def at_home_entity(area: str, households: Iterable[tuple[str, tuple[Rank, Entity]]],
                   checks: Mapping[str, tuple[Rank, Entity]]) -> Entity | None:
    """The at-home counts of ``area`` (``None`` when no household there is at home)."""
    count = people = pending = 0
    needs = dict.fromkeys((n.value for n in AtHomeNeed), 0)
    for household_id, report in households:
        body = report[1]
        if body["area_id"] != area:
            continue
        check = _after(checks.get(household_id), report)
        if check is not None and check["outcome"] == WelfareCheckOutcome.MOVED_TO_SHELTER.value:
            continue
        count += 1
        people += body["size"]
        for need in body["needs"]:
            needs[need] += 1
        if welfare_entity(report, checks.get(household_id)) is not None:
            pending += 1
    if not count:
        return None
    return {"area_id": area, "households": count, "people": people, "needs": needs,
            "welfare_pending": pending}


def welfare_entity(report: tuple[Rank, Entity],
                   check: tuple[Rank, Entity] | None) -> Entity | None:
    """The work-list item of a household's latest report (``None``: not on the list)."""
    body = report[1]
    if AtHomeNeed.WELFARE_CHECK.value not in body["needs"]:
        return None
    last = _after(check, report)
    if last is not None and last["outcome"] in _CLOSED_BY:
        return None
    return {**body, "status": "pending" if last is None else last["outcome"],
            "last_check": last}


def step_key(event_type: str, rank: Rank) -> Rank:
    """The fold order of a supply request's step: lifecycle stage, then its rank."""
    return (_LIFECYCLE[STEP_EVENTS[event_type]], *rank)


def supply_entity(request: Entity, steps: Iterable[tuple[Rank, Entity]]) -> Entity:
    """A request and its steps, folded with ``next_status`` (refused steps skipped)."""
    status: SupplyRequestStatus = next_status(None, "supply.requested")
    taken: list[dict[str, Any]] = []
    assignee = None
    for _, step in steps:
        try:
            status = next_status(status, step["type"])
        except SupplyTransitionRefused:
            continue  # a step another reader would refuse too (e.g. received twice)
        if step["assignee"] is not None:
            assignee = step["assignee"]
        taken.append({"status": status.value, "at": step["at"], "by": step["by"],
                      "note": step["note"], "assignee": step["assignee"]})
    return {**request, "status": status.value, "assignee": assignee, "steps": taken,
            "updated_at": taken[-1]["at"] if taken else request["requested_at"]}


def generator_entity(registration: Entity, status: Entity | None) -> Entity:
    """A registered generator with its latest state (``state`` null: never reported)."""
    reported = status or {}
    return {**registration,
            "state": reported.get("state"),
            "fuel_hours_left": reported.get("fuel_hours_left"),
            "reported_by": reported.get("reported_by"),
            "reported_at": reported.get("reported_at"),
            "note": reported.get("note", "")}
