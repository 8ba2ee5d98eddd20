"""The decision rules file (rules.toml): shipped packs load, bad files are named precisely."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.envelope import derive_id, new_event
from schemas.hazards import GaugeReading
from schemas.region import InvalidField, InvalidPackFile, RegionPackError, load_region, packs_root
from services.evacuation.config import load_config
from services.evacuation.engine import step
from services.evacuation.rules import RULES_FILE, load_rules
from services.evacuation.state import DecisionState


def pack_copy(tmp_path: Path, name: str = "testville") -> Path:
    """A writable copy of a shipped pack."""
    target = tmp_path / name
    shutil.copytree(str(packs_root().joinpath(name)), target)
    return target


def rules_error(pack: Path, rules: str) -> RegionPackError:
    """The error loading ``rules`` as the pack's rules.toml."""
    (pack / RULES_FILE).write_text(rules, encoding="utf-8")
    with pytest.raises(RegionPackError) as excinfo:
        load_rules(pack, load_region(pack))
    return excinfo.value


RIVER = """
[river]
lift_below = "flood_watch"
[[river.stages]]
rule_id = "a"
threshold = "evacuation_judgement"
level = 3
"""


@pytest.mark.parametrize("name", ["chiyoda", "testville"])
def test_shipped_rules_load_and_build_a_config(name: str) -> None:
    """Both shipped packs' rules validate against their own gauges and sites."""
    config = load_config(name)
    assert config.rules.river is not None
    assert set(config.area_ids) == {d.id for d in load_region(name).districts}


def test_testville_rules_drive_the_engine_without_any_chiyoda_data() -> None:
    """A Testville gauge over its judgement level recommends for Testville's own area."""
    config = load_config("testville")
    at = datetime(2030, 1, 1, 12, tzinfo=UTC)
    reading = new_event(GaugeReading, {"gauge_id": "testriver-mill", "level_m": 2.6,
                                       "observed_at": at},
                        occurred_at=at, recorded_at=at, source="test",
                        event_id=derive_id("test", "testville"))
    _, out = step(config, DecisionState(), reading)
    (recommended,) = out
    payload = recommended.payload
    assert payload.area_ids == ("riverside",) and payload.level == 3  # type: ignore[union-attr]
    assert payload.rule_id == "mill-judgement"  # type: ignore[union-attr]
    # tv-hall (hilltop, flood) is within Testville's 2 km; tv-school is not for floods.
    assert payload.suggested_shelter_ids + payload.shelters_to_open == ("tv-hall",)  # type: ignore[union-attr]
    assert "Test River" not in payload.rationale and "テスト川" in payload.rationale  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("rules", "field", "words"),
    [
        ("[[seismic]]\nrule_id = 'q'\nmin_shindo = '6-'\nlevel = 6\n", "seismic[0].level", "3"),
        ("[river]\nstagez = []\n", "river.stages", "required"),
        (RIVER + "flood_danger = 1\n", "river.stages[0].flood_danger", "Extra inputs"),
        ("[[report_clusters]]\nrule_id = 'f'\ncategory = 'fires'\nmin_severity = 3\ncount = 2\n"
         "window_minutes = 10\nlevel = 4\nhazard = 'large_fire'\n",
         "report_clusters[0].category", "fire"),
        ("[[report_clusters]]\nrule_id = 'f'\ncategory = 'fire'\nmin_severity = 3\ncount = 2\n"
         "window_minutes = 10\nlevel = 4\nhazard = 'large_fire'\nauto_issue_level_5 = true\n",
         "report_clusters[0]", "auto_issue_level_5"),
        (RIVER.replace('lift_below = "flood_watch"', 'lift_below = "evacuation_judgement"'),
         "river", "lift_below"),
        (RIVER + "[[river.stages]]\nrule_id = 'b'\nthreshold = 'flood_danger'\nlevel = 3\n",
         "river", "higher level"),
        (RIVER + "[[seismic]]\nrule_id = 'a'\nmin_shindo = '6-'\nlevel = 4\n", "",
         "rule id 'a' is used twice"),
        ("[warnings]\nunknown_kinds = 'sometimes'\n", "warnings.unknown_kinds", "ignore"),
        ("[shelters]\nnear_metres = -5\n", "shelters.near_metres", "greater than or equal"),
        ("format_version = 2\n", "format_version", "1"),
    ],
)
def test_invalid_rules_name_the_file_and_the_field(
    tmp_path: Path, rules: str, field: str, words: str
) -> None:
    """A schema error in rules.toml names rules.toml and the dotted field at fault."""
    error = rules_error(pack_copy(tmp_path), rules)
    assert isinstance(error, InvalidField)
    assert error.file is not None and error.file.endswith(RULES_FILE)
    assert (error.field or "") == field
    assert words in str(error)


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ("[river.overtopping]\nbank_full_m = { nope = 9.0 }\n",
         "river.overtopping.bank_full_m.nope", "unknown gauge 'nope'"),
        ("[river.overtopping]\nbank_full_m = { testriver-mill = 2.9 }\n",
         "river.overtopping.bank_full_m.testriver-mill", "above the gauge's flood_danger"),
    ],
)
def test_rules_that_contradict_the_pack_name_the_field(
    tmp_path: Path, extra: str, field: str, words: str
) -> None:
    """References to gauges are checked against pack.toml, naming rules.toml and the field."""
    error = rules_error(pack_copy(tmp_path), RIVER + extra)
    assert isinstance(error, InvalidField)
    assert error.file is not None and error.file.endswith(RULES_FILE)
    assert error.field == field and words in str(error)


def test_a_threshold_the_gauge_lacks_is_refused(tmp_path: Path) -> None:
    """Testville's gauge has no standby level, so lift_below = standby is an error."""
    error = rules_error(pack_copy(tmp_path), RIVER.replace('"flood_watch"', '"standby"'))
    assert error.field == "river.lift_below" and "no standby threshold" in str(error)


def test_a_pack_without_rules_is_a_missing_file(tmp_path: Path) -> None:
    """The decision service cannot run on a pack without rules.toml, and says which file."""
    pack = pack_copy(tmp_path)
    (pack / RULES_FILE).unlink()
    with pytest.raises(InvalidPackFile, match=r"rules\.toml: file is missing"):
        load_config(pack)
