"""Golden scenarios through the pure evacuation engine, and replay determinism.

Each scenario in tests/golden/evacuation/<name>/ has its input log and the
decisions it must produce. To regenerate the expected decisions on purpose
(after changing rules, wording or a scenario), run
``SONAE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_evacuation_golden.py``
and review the diff of expected.jsonl.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from schemas.events import Event, encode_event
from schemas.region import load_region
from services.evacuation.config import EngineConfig, load_config
from services.evacuation.engine import replay, step
from services.evacuation.state import DecisionState, encode_entry, flatten, unflatten
from tests.golden.evacuation.support import read_events, read_expected, run, write_expected

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "evacuation"
SCENARIOS = ("heavy-rain-kandagawa", "landslide-warning", "earthquake-fires")
UPDATE = os.environ.get("SONAE_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def config() -> EngineConfig:
    """Chiyoda's pack and rules, as the service loads them."""
    return load_config("chiyoda")


def inputs(name: str) -> list[Event]:
    return read_events(GOLDEN / name / "input.jsonl")


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_yields_its_expected_decisions(config: EngineConfig, name: str) -> None:
    """Each scenario's input log yields exactly its checked-in recommendations and orders."""
    got = run(config, inputs(name))
    path = GOLDEN / name / "expected.jsonl"
    if UPDATE:
        write_expected(path, got)
    assert got == read_expected(path)


@pytest.mark.parametrize("name", SCENARIOS)
def test_replaying_the_same_log_twice_gives_identical_events_and_state(
    config: EngineConfig, name: str
) -> None:
    """Two replays of one log emit byte-identical events and end in equal states."""
    first_state, first = replay(config, inputs(name))
    second_state, second = replay(config, inputs(name))
    assert [encode_event(e) for e in first] == [encode_event(e) for e in second]
    assert first_state == second_state


@pytest.mark.parametrize("name", SCENARIOS)
def test_restoring_the_state_mid_scenario_changes_nothing(config: EngineConfig, name: str) -> None:
    """Stopping after any event and restoring the stored entries continues identically."""
    events = inputs(name)
    _, expected = replay(config, events)
    state, emitted = DecisionState(), []
    for event in events:
        # What the faust table keeps and gives back after a restart.
        state = unflatten({k: encode_entry(v) for k, v in flatten(state).items()})
        state, out = step(config, state, event)
        emitted.extend(out)
    assert [encode_event(e) for e in emitted] == [encode_event(e) for e in expected]


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_recommendation_explains_itself_with_input_evidence(
    config: EngineConfig, name: str
) -> None:
    """Rationales are words, evidence ids are input events, shelters fit the hazard."""
    events = inputs(name)
    ids = {str(e.event_id) for e in events}
    region = load_region("chiyoda")
    recommended = [d for d in read_expected(GOLDEN / name / "expected.jsonl")
                   if d["type"] == "evacuation.recommended"]
    assert recommended
    for decision in recommended:
        payload = decision["payload"]
        assert len(payload["rationale"]) > 20
        assert payload["evidence_event_ids"] and set(payload["evidence_event_ids"]) <= ids
        for site_id in payload["suggested_shelter_ids"] + payload["shelters_to_open"]:
            assert payload["hazard"] in region.site(site_id).hazards


def test_heavy_rain_goes_through_every_stage_of_the_lifecycle() -> None:
    """神田川: level 3, raised to 4, flooding to 5, a refusal, hysteresis, then lifts."""
    decisions = read_expected(GOLDEN / "heavy-rain-kandagawa" / "expected.jsonl")
    kinds = Counter(
        (d["type"], d["payload"].get("kind"), d["payload"].get("level")) for d in decisions
    )
    assert kinds[("evacuation.recommended", "issue", 3)] == 4
    assert kinds[("evacuation.recommended", "raise", 4)] == 2
    assert kinds[("evacuation.recommended", "raise", 5)] == 4
    assert kinds[("evacuation.recommended", "lift", 4)] + kinds[
        ("evacuation.recommended", "lift", 5)] == 4
    assert kinds[("evacuation.order_lifted", None, 4)] + kinds[
        ("evacuation.order_lifted", None, 5)] == 4
    codes = [d["payload"]["code"] for d in decisions if d["type"] == "evacuation.command_rejected"]
    assert codes == ["forbidden_role", "superseded"]
    quality = [d["payload"]["status"] for d in decisions if d["type"] == "hazard.data_quality"]
    assert quality == ["stale", "restored"]
    # Hysteresis: the river dipped below 氾濫注意水位 at 15:40 (JST) but rose again at
    # 15:50, so the two-hour clear spell counts from 16:00 and lifts come at 18:00.
    lifts = [d for d in decisions if d["payload"].get("kind") == "lift"]
    assert {d["occurred_at"] for d in lifts} == {"2025-08-21T09:00:00Z"}
