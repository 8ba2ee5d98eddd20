"""Folding observations into the working copy: gauges, warnings, quakes, reports, shelters.

Each fold is idempotent and order-independent where the input allows it: the
newest reading of a gauge counts, a warning's updates apply in event time, the
highest intensity reported for an area counts, a report is kept once, the
tracker's highest shelter version wins.

Warnings and quakes are keyed by their sender and id (:func:`sender_key`): an
update or cancellation applies only to the warning its own sender issued, so a
feed cannot cancel JMA's warning by reusing its id (intake binds the sender to
the token; an HQ override is sent under the original sender, with
``overridden_by`` naming HQ).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from schemas.hazards import (
    DataQualityStatus,
    GaugeReading,
    HazardWarning,
    SeismicIntensity,
    WarningAction,
    sender_key,
)
from schemas.reports import ReportAccepted
from schemas.shelters import ShelterStatusChanged
from services.evacuation import text
from services.evacuation.engine.quality import data_quality
from services.evacuation.engine.run import Run
from services.evacuation.state import (
    GaugeState,
    QuakeArea,
    QuakeState,
    Reading,
    ReportEntry,
    ShelterView,
    WarningState,
)

__all__ = ["gauge_reading", "report", "report_horizon", "seismic", "shelter",
           "warning"]

_MAX_EVENT_IDS_PER_WARNING: Final = 50


def gauge_reading(run: Run, e: GaugeReading) -> None:
    """Keep a gauge's newest reading, its clear spell, and say when it is back."""
    p = e.payload
    info = run.config.gauges.get(p.gauge_id)
    if info is None:
        return  # not a gauge of this region's rules
    old = run.gauges.get(p.gauge_id)
    if old is not None and (p.observed_at, str(e.event_id)) <= (
        old.last.observed_at, str(old.last.event_id)
    ):
        return  # a duplicate, or older than what we have: the newest reading counts
    clear_since: datetime | None = None
    river = run.config.rules.river
    if river is not None and p.level_m < info.thresholds[river.lift_below]:
        keep = old is not None and not old.stale and old.clear_since is not None
        # After a silence the clear spell starts again: a silent gauge proved nothing.
        clear_since = old.clear_since if keep and old is not None else p.observed_at
    if old is not None and old.stale:
        gap = p.observed_at - old.last.observed_at
        data_quality(run, p.gauge_id, DataQualityStatus.RESTORED, old, gap,
                     f"{info.name_ja}の水位データが復旧しました（途絶 "
                     f"{text.duration(gap)}、最新 {text.metres(p.level_m)}）。")
    run.gauges[p.gauge_id] = GaugeState(
        last=Reading(event_id=e.event_id, level_m=p.level_m, observed_at=p.observed_at),
        clear_since=clear_since,
    )


def warning(run: Run, e: HazardWarning) -> None:
    """Apply a warning's issue, update or cancellation (in event time), per sender."""
    p = e.payload
    key = sender_key(p.sender, p.warning_id)
    old = run.warnings.get(key)
    if old is not None and (e.occurred_at, str(e.event_id)) <= (
        old.updated_at, str(old.event_id)
    ):
        return  # duplicate or out of date: updates of one warning apply in event time
    cancelled = p.action is WarningAction.CANCELLED
    areas = tuple(a for a in p.area_ids if a in run.config.area_names_ja)
    ended = dict(old.ended_areas) if old is not None else {}
    if cancelled:
        areas = tuple(dict.fromkeys((*(old.area_ids if old else ()), *areas)))
    elif old is not None:
        for area in old.area_ids:
            if area not in areas:
                ended[area] = e.occurred_at
    for area in areas:
        ended.pop(area, None)
    run.warnings[key] = WarningState(
        warning_id=p.warning_id, sender=p.sender, kind=p.kind, name=p.name, hazard=p.hazard,
        level_equivalent=p.alert_level_equivalent, source=p.source, area_ids=areas,
        # The first issue time is the one people refer to ("issued at 09:10").
        ended_areas=ended, issued_at=min(old.issued_at, p.issued_at) if old else p.issued_at,
        expires_at=p.expires_at,
        cancelled_at=e.occurred_at if cancelled else None, updated_at=e.occurred_at,
        event_id=e.event_id,
        event_ids=((*(old.event_ids if old else ()), e.event_id))[-_MAX_EVENT_IDS_PER_WARNING:],
        origin=p.origin,
    )


def seismic(run: Run, e: SeismicIntensity) -> None:
    """Keep each area's highest intensity of a quake; a withdrawal forgets the quake."""
    p = e.payload
    key = sender_key(p.sender, p.quake_id)
    old = run.quakes.get(key)
    if old is not None and old.withdrawn_at is not None:
        return  # withdrawn for good: a late copy of an earlier report changes nothing
    if p.withdrawn:
        # The issuer took back what it said (a JMA 取消): the quake stays as a condition
        # that cleared at the withdrawal, so a pending recommendation it alone justified
        # is withdrawn and an order it justified is proposed for lifting, as for a
        # cancelled warning. A withdrawal of a quake never seen has nothing to clear.
        if old is not None:
            run.quakes[key] = old.model_copy(update={"withdrawn_at": e.occurred_at,
                                                     "withdrawal_event_id": e.event_id})
        return
    areas = dict(old.areas) if old is not None else {}
    changed = old is None
    for item in p.intensities:
        if item.area_id not in run.config.area_names_ja:
            continue
        known = areas.get(item.area_id)
        # The highest intensity reported for an area counts, whatever the order
        # of the updates: it is the conservative reading and order-independent.
        if known is None or item.shindo.rank > known.shindo.rank:
            areas[item.area_id] = QuakeArea(shindo=item.shindo, event_id=e.event_id)
            changed = True
    if not changed:
        return
    run.quakes[key] = QuakeState(
        quake_id=p.quake_id,
        at=e.occurred_at if old is None else min(old.at, e.occurred_at),
        magnitude=p.magnitude if p.magnitude is not None else (old.magnitude if old else None),
        epicentre=p.epicentre if p.epicentre is not None else (old.epicentre if old else None),
        areas=areas,
    )


def report_horizon(run: Run) -> timedelta:
    """How far back an accepted report can still change a decision."""
    # A report is kept while its rule can still change a decision (its window and
    # the lift period after it) and, beyond that, for the state retention period,
    # so that a lift is still judged on its evidence after a quiet spell.
    rules = run.config.rules
    minutes = [r.window_minutes + r.lift_after_minutes for r in rules.report_clusters]
    if rules.river is not None and rules.river.flooding_observed is not None:
        minutes.append(rules.river.flooding_observed.window_minutes
                       + rules.river.lift_after_minutes)
    return max(timedelta(minutes=max(minutes, default=0)),
               timedelta(hours=rules.state.keep_closed_hours))


def _counts(run: Run, e: ReportAccepted) -> bool:
    report = e.payload.report
    rules = run.config.rules
    if any(r.category is report.category and report.severity >= r.min_severity
           for r in rules.report_clusters):
        return True
    observed = rules.river.flooding_observed if rules.river is not None else None
    return (observed is not None and observed.category is report.category
            and report.severity >= observed.min_severity)


def report(run: Run, e: ReportAccepted) -> None:
    """Keep an accepted report that a cluster rule counts."""
    p = e.payload
    if p.area_id is None or p.area_id not in run.config.area_names_ja or not _counts(run, e):
        return
    key = str(p.report_id)
    if key in run.reports:
        return  # the same report, accepted again
    if e.occurred_at < run.now - report_horizon(run):
        return  # older than anything still kept: it can no longer change a decision
    run.reports[key] = ReportEntry(
        report_id=p.report_id, event_id=e.event_id, area_id=p.area_id,
        category=p.report.category, severity=p.report.severity, at=e.occurred_at,
    )


def shelter(run: Run, e: ShelterStatusChanged) -> None:
    """Keep the tracker's latest state of a shelter."""
    p = e.payload
    if p.shelter_id not in run.config.sites:
        return
    old = run.shelters.get(p.shelter_id)
    if old is not None and old.version >= p.version:
        return  # the tracker versions its states; the highest wins
    run.shelters[p.shelter_id] = ShelterView(
        shelter_id=p.shelter_id, version=p.version, status=p.status,
        occupancy=p.occupancy, capacity=p.capacity,
    )
