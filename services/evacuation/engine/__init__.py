"""The evacuation decision engine: ``(DecisionState, Event) -> (DecisionState, events)``.

Pure: no I/O, no clock, no randomness. The only clock is the *watermark*, the
latest event time seen; every id is derived from the input (``derive_id``), and
every output carries the input's ``occurred_at`` and ``recorded_at``, so the same
input sequence always yields the same state and the same output events, byte
for byte. The faust app (``services.evacuation.app``) feeds it one event at a
time from a single ordered log.

Exercise inputs count only when the engine decides for a drill namespace
(``EngineConfig.drill``); in live they are ignored.

Per event:

1. fold the event into the state (gauge, warning, quake, report, shelter), or
   carry out / refuse an HQ command;
2. mark gauges silent for too long as stale (``hazard.data_quality``);
3. evaluate every (area, hazard) cell: recommend issuing or raising an order
   when the rules call for a level above what is ordered or already recommended
   in this episode; withdraw pending recommendations whose conditions cleared;
   recommend lifting once every condition has been clear for its period;
4. forget closed things older than the retention period.

Orders are per (area, hazard): a recommendation is for one area, and a manual
order for several areas is one order per area, so each area's level can be
raised and lifted on its own evidence.

The parts, in that order: :mod:`.run` (the working copy of one step and how it
emits), :mod:`.observations` (step 1's folds), :mod:`.commands` (step 1's HQ
commands), :mod:`.quality` (step 2), :mod:`.evaluation` (step 3: thresholds and
the hysteresis of lifting), :mod:`.recommendations` (a recommendation opened
and closed), :mod:`.orders` (orders issued, raised, lifted), :mod:`.retention`
(step 4).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from schemas.evacuation import EvacuationCommand
from schemas.events import Event
from schemas.hazards import GaugeReading, HazardWarning, SeismicIntensity
from schemas.reports import ReportAccepted
from schemas.shelters import ShelterStatusChanged
from services.evacuation.config import EngineConfig
from services.evacuation.engine import commands, observations
from services.evacuation.engine.evaluation import evaluate
from services.evacuation.engine.quality import check_stale
from services.evacuation.engine.retention import prune
from services.evacuation.engine.run import SOURCE, Run
from services.evacuation.state import CommandSeen, DecisionState

__all__ = ["INPUT_TYPES", "SOURCE", "replay", "step"]

INPUT_TYPES: Final = frozenset({
    GaugeReading.EVENT_TYPE,
    HazardWarning.EVENT_TYPE,
    SeismicIntensity.EVENT_TYPE,
    ReportAccepted.EVENT_TYPE,
    ShelterStatusChanged.EVENT_TYPE,
    EvacuationCommand.EVENT_TYPE,
})
"""The event types the engine reads; any other event leaves the state unchanged."""


def step(
    config: EngineConfig, state: DecisionState, event: Event
) -> tuple[DecisionState, tuple[Event, ...]]:
    """Fold one event into the state; return the new state and the events to emit.

    An ``exercise`` input outside a drill (``config.drill`` false) leaves the state
    unchanged, watermark included: exercise traffic in the live namespace never
    drives a live decision.
    """
    if event.type not in INPUT_TYPES or (event.exercise and not config.drill):
        return state, ()
    run = Run(config, state, event)
    _apply(run)
    return run.result()


def replay(
    config: EngineConfig, events: Iterable[Event], state: DecisionState | None = None
) -> tuple[DecisionState, tuple[Event, ...]]:
    """Fold a sequence of events; return the final state and every emitted event in order."""
    current = state if state is not None else DecisionState()
    emitted: list[Event] = []
    for event in events:
        current, out = step(config, current, event)
        emitted.extend(out)
    return current, tuple(emitted)


def _apply(run: Run) -> None:
    e = run.event
    if isinstance(e, GaugeReading):
        observations.gauge_reading(run, e)
    elif isinstance(e, HazardWarning):
        observations.warning(run, e)
    elif isinstance(e, SeismicIntensity):
        observations.seismic(run, e)
    elif isinstance(e, ReportAccepted):
        observations.report(run, e)
    elif isinstance(e, ShelterStatusChanged):
        observations.shelter(run, e)
    elif isinstance(e, EvacuationCommand):
        if str(e.event_id) in run.commands:
            return  # redelivered: it was carried out (or refused) the first time
        run.commands[str(e.event_id)] = CommandSeen(at=e.occurred_at)
        commands.handle(run, e)
    check_stale(run)
    evaluate(run)
    prune(run)
