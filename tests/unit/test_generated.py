"""The generated artefacts (schemas/json/, docs/events.md) match the models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from schemas import generate
from schemas.events import EVENT_CLASSES
from schemas.topics import CATALOGUE


def test_checked_in_artefacts_match_the_models() -> None:
    """Nothing drifted: run `python -m schemas.generate` after changing a model."""
    assert generate.check() == []


@pytest.fixture(scope="module")
def rendered() -> dict[Path, str]:
    """The generated files, rendered once for the read-only tests."""
    return generate.render()


def test_every_event_type_has_a_schema_file(rendered: dict[Path, str]) -> None:
    """schemas/json has one file per event type plus the union, dead letter and catalogue."""
    names = {path.name for path in rendered if path.parent == generate.JSON_DIR}
    expected = {f"{t}.json" for t in EVENT_CLASSES} | {
        "event.json",
        "deadletter.json",
        "topics.json",
    }
    assert names == expected


def test_schemas_require_the_whole_envelope(rendered: dict[Path, str]) -> None:
    """Each type's schema forbids extra fields and requires every envelope field."""
    files = rendered
    for event_type in EVENT_CLASSES:
        schema = json.loads(files[generate.JSON_DIR / f"{event_type}.json"])
        assert schema["additionalProperties"] is False
        assert schema["properties"]["type"]["const"] == event_type
        assert set(schema["required"]) >= {
            "event_id", "type", "schema_version", "occurred_at", "recorded_at", "source",
            "causation_id", "correlation_id", "exercise", "payload",
        }


def test_docs_cover_every_topic_and_event(rendered: dict[Path, str]) -> None:
    """docs/events.md has a section per topic and per event type, each with an example."""
    docs = rendered[generate.DOCS_FILE]
    for name in CATALOGUE:
        assert f"## `{name}`" in docs
    for event_type in EVENT_CLASSES:
        section = docs.split(f"### `{event_type}`", 1)[1].split("\n### ", 1)[0]
        assert "| `payload." in section
        assert f'"type": "{event_type}"' in section


def test_rendering_is_deterministic(rendered: dict[Path, str]) -> None:
    """A second render produces identical files (no clocks, no random ids)."""
    assert generate.render() == rendered


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the generated files in a scratch repository root."""
    generate.write(tmp_path)
    return tmp_path


def test_check_reports_edited_missing_and_stale_files(checkout: Path) -> None:
    """--check exits 1 and names each drifted file; writing again repairs it."""
    assert generate.main(["--check", "--root", str(checkout)]) == 0
    (checkout / generate.JSON_DIR / "report.submitted.json").write_text("{}\n")
    (checkout / generate.JSON_DIR / "hazard.warning.json").unlink()
    (checkout / generate.JSON_DIR / "report.deleted.json").write_text("{}\n")
    drift = generate.check(checkout)
    assert drift == [
        "schemas/json/report.submitted.json: differs from the models",
        "schemas/json/hazard.warning.json: missing",
        "schemas/json/report.deleted.json: no longer generated",
    ]
    assert generate.main(["--check", "--root", str(checkout)]) == 1
    assert generate.main(["--root", str(checkout)]) == 0
    assert generate.check(checkout) == []
    shutil.rmtree(checkout / "docs")
    assert generate.check(checkout) == ["docs/events.md: missing"]
