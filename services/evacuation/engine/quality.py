"""Gauge data quality: a gauge silent for too long is stale, and says so once; then restored.

A stale gauge's last reading no longer counts, and its clear spell starts again
when it reports (a silent gauge proved nothing). Each change is one
``hazard.data_quality`` event.
"""

from __future__ import annotations

from datetime import timedelta

from schemas.hazards import DataQualityStatus, HazardDataQuality
from services.evacuation import text
from services.evacuation.engine.run import RATIONALE_LIMIT, Run, eid
from services.evacuation.state import GaugeState

__all__ = ["check_stale", "data_quality"]


def check_stale(run: Run) -> None:
    """Mark every gauge silent for longer than its period × the stale factor."""
    factor = run.config.rules.data_quality.stale_factor
    for gauge_id in sorted(run.gauges):
        gauge = run.gauges[gauge_id]
        info = run.config.gauges.get(gauge_id)
        if gauge.stale or info is None:
            continue
        allowed = info.reporting_period * factor
        silent = run.now - gauge.last.observed_at
        if silent <= allowed:
            continue
        run.gauges[gauge_id] = gauge.model_copy(update={"stale": True, "clear_since": None})
        data_quality(
            run, gauge_id, DataQualityStatus.STALE, gauge, silent,
            f"{info.name_ja}の水位が{text.duration(silent)}届いていません（報告間隔"
            f"{text.duration(info.reporting_period)}の{factor:g}倍を超過）。最終観測値"
            f" {text.metres(gauge.last.level_m)}"
            f"（{text.when(gauge.last.observed_at, run.config.timezone)}）"
            "は判断に使わず、この水位計による解除の推奨も止めます。",
        )


def data_quality(run: Run, gauge_id: str, status: DataQualityStatus, gauge: GaugeState,
                 silent: timedelta, message: str) -> None:
    """Emit ``hazard.data_quality`` for a gauge gone stale or restored."""
    info = run.config.gauges[gauge_id]
    run.emit(HazardDataQuality, {
        "gauge_id": gauge_id,
        "status": status,
        "last_observed_at": gauge.last.observed_at,
        "last_reading_event_id": gauge.last.event_id,
        "silent_seconds": int(silent.total_seconds()),
        "expected_period_seconds": int(
            (info.reporting_period * run.config.rules.data_quality.stale_factor).total_seconds()),
        "area_ids": info.affected_area_ids,
        "message": text.clip(message, RATIONALE_LIMIT),
    }, event_id=eid("data_quality", gauge_id, status.value, gauge.last.event_id))
