"""Intake's bounds as pure logic: CAP element counts, their settings, the parsing pool."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from infra.settings import SettingsError, load_settings
from schemas.region import load_region
from services.intake.cap import CapLimits, read_alert
from services.intake.contract import refusal
from services.intake.errors import Overloaded, TooManyElements
from services.intake.openapi import openapi_document
from services.intake.parsepool import ParsePool

CAP = Path(__file__).parent.parent / "fixtures" / "cap"
HEAVY_RAIN = (CAP / "sonae_chiyoda_heavy_rain.xml").read_bytes()
"""Three info blocks, three areas, one geocode, no geometry."""


def test_the_limits_default_to_the_settings_defaults_and_follow_them() -> None:
    """CapLimits() is the settings' defaults; from_settings reads each SONAE_ value."""
    defaults = load_settings(development=True)
    assert CapLimits.from_settings(defaults) == CapLimits()
    raised = load_settings(development=True, intake_cap_max_circles=50_000,
                           intake_cap_max_polygon_points=7)
    limits = CapLimits.from_settings(raised)
    assert (limits.circles, limits.polygon_points, limits.infos) == (50_000, 7,
                                                                    CapLimits().infos)


def test_a_limit_below_its_floor_is_a_settings_error_naming_it() -> None:
    """A limit of 0 is refused at start-up with the variable's name."""
    with pytest.raises(SettingsError, match="SONAE_INTAKE_CAP_MAX_INFOS"):
        load_settings(development=True, intake_cap_max_infos=0)


def test_counts_at_the_limit_pass_and_one_over_names_count_and_limit() -> None:
    """The sample has 3 info blocks: a limit of 3 reads it, 2 refuses naming both."""
    assert len(read_alert(HEAVY_RAIN, CapLimits(infos=3, areas=3, geocodes=1)).infos) == 3
    with pytest.raises(TooManyElements) as refused:
        read_alert(HEAVY_RAIN, CapLimits(infos=2, geocodes=0))
    errors = {e.pointer: e.message for e in refused.value.errors}
    assert errors == {
        "/alert/info": "3 info elements; the limit is 2 (SONAE_INTAKE_CAP_MAX_INFOS)",
        "/alert/info/area/geocode":
            "1 geocode elements; the limit is 0 (SONAE_INTAKE_CAP_MAX_GEOCODES)",
    }
    assert {e.code for e in refused.value.errors} == {"too_many"}


def test_limits_are_checked_before_the_schema() -> None:
    """An over-limit document is refused as too large even when it is also schema-invalid
    (the count is cheap; validation and mapping are the work being bounded)."""
    broken = HEAVY_RAIN.replace(b"<status>Actual</status>", b"")
    with pytest.raises(TooManyElements):
        read_alert(broken, CapLimits(elements=10))


async def test_the_pool_admits_up_to_workers_plus_queue() -> None:
    """One worker and one waiting: a third document is Overloaded until one finishes."""
    pool = ParsePool(workers=1, queue=1)
    release = threading.Event()
    try:
        first = asyncio.create_task(pool.run(lambda: release.wait(10)))
        second = asyncio.create_task(pool.run(lambda: "second"))
        await asyncio.sleep(0)  # both tasks submit before their first await
        assert pool.in_flight == 2
        with pytest.raises(Overloaded) as refused:
            pool.admit()
        assert refused.value.retry_after == 1
        release.set()
        assert await first is True and await second == "second"
        assert pool.in_flight == 0
        pool.admit()
    finally:
        release.set()
        pool.close()


async def test_the_pool_runs_work_off_the_event_loop_thread() -> None:
    """The function runs in one of the pool's threads, not the loop's."""
    pool = ParsePool(workers=1, queue=0)
    try:
        name = await pool.run(lambda: threading.current_thread().name)
        assert name.startswith("intake-parse") and name != threading.current_thread().name
    finally:
        pool.close()


def test_overloaded_is_503_with_retry_after() -> None:
    """A full parsing pool answers 503 unavailable with Retry-After."""
    answer = refusal(Overloaded("busy", retry_after=1))
    assert (answer.status, answer.body["error"], dict(answer.headers)) == (
        503, "unavailable", {"Retry-After": "1"})


def test_the_openapi_document_lists_the_limits_answers() -> None:
    """Every route may answer 429 (the address's bucket); body routes 408, 413 and 503."""
    paths = openapi_document(load_region("chiyoda"))["paths"]
    for path, methods in paths.items():
        for method, operation in methods.items():
            assert "429" in operation["responses"], (method, path)
    for path in ("/v1/cap", "/v1/jma", "/v1/reports"):
        assert {"408", "413", "503"} <= set(paths[path]["post"]["responses"]), path
