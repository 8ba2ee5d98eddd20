"""The working copy of one engine step: the state it changes and the events it emits.

:class:`Run` copies the top-level maps of the :class:`DecisionState` it starts
from, so the input state is never touched; the parts of the engine change the
copy and emit through :meth:`Run.emit`, which stamps every output with the
input's event time and ids derived from the input (:func:`eid`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final
from uuid import UUID

from schemas.envelope import Envelope, derive_id, new_event
from schemas.events import Event
from schemas.hazards import Hazard
from services.evacuation.config import EngineConfig
from services.evacuation.state import CellState, DecisionState, RecommendationState, cell_key

__all__ = ["RATIONALE_LIMIT", "REASON_LIMIT", "SOURCE", "Run", "eid"]

SOURCE: Final = "evacuation-decision"
"""The ``source`` of every event the engine emits."""
RATIONALE_LIMIT: Final = 2000
"""Characters kept of a rationale or data-quality message."""
REASON_LIMIT: Final = 1000
"""Characters kept of a reason (closing, lifting, refusing)."""


def eid(*parts: str | UUID | int) -> UUID:
    """The id of an emitted event, derived from what it is about (deterministic)."""
    return derive_id(SOURCE, *parts)


class Run:
    """The working copy for one event; the input state is never touched."""

    def __init__(self, config: EngineConfig, state: DecisionState, event: Event) -> None:
        self.config = config
        self.event = event
        self.now: datetime = (event.occurred_at if state.watermark is None
                              else max(state.watermark, event.occurred_at))
        self.gauges = dict(state.gauges)
        self.warnings = dict(state.warnings)
        self.quakes = dict(state.quakes)
        self.reports = dict(state.reports)
        self.shelters = dict(state.shelters)
        self.cells = dict(state.cells)
        self.recs = dict(state.recommendations)
        self.orders = dict(state.orders)
        self.commands = dict(state.commands)
        self.out: list[Event] = []

    def result(self) -> tuple[DecisionState, tuple[Event, ...]]:
        """The new state and the events emitted, in order."""
        # Every part was built from validated models: no need to validate it all again.
        state = DecisionState.model_construct(
            watermark=self.now, gauges=self.gauges, warnings=self.warnings, quakes=self.quakes,
            reports=self.reports, shelters=self.shelters, cells=self.cells,
            recommendations=self.recs, orders=self.orders, commands=self.commands,
        )
        return state, tuple(self.out)

    def emit(self, cls: type[Envelope], payload: dict[str, Any], *, event_id: UUID) -> None:
        """Emit an event caused by the input, at the input's event time."""
        made = new_event(cls, payload, occurred_at=self.event.occurred_at, source=SOURCE,
                         cause=self.event, event_id=event_id,
                         recorded_at=self.event.recorded_at)
        self.out.append(made)  # type: ignore[arg-type]  # every cls passed is in the union

    def cell(self, area_id: str, hazard: Hazard) -> CellState:
        """The (area, hazard) cell as it stands (idle if never touched)."""
        return self.cells.get(cell_key(area_id, hazard)) or CellState()

    def set_cell(self, area_id: str, hazard: Hazard, cell: CellState) -> None:
        """Replace the (area, hazard) cell."""
        key = cell_key(area_id, hazard)
        if cell == CellState():
            self.cells.pop(key, None)  # an idle cell is not worth remembering
        else:
            self.cells[key] = cell

    def open_recommendation(self, cell: CellState) -> RecommendationState | None:
        """The cell's recommendation awaiting HQ, if any."""
        if cell.open_recommendation_id is None:
            return None
        return self.recs[str(cell.open_recommendation_id)]
