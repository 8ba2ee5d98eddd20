"""After-action report: how fast the drill went from evidence to decision to public message.

For every recommendation the decision service made, the report follows the
links the events carry — the evidence ids in the recommendation, the
``recommendation_id`` of HQ's command, the order version that command caused
(``causation_id``; else the order naming the recommendation), the ``order_id``
and version of each published message — and times each step from the **first
triggering evidence** (the earliest of the recommendation's evidence events;
for a lift, the latest: the all-clear its hysteresis period started from):

    evidence → recommendation → HQ approval → order → first public message per language

Each step is timed twice: in **event time** (``occurred_at``: scenario
minutes, comparable with the original run) and in **wall time** (when the
broker received each record: how long the drill's services and people took).
Chains are grouped per area and hazard. Also: shelter fill curves (from
``shelter.status_changed``), the river gauges, and — when the log carries the
original run's decisions — the same latencies for the original run beside the
drill's.

:func:`build_report` is pure; :func:`collect` reads a namespace's topics and
:func:`collect_from_store` the event store. :func:`write_report` writes
``report.md``, ``report.json`` and ``report.html`` (one self-contained page:
inline SVG, no scripts, no external files).
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import asyncpg
from aiokafka.structs import TopicPartition

from infra.kafka import clients
from infra.kafka.compat import end_offsets
from infra.settings import Settings
from schemas.broadcasts import BroadcastPublished
from schemas.errors import InvalidEvent
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
from schemas.events import Event, decode_event
from schemas.hazards import GaugeReading
from schemas.region import RegionPackError, load_region
from schemas.shelters import ShelterStatusChanged
from schemas.topics import CATALOGUE, qualified
from services.drill.logformat import DrillLog

__all__ = [
    "LANGUAGES",
    "Chain",
    "Comparison",
    "Milestone",
    "Observed",
    "Report",
    "build_report",
    "collect",
    "collect_from_store",
    "render_html",
    "render_markdown",
    "write_report",
]

LANGUAGES: Final = ("ja", "en", "zh", "ko")
"""Languages whose first message is timed (others found are reported too)."""

Order = OrderIssued | OrderUpdated | OrderLifted


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
        for language in sorted(self.messages, key=_language_order):
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


def _language_order(language: str) -> tuple[int, str]:
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


# --- collecting -------------------------------------------------------------------


async def collect(settings: Settings, namespace: str) -> list[Observed]:
    """Every event on the namespace's catalogue topics, with the broker's receive time."""
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        present = await consumer.topics()
        tps = [TopicPartition(qualified(name, namespace), p)
               for name, spec in CATALOGUE.items() if spec.event_types
               and qualified(name, namespace) in present for p in range(spec.partitions)]
        if not tps:
            return []
        ends = await end_offsets(consumer, tps, profile=settings.kafka_profile)
        wanted = {tp: end for tp, end in ends.items() if end > 0}
        if not wanted:
            return []
        consumer.assign(list(wanted))
        await consumer.seek_to_beginning(*wanted)
        out: list[Observed] = []
        while wanted:
            batches = await consumer.getmany(*wanted, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.value is not None:
                        try:
                            event = decode_event(record.value)
                        except InvalidEvent:
                            continue  # the dead-letter topic's business, not the report's
                        wall = datetime.fromtimestamp(record.timestamp / 1000, UTC)
                        out.append(Observed(event, wall))
                if records and records[-1].offset + 1 >= wanted.get(tp, 0):
                    wanted.pop(tp, None)
        return out
    finally:
        await consumer.stop()


async def collect_from_store(database_url: str, namespace: str) -> list[Observed]:
    """Every stored event of ``namespace`` (wall time: when the recorder stored it)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("select envelope::text as envelope, stored_at from events "
                                "where namespace = $1 order by seq", namespace)
    finally:
        await conn.close()
    return [Observed(decode_event(r["envelope"]), r["stored_at"]) for r in rows]


# --- rendering --------------------------------------------------------------------


def _duration(seconds: float | None, *, wall: bool = False) -> str:
    if seconds is None:
        return "–"
    if wall and abs(seconds) < 60:
        return f"{seconds:.2f}s"
    sign = "-" if seconds < 0 else ""
    total = round(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes:02d}m"
    return f"{sign}{minutes}m{secs:02d}s"


def _offset(report: Report, at: datetime | None) -> str:
    if at is None or report.start is None:
        return "–"
    return "T+" + _duration((at - report.start).total_seconds())


class _Names:
    """Display names of areas, shelters and gauges in the region's language."""

    def __init__(self, region: str) -> None:
        self.names: Mapping[str, str] = {}
        self.tz: ZoneInfo = ZoneInfo("UTC")
        self.thresholds: dict[str, dict[str, float]] = {}
        try:
            pack = load_region(region)
        except RegionPackError:
            return
        self.names = pack.names(pack.default_language)
        self.tz = ZoneInfo(pack.pack.timezone)
        self.thresholds = {g.id: g.thresholds.model_dump() for g in pack.gauges}

    def __call__(self, key: str) -> str:
        return ", ".join(f"{self.names.get(part, part)}" for part in key.split(","))

    def clock(self, at: datetime | None) -> str:
        return "–" if at is None else at.astimezone(self.tz).strftime("%m-%d %H:%M:%S")


_STEP_LABELS: Final = {"recommendation": "→ recommendation", "approval": "→ approval",
                       "order": "→ order"}


def _step_label(step: str) -> str:
    if step.startswith("message_"):
        return f"→ message {step.removeprefix('message_')}"
    return _STEP_LABELS[step]


def _step_columns(report: Report) -> list[str]:
    languages = sorted({lang for c in report.chains for lang in c.messages}, key=_language_order)
    return ["recommendation", "approval", "order", *(f"message_{lang}" for lang in languages)]


def render_markdown(report: Report) -> str:
    """The report as Markdown."""
    names = _Names(report.region)
    lines = [f"# After-action report — `{report.namespace}`", ""]
    if report.log is not None:
        lines.append(f"- Log: {report.log.get('description') or '(no description)'} "
                     f"(region {report.log['region']}, recorded from "
                     f"{report.log['recorded_from']['kind']}, "
                     f"{report.log['inputs']} inputs)")
    if report.run is not None:
        run = report.run
        speed = "max speed" if run.get("speed") is None else f"{run['speed']:g}×"
        lines.append(f"- Replay: {speed}, event times `{run.get('time_mode')}`, HQ "
                     f"`{run.get('hq')}`, {run.get('sent')}/{run.get('total')} inputs sent"
                     f"{' (stopped early)' if run.get('stopped') else ''}, "
                     f"{run.get('commands_replayed', 0)} HQ commands replayed, "
                     f"{len(run.get('skipped_commands') or [])} skipped; started "
                     f"{run.get('started_at')}, finished {run.get('finished_at')}")
    lines.append(f"- Start (T+0): {names.clock(report.start)} (event time of the first input, "
                 f"{names.tz.key})")
    lines.append(f"- Generated {report.generated_at.isoformat(timespec='seconds')}")
    lines += ["", "Latencies are from the **first triggering evidence** of each recommendation. "
              "Each cell is *event time* · *wall time*: event time is scenario time (as the "
              "rules and the original run count it), wall time is how long the drill's "
              "services and people took.", ""]
    columns = _step_columns(report)
    lines += ["## Decision latencies per area and hazard", ""]
    if not report.chains:
        lines += ["No recommendation was made.", ""]
    for (area, hazard), chains in report.per_area().items():
        lines += [f"### {names(area)} (`{area}`) — {hazard}", ""]
        header = ["level", "kind", "rule", "evidence", *(_step_label(c) for c in columns),
                  "outcome"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for chain in chains:
            lat = chain.latencies()
            cells = [f"L{chain.level}", chain.kind, f"`{chain.rule_id}`",
                     _offset(report, chain.evidence.at if chain.evidence else None)]
            for column in columns:
                cells.append(f"{_duration(lat['event'].get(column))} · "
                             f"{_duration(lat['wall'].get(column), wall=True)}")
            cells.append(chain.outcome)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Shelters", ""]
    if report.shelters:
        lines += ["| shelter | capacity | peak | peak at | opened | crowded | full | closed |",
                  "|---|---|---|---|---|---|---|---|"]
        for shelter_id, s in report.shelters.items():
            capacity = s["capacity"]
            peak = f"{s['peak']}" + (f" ({100 * s['peak'] / capacity:.0f} %)" if capacity
                                     else "")
            first = s["first"]
            lines.append(f"| {s['name']} (`{shelter_id}`) | {capacity or '–'} | {peak} | "
                         f"{_offset(report, s['peak_at'])} | "
                         f"{_offset(report, first.get('open'))} | "
                         f"{_offset(report, first.get('crowded'))} | "
                         f"{_offset(report, first.get('full'))} | "
                         f"{_offset(report, first.get('closed'))} |")
        lines += ["", "Fill curves: report.html.", ""]
    else:
        lines += ["No shelter state changes (was the shelter tracker running?).", ""]
    lines += _markdown_comparison(report, names)
    skipped = (report.run or {}).get("skipped_commands") or []
    if skipped:
        lines += ["## Recorded HQ commands not replayed", ""]
        lines += [f"- #{s['index']} {s['action']} (`{s['original_id']}`): {s['reason']}"
                  for s in skipped]
        lines.append("")
    lines += ["## Events", "", ", ".join(f"{k} {v}" for k, v in report.counts.items()), ""]
    return "\n".join(lines)


def _markdown_comparison(report: Report, names: _Names) -> list[str]:
    if report.comparison is None:
        return ["## Comparison with the original run", "",
                "The log carries no decisions of an original run.", ""]
    steps = ["recommendation", "approval", "order"]
    steps += sorted({k for c in report.comparison for k in c.original
                     if k.startswith("message_") and c.original[k] is not None},
                    key=lambda k: _language_order(k.removeprefix("message_")))
    lines = ["## Comparison with the original run", "",
             "Event-time latencies from the first evidence: original / drill "
             f"(original: {report.comparison_source}).", "",
             "| area | hazard | level | kind | " + " | ".join(_step_label(s) for s in steps)
             + " | largest Δ |",
             "|" + "---|" * (5 + len(steps))]
    for c in report.comparison:
        deltas = [abs(v) for v in c.delta.values() if v is not None]
        cells = [f"{_duration(c.original.get(s))} / {_duration(c.drill.get(s))}"
                 for s in steps]
        lines.append(f"| {names(c.area_id)} | {c.hazard} | L{c.level} | {c.kind} | "
                     + " | ".join(cells) + f" | {_duration(max(deltas) if deltas else None)} |")
    if report.unmatched_original:
        lines.append("")
        lines.append(f"{report.unmatched_original} decision(s) of the original run have no "
                     "counterpart in the drill.")
    lines.append("")
    return lines


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


# --- HTML -------------------------------------------------------------------------

_W: Final = 960
_LEFT: Final = 190
_RIGHT: Final = 20
_MARKS: Final = {
    "evidence": ("#6b7280", "circle"), "recommendation": ("#2563eb", "triangle"),
    "approval": ("#16a34a", "square"), "order": ("#ea580c", "diamond"),
    "message": ("#9333ea", "tick"),
}


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


class _Axis:
    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.span = max((end - start).total_seconds(), 60.0)

    def x(self, at: datetime) -> float:
        return _LEFT + (_W - _LEFT - _RIGHT) * (at - self.start).total_seconds() / self.span

    def ticks(self, names: _Names) -> str:
        step = 3600 if self.span > 4 * 3600 else 1800 if self.span > 7200 else 600
        out = []
        for i in range(int(self.span // step) + 1):
            at = self.start + timedelta(seconds=i * step)
            x = self.x(at)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="100%" class="grid"/>'
                       f'<text x="{x:.1f}" y="12" class="tick">{_e(names.clock(at)[6:11])}'
                       "</text>")
        return "".join(out)


def _mark(kind: str, x: float, y: float, title: str) -> str:
    color, shape = _MARKS[kind]
    tip = f"<title>{_e(title)}</title>"
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}">{tip}</circle>'
    if shape == "triangle":
        return (f'<polygon points="{x:.1f},{y - 6:.1f} {x - 5:.1f},{y + 4:.1f} {x + 5:.1f},'
                f'{y + 4:.1f}" fill="{color}">{tip}</polygon>')
    if shape == "square":
        return (f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" '
                f'fill="{color}">{tip}</rect>')
    if shape == "diamond":
        return (f'<polygon points="{x:.1f},{y - 6:.1f} {x + 6:.1f},{y:.1f} {x:.1f},'
                f'{y + 6:.1f} {x - 6:.1f},{y:.1f}" fill="{color}">{tip}</polygon>')
    return (f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y - 7:.1f}" y2="{y + 7:.1f}" '
            f'stroke="{color}" stroke-width="2">{tip}</line>')


def _timeline_svg(report: Report, names: _Names, axis: _Axis) -> str:
    groups = report.per_area()
    gauge_h = 120 if report.gauges else 0
    row_h = 26
    height = 24 + gauge_h + row_h * max(1, len(groups)) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
             f'viewBox="0 0 {_W} {height}" role="img" aria-label="timeline">',
             axis.ticks(names)]
    if report.gauges:
        top, bottom = 22, 22 + gauge_h - 10
        levels = [v for points in report.gauges.values() for _, v in points]
        for g, th in names.thresholds.items():
            if g in report.gauges:
                levels += [th.get("evacuation_judgement", 0.0), th.get("flood_danger", 0.0)]
        low, high = min(levels), max(levels)
        span = max(high - low, 0.1)

        def gy(v: float) -> float:
            return bottom - (bottom - top) * (v - low) / span

        for g, points in report.gauges.items():
            pts = " ".join(f"{axis.x(t):.1f},{gy(v):.1f}" for t, v in points)
            parts.append(f'<polyline points="{pts}" fill="none" stroke="#0ea5e9" '
                         f'stroke-width="2"><title>{_e(names(g))}</title></polyline>')
            for label, key in (("避難判断水位", "evacuation_judgement"),
                               ("氾濫危険水位", "flood_danger")):
                value = names.thresholds.get(g, {}).get(key)
                if value is not None:
                    y = gy(value)
                    parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" '
                                 f'y2="{y:.1f}" class="threshold"/><text x="{_LEFT - 4}" '
                                 f'y="{y + 4:.1f}" class="label">{_e(label)} {value:g} m</text>')
        parts.append(f'<text x="4" y="{top + 12}" class="label-left">'
                     f'{_e(" / ".join(names(g) for g in report.gauges))}</text>')
    y = 24 + gauge_h
    for (area, hazard), chains in groups.items():
        mid = y + row_h / 2
        parts.append(f'<text x="4" y="{mid + 4:.1f}" class="label-left">{_e(names(area))} · '
                     f"{_e(hazard)}</text>")
        parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{mid:.1f}" y2="{mid:.1f}" '
                     'class="row"/>')
        for chain in chains:
            what = f"L{chain.level} {chain.kind} ({chain.rule_id})"
            if chain.evidence is not None:
                parts.append(_mark("evidence", axis.x(chain.evidence.at), mid,
                                   f"{what}: first evidence {names.clock(chain.evidence.at)}"))
            for step, milestone in chain.steps().items():
                if milestone is None:
                    continue
                kind = "message" if step.startswith("message_") else step
                parts.append(_mark(kind, axis.x(milestone.at), mid,
                                   f"{what}: {step} {names.clock(milestone.at)}"))
            parts.append(f'<text x="{axis.x(chain.recommended.at) + 4:.1f}" '
                         f'y="{mid - 7:.1f}" class="level">L{chain.level}'
                         f'{"↓" if chain.kind == "lift" else ""}</text>')
        y += row_h
    parts.append("</svg>")
    return "".join(parts)


def _shelters_svg(report: Report, names: _Names, axis: _Axis) -> str:
    height = 200
    top, bottom = 20, height - 20
    colours = ["#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#be123c", "#65a30d"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
             f'viewBox="0 0 {_W} {height}" role="img" aria-label="shelter fill">',
             axis.ticks(names)]
    for pct in (0, 50, 80, 100):
        y = bottom - (bottom - top) * min(pct, 110) / 110
        parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'class="threshold"/><text x="{_LEFT - 4}" y="{y + 4:.1f}" '
                     f'class="label">{pct} %</text>')
    for i, s in enumerate(report.shelters.values()):
        colour = colours[i % len(colours)]
        capacity = s["capacity"] or max(p["occupancy"] for p in s["points"]) or 1
        pts = []
        for p in s["points"]:
            pct = 100 * p["occupancy"] / capacity
            pts.append(f"{axis.x(p['at']):.1f},{bottom - (bottom - top) * min(pct, 110) / 110:.1f}")
        parts.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{colour}" '
                     f'stroke-width="2"><title>{_e(s["name"])}</title></polyline>')
        # Inline style: the class's fill would win over a presentation attribute.
        parts.append(f'<text x="4" y="{top + 14 * (i + 1)}" class="label-left" '
                     f'style="fill:{colour}">■ {_e(s["name"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS: Final = """
body{font-family:"Noto Sans CJK JP","Hiragino Sans",system-ui,sans-serif;margin:24px;color:#111}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em} h3{font-size:1em}
table{border-collapse:collapse;margin:8px 0 16px} td,th{border:1px solid #ccc;padding:3px 7px;
font-size:.85em;text-align:left} th{background:#f3f4f6}
.grid{stroke:#eee} .row{stroke:#ddd} .threshold{stroke:#fca5a5;stroke-dasharray:4 3}
.tick{font-size:10px;fill:#666;text-anchor:middle} .label{font-size:10px;fill:#b91c1c;
text-anchor:end} .label-left{font-size:11px;fill:#333} .level{font-size:10px;fill:#1e3a8a}
.legend span{margin-right:14px;font-size:.85em} .drill{background:#fef3c7;padding:4px 8px}
"""


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (inline SVG timeline, no scripts)."""
    names = _Names(report.region)
    times = [m.at for c in report.chains for m in (c.evidence, *c.steps().values())
             if m is not None]
    times += [t for points in report.gauges.values() for t, _ in points]
    times += [p["at"] for s in report.shelters.values() for p in s["points"]]
    body: list[str] = [f"<h1>After-action report — {_e(report.namespace)}</h1>",
                       '<p class="drill">訓練 / DRILL — exercise data only</p>']
    full_markdown = render_markdown(report)
    markdown = full_markdown.split("\n## ", 1)[0].splitlines()[2:]
    body.append("<ul>" + "".join(f"<li>{_e(line.removeprefix('- ').replace('`', ''))}</li>"
                                 for line in markdown if line.startswith("- ")) + "</ul>")
    if times:
        axis = _Axis(min(times), max(times))
        legend = "".join(f'<span style="color:{c}">■ {_e(k)}</span>'
                         for k, (c, _) in _MARKS.items())
        body += ["<h2>Timeline (event time)</h2>", f'<p class="legend">{legend}</p>',
                 _timeline_svg(report, names, axis)]
        if report.shelters:
            body += ["<h2>Shelter fill (occupancy / capacity)</h2>",
                     _shelters_svg(report, names, axis)]
    columns = _step_columns(report)
    body.append("<h2>Decision latencies per area and hazard</h2>"
                "<p>From the first triggering evidence; event time · wall time.</p>")
    for (area, hazard), chains in report.per_area().items():
        body.append(f"<h3>{_e(names(area))} ({_e(area)}) — {_e(hazard)}</h3><table><tr>"
                    + "".join(f"<th>{_e(h)}</th>" for h in
                              ["level", "kind", "rule", "evidence",
                               *(_step_label(c) for c in columns), "outcome"]) + "</tr>")
        for chain in chains:
            lat = chain.latencies()
            cells = [f"L{chain.level}", chain.kind, chain.rule_id,
                     _offset(report, chain.evidence.at if chain.evidence else None)]
            cells += [f"{_duration(lat['event'].get(c))} · "
                      f"{_duration(lat['wall'].get(c), wall=True)}" for c in columns]
            cells.append(chain.outcome)
            body.append("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in cells) + "</tr>")
        body.append("</table>")
    rest = "\n## Shelters" + full_markdown.split("\n## Shelters", 1)[-1] \
        if "\n## Shelters" in full_markdown else ""
    body.append(_markdown_tables_html(rest))
    return ("<!doctype html>\n<html lang=\"ja\"><head><meta charset=\"utf-8\">"
            f"<title>After-action report {_e(report.namespace)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _markdown_tables_html(markdown: str) -> str:
    """The Markdown sections after the latency tables, as simple HTML."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *rows = table
            out.append("<table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>"
                                 for row in rows) + "</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                table.append(cells)
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{_e(line[3:])}</h2>")
        elif line.startswith("- "):
            out.append(f"<p>• {_e(line[2:])}</p>")
        elif line.strip():
            out.append(f"<p>{_e(line.replace('**', ''))}</p>")
    flush()
    return "\n".join(out)


def write_report(report: Report, directory: Path) -> dict[str, Path]:
    """Write report.md, report.json and report.html into ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"md": directory / "report.md", "json": directory / "report.json",
             "html": directory / "report.html"}
    paths["md"].write_text(render_markdown(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report_document(report), ensure_ascii=False, indent=2)
                             + "\n", encoding="utf-8")
    paths["html"].write_text(render_html(report), encoding="utf-8")
    return paths
