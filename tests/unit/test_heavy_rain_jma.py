"""The heavy-rain drill driven by JMA XML decides exactly as the JSON one (pure engine)."""

from __future__ import annotations

import io
from typing import Any

from schemas.evacuation import EvacuationRecommended
from schemas.events import Event
from schemas.hazards import HazardWarning
from services.drill.logformat import read_log, write_log
from sonae.tools import build_heavy_rain, build_heavy_rain_jma

# Ids derive from the events that caused them, and the words cite their source:
# everything else of a decision must be the same.
_VARYING = {"evidence_event_ids", "rationale", "recommendation_id", "order_id",
            "command_event_id", "superseded_by"}


def _decisions(events: tuple[Event, ...]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.type, e.occurred_at.isoformat(),
             {k: v for k, v in e.payload.model_dump(mode="json").items() if k not in _VARYING})
            for e in events]


def test_the_jma_variant_makes_the_same_decisions_as_the_json_scenario() -> None:
    """Every recommendation and order of the JSON scenario, at the same time, for the same areas."""
    json_log = read_log(build_heavy_rain.OUTPUT)
    jma_log = build_heavy_rain_jma.build_jma()
    assert len(jma_log.references) == len(json_log.references) == 40
    assert _decisions(jma_log.references) == _decisions(json_log.references)


def test_the_jma_variants_warnings_come_from_the_xml_messages() -> None:
    """Its warnings are intake's events of the JMA messages, citing each message."""
    log = build_heavy_rain_jma.build_jma()
    warnings = [e for e in log.inputs if isinstance(e, HazardWarning)]
    assert [w.payload.warning_id for w in warnings] == [
        "jma:1310100:heavy_rain", "jma:landslide:1310100", "jma:landslide:1310100"]
    assert all(w.payload.origin is not None and w.source == "intake" for w in warnings)
    landslide = [e for e in log.references if isinstance(e, EvacuationRecommended)
                 and e.payload.hazard is not None and e.payload.hazard.value == "landslide"]
    assert landslide and all("気象庁本庁「東京都土砂災害警戒情報」" in e.payload.rationale
                             for e in landslide)
    issued = [e for e in landslide if e.payload.kind.value == "issue"]
    assert issued and all("8月21日14:45発表）が" in e.payload.rationale for e in issued)


def test_the_shipped_jma_variant_is_what_the_builder_writes() -> None:
    """services/drill/scenarios/chiyoda-heavy-rain-jma.jsonl is up to date."""
    out = io.BytesIO()
    write_log(build_heavy_rain_jma.build_jma(), out)
    assert out.getvalue() == build_heavy_rain_jma.OUTPUT.read_bytes()
