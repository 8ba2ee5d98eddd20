"""`sonae drill`: option errors name the option, namespaces are always drill.<id>."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from infra.settings import load_settings
from services.common.auth import Role, verify_token
from services.drill.cli import drill, drill_namespace
from services.drill.logformat import read_log
from sonae.demo import SCENARIO, demo_links, demo_speed


def test_speed_and_max_speed_are_exclusive_and_one_is_required() -> None:
    """`run` needs exactly one of --speed and --max-speed."""
    for args in (["run", "chiyoda-heavy-rain"],
                 ["run", "chiyoda-heavy-rain", "--speed", "60", "--max-speed"]):
        result = CliRunner().invoke(drill, args)
        assert result.exit_code == 2
        assert "exactly one of --speed N and --max-speed" in result.output


def test_an_unknown_log_names_the_shipped_scenarios() -> None:
    """A LOG that is neither a file nor a scenario says which scenarios exist."""
    result = CliRunner().invoke(drill, ["run", "no-such-drill", "--max-speed"])
    assert result.exit_code == 2
    assert "chiyoda-heavy-rain" in result.output and "LOG" in result.output


def test_a_file_that_is_not_a_drill_log_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """A bad log is a usage error naming the file, with no broker or database touched."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"event_id": "x"}\n', encoding="utf-8")
    result = CliRunner().invoke(drill, ["verify", str(bad)])
    assert result.exit_code == 2
    assert "not a Sonae drill log" in result.output


def test_drill_namespaces() -> None:
    """NAME, drill-NAME and drill.NAME all mean drill.NAME; a default is generated."""
    assert drill_namespace("2025-08-21", "x") == "drill.2025-08-21"
    assert drill_namespace("drill-kanda", "x") == "drill.kanda"
    assert drill_namespace("drill.kanda", "x") == "drill.kanda"
    assert drill_namespace(None, "Chiyoda Heavy_Rain").startswith("drill.chiyoda-heavy-rain-")
    result = CliRunner().invoke(drill, ["run", "chiyoda-heavy-rain", "--max-speed",
                                        "--namespace", "Bad Name"])
    assert result.exit_code == 2
    assert "--namespace" in result.output and "drill.NAME" in result.output


def test_the_demo_fits_five_minutes() -> None:
    """The shipped scenario's 5 h 20 min play in 5 minutes (64×); short logs run at 1×."""
    log = read_log(SCENARIO)
    assert log.start is not None and log.end is not None
    assert demo_speed((log.end - log.start).total_seconds()) == pytest.approx(64.0)
    assert demo_speed(60.0) == 1.0


def test_the_demo_prints_sign_in_links_only_in_development_mode() -> None:
    """In development mode the demo's console gets HQ, field and shelter-staff links;
    otherwise none."""
    settings = load_settings(development=True)
    lines = demo_links(settings)
    tokens = [line.split("#token=")[1] for line in lines if "#token=" in line]
    principals = [verify_token(settings.token_secret, t) for t in tokens]
    assert [p.role for p in principals] == [Role.HQ, Role.FIELD, Role.SHELTER_STAFF]
    assert principals[1].areas  # a field token carries its areas
    assert principals[2].shelters == {"e1310100006201"}  # the demo's households are there
    assert demo_links(load_settings(development=False,
                                    token_secret="a-secret-of-our-own-0123456789abcdef")) == []
