"""The after-action report's model, built purely from the events a drill produced.

For every recommendation the decision service made, :func:`build_chains`
follows the links the events carry — the evidence ids in the recommendation,
the ``recommendation_id`` of HQ's command, the order version that command
caused (``causation_id``; else the order naming the recommendation), the
``order_id`` and version of each published message — and times each step from
the **first triggering evidence** (the earliest of the recommendation's
evidence events; for a lift, the latest: the all-clear its hysteresis period
started from):

    evidence → recommendation → HQ approval → order → first public message per language

Each step is timed twice: in **event time** (``occurred_at``: scenario
minutes, comparable with the original run) and in **wall time** (when the
broker received each record: how long the drill's services and people took).
:func:`build_report` adds the shelter fill curves (from
``shelter.status_changed``), the river gauges and — when the log carries the
original run's decisions — the same latencies for the original run beside the
drill's (:func:`compare`). :func:`report_document` is the report as JSON.

No I/O here: :mod:`.collect` reads the events, :mod:`.markdown` and
:mod:`.html` render the report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from schemas.broadcasts import BroadcastPublished
from schemas.evacuation import (
    CommandAction,
    CommandRejected,
    EvacuationCommand,
    EvacuationRecommended,
    OrderIssued,
    OrderLifted,
    OrderUpdated,
    RecommendationClosed,
)
from schemas.events import Event
from schemas.hazards import GaugeReading
from schemas.shelters import ShelterStatusChanged
from services.drill.logformat import DrillLog

__all__ = [
    "LANGUAGES",
    "Chain",
    "Comparison",
    "Milestone",
    "Observed",
    "Report",
    "build_chains",
    "build_report",
    "compare",
    "language_order",
    "report_document",
]

LANGUAGES: Final = ("ja", "en", "zh", "ko")
"""Languages whose first message is timed (others found are reported too)."""



@dataclass(frozen=True)
class Observed:
    """An event as the report sees it: with the wall time it reached the broker, if known."""

    event: Event
    wall: datetime | None = None


@dataclass(frozen=True)
class Milestone:
    """One step of a chain: its event time, wall time and event."""

    at: datetime
    wall: datetime | None
    event_id: str


@dataclass
class Chain:
    """One recommendation, from its first evidence to its first public messages."""

    area_id: str
    hazard: str
    level: int
    kind: str
    rule_id: str
    recommendation_id: str
    recommended: Milestone
    evidence: Milestone | None = None
    approved: Milestone | None = None
    approved_by: str | None = None
    order: Milestone | None = None
    order_id: str | None = None
    order_version: int | None = None
    messages: dict[str, Milestone] = field(default_factory=dict)
    outcome: str = "open"
    """approved, rejected, superseded, withdrawn, automatic, or open (undecided)."""

    def steps(self) -> dict[str, Milestone | None]:
        """The timed steps in order (``message_<lang>`` for each language)."""
        out: dict[str, Milestone | None] = {"recommendation": self.recommended,
                                            "approval": self.approved, "order": self.order}
        for language in sorted(self.messages, key=language_order):
            out[f"message_{language}"] = self.messages[language]
        return out

    def latencies(self) -> dict[str, dict[str, float | None]]:
        """Seconds from the first evidence to each step, in event time and wall time."""
        event: dict[str, float | None] = {}
        wall: dict[str, float | None] = {}
        for name, step in self.steps().items():
            start = self.evidence
            event[name] = None if step is None or start is None \
                else (step.at - start.at).total_seconds()
            wall[name] = None if step is None or start is None or step.wall is None \
                or start.wall is None else (step.wall - start.wall).total_seconds()
        return {"event": event, "wall": wall}


@dataclass(frozen=True)
class Comparison:
    """One drill chain beside the original run's chain for the same decision."""

    area_id: str
    hazard: str
    level: int
    kind: str
    drill: dict[str, float | None]
    original: dict[str, float | None]
    original_at: datetime
    """Event time of the original recommendation (orders the comparison)."""

    @property
    def delta(self) -> dict[str, float | None]:
        """Drill minus original, per step (event time, seconds)."""
        out: dict[str, float | None] = {}
        for step, mine in self.drill.items():
            theirs = self.original.get(step)
            out[step] = None if mine is None or theirs is None else mine - theirs
        return out


@dataclass
class Report:
    """Everything the after-action report says."""

    namespace: str
    region: str
    generated_at: datetime
    start: datetime | None
    """Event time of the first input: the origin of every ``T+`` in the report."""
    chains: list[Chain]
    shelters: dict[str, dict[str, Any]]
    gauges: dict[str, list[tuple[datetime, float]]]
    comparison: list[Comparison] | None
    comparison_source: str
    log: dict[str, Any] | None
    run: dict[str, Any] | None
    unmatched_original: int = 0
    """Original decisions with no counterpart in the drill."""
    counts: dict[str, int] = field(default_factory=dict)

    def per_area(self) -> dict[tuple[str, str], list[Chain]]:
        """Chains grouped by (area, hazard), in event-time order."""
        groups: dict[tuple[str, str], list[Chain]] = defaultdict(list)
        for chain in self.chains:
            groups[(chain.area_id, chain.hazard)].append(chain)
        return dict(sorted(groups.items()))


def language_order(language: str) -> tuple[int, str]:
    """Sort key: the timed languages in their order, then any other alphabetically."""
    return (LANGUAGES.index(language) if language in LANGUAGES else len(LANGUAGES), language)



# --- building ---------------------------------------------------------------------


def _milestone(observed: Observed) -> Milestone:
    return Milestone(observed.event.occurred_at, observed.wall, str(observed.event.event_id))


def _first(items: Iterable[Observed]) -> Observed | None:
    ordered = sorted(items, key=lambda o: (o.event.occurred_at, o.wall or o.event.occurred_at))
    return ordered[0] if ordered else None


def build_chains(observed: Sequence[Observed]) -> list[Chain]:
    """Every recommendation's chain, in event-time order."""
    by_id: dict[str, Observed] = {}
    for item in observed:
        by_id.setdefault(str(item.event.event_id), item)  # at-least-once: first copy wins
    events = list(by_id.values())
    refused = {str(o.event.payload.command_event_id) for o in events
               if isinstance(o.event, CommandRejected)}
    approvals: dict[str, list[Observed]] = defaultdict(list)
    for o in events:
        e = o.event
        if isinstance(e, EvacuationCommand) and e.payload.action is CommandAction.APPROVE \
                and str(e.event_id) not in refused and e.payload.recommendation_id is not None:
            approvals[str(e.payload.recommendation_id)].append(o)
    closed: dict[str, RecommendationClosed] = {}
    for o in events:
        if isinstance(o.event, RecommendationClosed):
            closed.setdefault(str(o.event.payload.recommendation_id), o.event)
    orders_by_cause: dict[str, list[Observed]] = defaultdict(list)
    orders_by_rec: dict[str, list[Observed]] = defaultdict(list)
    for o in events:
        if isinstance(o.event, OrderIssued | OrderUpdated | OrderLifted):
            if o.event.causation_id is not None:
                orders_by_cause[str(o.event.causation_id)].append(o)
            if o.event.payload.recommendation_id is not None:
                orders_by_rec[str(o.event.payload.recommendation_id)].append(o)
    messages: dict[tuple[str, int], dict[str, list[Observed]]] = defaultdict(
        lambda: defaultdict(list))
    for o in events:
        e = o.event
        if isinstance(e, BroadcastPublished) and e.payload.order_id is not None:
            messages[(str(e.payload.order_id), e.payload.version)][e.payload.language].append(o)
    chains = []
    for o in events:
        rec = o.event
        if not isinstance(rec, EvacuationRecommended):
            continue
        p = rec.payload
        rec_id = str(p.recommendation_id)
        chain = Chain(area_id=",".join(p.area_ids), hazard=p.hazard.value, level=p.level,
                      kind=p.kind.value, rule_id=p.rule_id, recommendation_id=rec_id,
                      recommended=_milestone(o))
        found = sorted((by_id[str(e)] for e in p.evidence_event_ids if str(e) in by_id),
                       key=lambda o: o.event.occurred_at)
        if found:
            # An issue or raise is triggered by its first evidence; a lift by its last (the
            # all-clear that started the hysteresis period).
            chain.evidence = _milestone(found[-1] if p.kind.value == "lift" else found[0])
        approval = _first(approvals.get(rec_id, ()))
        order = None
        if approval is not None:
            assert isinstance(approval.event, EvacuationCommand)
            chain.approved = _milestone(approval)
            chain.approved_by = approval.event.payload.operator
            chain.outcome = "approved"
            # The order version the approval produced (a lift names the order's original
            # recommendation, not the lift's, so the command is the link).
            order = _first(orders_by_cause.get(str(approval.event.event_id), ()))
        if order is None:
            order = _first(orders_by_rec.get(rec_id, ()))
        if order is not None:
            assert isinstance(order.event, OrderIssued | OrderUpdated | OrderLifted)
            chain.order = _milestone(order)
            chain.order_id = str(order.event.payload.order_id)
            chain.order_version = order.event.payload.version
            if order.event.payload.automatic:
                chain.outcome = "automatic"
            for language, found in messages.get((chain.order_id, chain.order_version),
                                                 {}).items():
                first = _first(found)
                if first is not None:
                    chain.messages[language] = _milestone(first)
        if chain.outcome == "open" and rec_id in closed:
            chain.outcome = closed[rec_id].payload.outcome.value
        chains.append(chain)
    chains.sort(key=lambda c: (c.recommended.at, c.area_id, c.hazard, c.level))
    return chains


def _shelters(observed: Sequence[Observed]) -> dict[str, dict[str, Any]]:
    states: dict[str, dict[int, ShelterStatusChanged]] = defaultdict(dict)
    for o in observed:
        if isinstance(o.event, ShelterStatusChanged):
            states[o.event.payload.shelter_id].setdefault(o.event.payload.version, o.event)
    out: dict[str, dict[str, Any]] = {}
    for shelter_id, versions in sorted(states.items()):
        curve = [versions[v] for v in sorted(versions)]
        points = [{"at": e.occurred_at, "occupancy": e.payload.occupancy,
                   "capacity": e.payload.capacity, "status": e.payload.status.value}
                  for e in curve]
        firsts: dict[str, datetime] = {}
        for e in curve:
            firsts.setdefault(e.payload.status.value, e.occurred_at)
        peak = max(curve, key=lambda e: e.payload.occupancy)
        out[shelter_id] = {
            "name": curve[-1].payload.name, "capacity": curve[-1].payload.capacity,
            "peak": peak.payload.occupancy, "peak_at": peak.occurred_at,
            "first": firsts, "points": points,
        }
    return out


def _gauges(observed: Sequence[Observed]) -> dict[str, list[tuple[datetime, float]]]:
    out: dict[str, dict[str, tuple[datetime, float]]] = defaultdict(dict)
    for o in observed:
        if isinstance(o.event, GaugeReading):
            out[o.event.payload.gauge_id][str(o.event.event_id)] = (
                o.event.payload.observed_at, o.event.payload.level_m)
    return {g: sorted(points.values()) for g, points in sorted(out.items())}


def compare(drill: Sequence[Chain], original: Sequence[Chain]) -> tuple[list[Comparison], int]:
    """Pair each drill chain with the original's for the same decision (area, hazard, level,
    kind, in order of occurrence); return the pairs and how many originals found none."""
    def keyed(chains: Sequence[Chain]) -> dict[tuple[str, str, int, str], list[Chain]]:
        out: dict[tuple[str, str, int, str], list[Chain]] = defaultdict(list)
        for c in chains:
            out[(c.area_id, c.hazard, c.level, c.kind)].append(c)
        return out

    ours, theirs = keyed(drill), keyed(original)
    pairs: list[Comparison] = []
    unmatched = 0
    for key, originals in sorted(theirs.items()):
        mine = ours.get(key, [])
        unmatched += max(0, len(originals) - len(mine))
        for d, o in zip(mine, originals, strict=False):
            pairs.append(Comparison(*key, drill=d.latencies()["event"],
                                    original=o.latencies()["event"],
                                    original_at=o.recommended.at))
    pairs.sort(key=lambda c: (c.area_id, c.hazard, c.original_at))
    return pairs, unmatched


def build_report(observed: Sequence[Observed], *, namespace: str, region: str,
                 log: DrillLog | None = None, run: Mapping[str, Any] | None = None,
                 generated_at: datetime | None = None) -> Report:
    """The after-action report over a namespace's events (and the log it replayed)."""
    chains = build_chains(observed)
    inputs = [o.event.occurred_at for o in observed
              if o.event.type in ("hazard.gauge_reading", "hazard.warning",
                                  "hazard.seismic_intensity", "report.accepted",
                                  "report.submitted", "shelter.opened",
                                  "shelter.occupancy_reported")]
    comparison: list[Comparison] | None = None
    source = ""
    unmatched = 0
    if log is not None and log.references:
        original_observed = [Observed(e) for e in (*log.inputs, *log.references)]
        comparison, unmatched = compare(chains, build_chains(original_observed))
        source = ("the original run, recorded from the event store"
                  if log.header.recorded_from.kind == "event-store"
                  else "the reference run written with the scenario")
    counts: dict[str, int] = defaultdict(int)
    for o in {str(o.event.event_id): o for o in observed}.values():
        counts[o.event.type] += 1
    return Report(
        namespace=namespace, region=region,
        generated_at=generated_at if generated_at is not None else datetime.now(UTC),
        start=min(inputs) if inputs else (chains[0].recommended.at if chains else None),
        chains=chains, shelters=_shelters(observed), gauges=_gauges(observed),
        comparison=comparison, comparison_source=source,
        log=log.header.model_dump(mode="json") if log is not None else None,
        run=dict(run) if run is not None else None, unmatched_original=unmatched,
        counts=dict(sorted(counts.items())),
    )



# --- the JSON document -----------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def report_document(report: Report) -> dict[str, Any]:
    """The report as a JSON document."""
    per_area = []
    for (area, hazard), chains in report.per_area().items():
        per_area.append({"area_id": area, "hazard": hazard, "chains": [
            {**asdict(c), "latencies_seconds": c.latencies()} for c in chains]})
    document: dict[str, Any] = _jsonable({
        "format": "sonae-drill-report", "version": 1,
        "namespace": report.namespace, "region": report.region,
        "generated_at": report.generated_at, "start": report.start,
        "log": report.log, "run": report.run,
        "per_area": per_area,
        "shelters": report.shelters,
        "gauges": {g: [{"at": t, "level_m": v} for t, v in points]
                   for g, points in report.gauges.items()},
        "comparison": None if report.comparison is None else {
            "source": report.comparison_source,
            "unmatched_original": report.unmatched_original,
            "pairs": [{**asdict(c), "delta": c.delta} for c in report.comparison]},
        "counts": report.counts,
    })
    return document
