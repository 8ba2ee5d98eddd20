"""Retention: forget reports, recommendations, orders, commands, warnings and quakes
that can no longer change a decision (``rules.state.keep_closed_hours``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.evacuation.engine.observations import report_horizon
from services.evacuation.engine.run import Run
from services.evacuation.state import WarningState

__all__ = ["prune"]


def prune(run: Run) -> None:
    """Drop what is older than its horizon."""
    horizon = run.now - report_horizon(run)
    for key in [k for k, r in run.reports.items() if r.at < horizon]:
        del run.reports[key]
    cutoff = run.now - timedelta(hours=run.config.rules.state.keep_closed_hours)
    for key in [k for k, r in run.recs.items()
                if r.closed_at is not None and r.closed_at < cutoff]:
        del run.recs[key]
    for key in [k for k, o in run.orders.items()
                if o.lifted and o.closed_at is not None and o.closed_at < cutoff]:
        del run.orders[key]
    for key in [k for k, seen in run.commands.items() if seen.at < cutoff]:
        del run.commands[key]
    for key in [k for k, w in run.warnings.items() if _warning_over(w, cutoff)]:
        del run.warnings[key]
    longest_hold = max((timedelta(minutes=r.hold_minutes) for r in run.config.rules.seismic),
                       default=timedelta(0))
    for key in [k for k, q in run.quakes.items() if q.at + longest_hold < cutoff]:
        del run.quakes[key]


def _warning_over(warning: WarningState, cutoff: datetime) -> bool:
    """Whether a warning ended (cancelled or expired) before ``cutoff``."""
    ends = [t for t in (warning.cancelled_at, warning.expires_at) if t is not None]
    if not ends or min(ends) >= cutoff:
        return False
    return all(t < cutoff for t in warning.ended_areas.values())
