"""Generate the checked-in contract artefacts from the models and the catalogue.

``python -m schemas.generate`` writes:

- ``schemas/json/<event type>.json``: JSON Schema (draft 2020-12, validation
  mode: what decoding accepts) of each event type;
- ``schemas/json/event.json``: the whole discriminated union;
- ``schemas/json/deadletter.json``: the dead-letter record;
- ``schemas/json/topics.json``: the topic catalogue, for non-Python tools;
- ``docs/events.md``: topic → events → fields, with an example of each.

``python -m schemas.generate --check`` writes nothing and exits 1, listing the
files, when what is on disk differs from what the code generates (a test runs
the same check). Output is deterministic: sorted keys where order carries no
meaning, fixed examples from :mod:`schemas.examples`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope
from schemas.events import EVENT_ADAPTER, EVENT_CLASSES
from schemas.examples import DEADLETTER_EXAMPLE, EXAMPLES
from schemas.topics import CATALOGUE, TopicSpec

__all__ = ["JSON_DIR", "ROOT", "check", "main", "render", "write"]

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (parent of the ``schemas`` package)."""
JSON_DIR = Path("schemas/json")
DOCS_FILE = Path("docs/events.md")
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return {"$schema": _DIALECT, **model.model_json_schema()}


def _catalogue_json() -> list[dict[str, Any]]:
    return [
        {
            "name": spec.name,
            "description": spec.description,
            "key": spec.key,
            "key_paths": {t: list(paths) for t, paths in spec.key_paths.items()},
            "partitions": spec.partitions,
            "cleanup": spec.cleanup,
            "configs": spec.configs,
            "event_types": sorted(spec.event_types),
            "record_model": spec.record_model.__name__ if spec.record_model else None,
        }
        for spec in CATALOGUE.values()
    ]


# --- docs/events.md ----------------------------------------------------------


def _md(text: str | None) -> str:
    """One table cell: RST literals to Markdown, newlines folded, pipes escaped."""
    if not text:
        return ""
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return " ".join(text.split()).replace("|", "\\|")


def _deref(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return defs[ref.rsplit("/", 1)[-1]]  # type: ignore[no-any-return]
    return schema


def _range(what: str, low: int | None, high: int | None) -> list[str]:
    if low and high is not None:
        return [f"{what} {low}..{high}"]
    if high is not None:
        return [f"{what} ≤ {high}"]
    if low:
        return [f"{what} ≥ {low}"]
    return []


def _constraints(schema: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    if "const" in schema:
        out.append(f"= `{json.dumps(schema['const'], ensure_ascii=False)}`")
    if "enum" in schema:
        out.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        out.append(f"{low} ≤ x ≤ {high}")
    elif low is not None:
        out.append(f"≥ {low}")
    elif high is not None:
        out.append(f"≤ {high}")
    out += _range("length", schema.get("minLength"), schema.get("maxLength"))
    out += _range("items", schema.get("minItems"), schema.get("maxItems"))
    if schema.get("uniqueItems"):
        out.append("distinct")
    if "pattern" in schema and not str(schema["pattern"]).startswith("^[^\\x00"):
        out.append(f"pattern `{schema['pattern']}`")
    elif "pattern" in schema:
        out.append("no control characters")
    return out


def _type_name(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs[ref.rsplit("/", 1)[-1]]
        if "enum" in target:
            return f"{target['title']} (enum)"
        return str(target.get("title", "object"))
    if schema.get("type") == "array":
        return "array of " + _type_name(schema.get("items", {}), defs)
    fmt = schema.get("format")
    kind = str(schema.get("type", "any"))
    return f"{kind} ({fmt})" if fmt else kind


def _field_rows(
    schema: Mapping[str, Any], defs: Mapping[str, Any], prefix: str = ""
) -> Iterator[tuple[str, str, str, str, str]]:
    """Rows (name, type, required, constraints, description), nested models expanded."""
    schema = _deref(schema, defs)
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        variants = prop.get("anyOf", [prop])
        nullable = any(v.get("type") == "null" for v in variants)
        concrete = [v for v in variants if v.get("type") != "null"] or [{"type": "null"}]
        nullable = nullable and concrete[0].get("type") != "null"
        main = {**concrete[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
        type_text = " or ".join(_type_name(v, defs) for v in concrete)
        if nullable:
            type_text += " or null"
        target = _deref(concrete[0], defs)
        constraints = _constraints(main if "$ref" not in concrete[0] else target)
        items = main.get("items")
        if main.get("type") == "array" and isinstance(items, Mapping) and "$ref" not in items:
            constraints += [f"each {c}" for c in _constraints(items)]
        if "default" in prop and name not in required:
            constraints.append(f"default `{json.dumps(prop['default'], ensure_ascii=False)}`")
        yield (
            f"`{prefix}{name}`",
            _md(type_text),
            "yes" if name in required else "no",
            _md("; ".join(constraints)),
            _md(prop.get("description") or target.get("description")),
        )
        if target.get("type") == "object" and "properties" in target:
            yield from _field_rows(target, defs, f"{prefix}{name}.")
        if main.get("type") == "array" and isinstance(items, Mapping):
            item_target = _deref(items, defs)
            if item_target.get("type") == "object" and "properties" in item_target:
                yield from _field_rows(item_target, defs, f"{prefix}{name}[].")


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    lines = ["| field | type | required | constraints | description |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _example_block(model: BaseModel) -> list[str]:
    data = json.loads(model.model_dump_json())
    return ["```json", json.dumps(data, indent=2, ensure_ascii=False), "```"]


def _topic_section(spec: TopicSpec) -> list[str]:
    lines = [f"## `{spec.name}`", "", _md(spec.description), ""]
    configs = ", ".join(f"`{k}={v}`" for k, v in spec.configs.items())
    lines += [
        f"- key: {_md(spec.key)}",
        f"- partitions: {spec.partitions}",
        f"- cleanup: `{spec.cleanup}`",
        f"- configs: {configs}",
        "",
    ]
    if spec.record_model is not None:
        schema = spec.record_model.model_json_schema()
        lines += [f"Records: `{spec.record_model.__name__}` (not an event).", ""]
        lines += _table(list(_field_rows(schema, schema.get("$defs", {}))))
        if spec.record_model is DeadLetter:
            lines += ["", "Example:", "", *_example_block(DEADLETTER_EXAMPLE)]
        lines.append("")
    elif not spec.event_types:
        lines += ["No typed events: raw records, validated by their consumer.", ""]
    for event_type in (t for t in EVENT_CLASSES if t in spec.event_types):
        cls = EVENT_CLASSES[event_type]
        schema = cls.model_json_schema()
        defs = schema.get("$defs", {})
        keys = " → ".join(f"`{p}`" for p in spec.key_paths[event_type])
        lines += [
            f"### `{event_type}`",
            "",
            f"{_md(cls.__doc__)} Model `{cls.__module__}.{cls.__name__}`, "
            f"schema version {cls.SCHEMA_VERSION}, key {keys}.",
            "",
            f"Payload: {_md(_deref(schema['properties']['payload'], defs).get('description'))}",
            "",
        ]
        lines += _table(list(_field_rows(schema["properties"]["payload"], defs, "payload.")))
        lines += ["", "Example:", "", *_example_block(EXAMPLES[event_type]), ""]
    return lines


def _docs() -> str:
    envelope = Envelope.model_json_schema()
    rows = [
        # The base model's payload is abstract; each type's section describes its own.
        (*row[:1], "object (per type)", *row[2:]) if row[0] == "`payload`" else row
        for row in _field_rows(envelope, envelope.get("$defs", {}))
        if not row[0].startswith("`payload.")
    ]
    lines = [
        "# Events and topics",
        "",
        "<!-- Generated by `python -m schemas.generate` from schemas/; do not edit. -->",
        "",
        "Every event is one envelope around a typed payload, decoded with",
        "`schemas.events.decode_event` (which applies upcasters first) and encoded with",
        "`schemas.events.encode_event` (compact UTF-8 JSON, times in UTC). Unknown fields are",
        "rejected everywhere; errors name the field as a dotted path. JSON Schema for each",
        "type is in `schemas/json/`. Topics are per namespace: `<namespace>.<name>` for a",
        "drill or a test, the plain name for live operations.",
        "",
        "## Envelope",
        "",
        *_table(rows),
        "",
        "## Topics",
        "",
        "| topic | key | partitions | cleanup | event types |",
        "|---|---|---|---|---|",
    ]
    for spec in CATALOGUE.values():
        types = ", ".join(f"`{t}`" for t in EVENT_CLASSES if t in spec.event_types) or "—"
        lines.append(
            f"| `{spec.name}` | {_md(spec.key)} | {spec.partitions} | {spec.cleanup} | {types} |"
        )
    lines.append("")
    for spec in CATALOGUE.values():
        lines += _topic_section(spec)
    return "\n".join(lines).rstrip("\n") + "\n"


# --- entry points --------------------------------------------------------------


def render() -> dict[Path, str]:
    """Every generated file, as repository-relative path → content."""
    files: dict[Path, str] = {}
    for event_type, cls in EVENT_CLASSES.items():
        files[JSON_DIR / f"{event_type}.json"] = _dump(_schema_of(cls))
    files[JSON_DIR / "event.json"] = _dump(
        {"$schema": _DIALECT, "title": "Event", **EVENT_ADAPTER.json_schema()}
    )
    files[JSON_DIR / "deadletter.json"] = _dump(_schema_of(DeadLetter))
    files[JSON_DIR / "topics.json"] = _dump(_catalogue_json())
    files[DOCS_FILE] = _docs()
    return files


def _stale(root: Path, files: Mapping[Path, str]) -> list[Path]:
    directory = root / JSON_DIR
    if not directory.is_dir():
        return []
    return sorted(
        p.relative_to(root) for p in directory.glob("*.json") if p.relative_to(root) not in files
    )


def check(root: Path = ROOT) -> list[str]:
    """Describe every drift between generated and on-disk files (empty: none)."""
    files = render()
    drift = []
    for path, content in files.items():
        target = root / path
        if not target.exists():
            drift.append(f"{path}: missing")
        elif target.read_text(encoding="utf-8") != content:
            drift.append(f"{path}: differs from the models")
    drift += [f"{path}: no longer generated" for path in _stale(root, files)]
    return drift


def write(root: Path = ROOT) -> list[Path]:
    """Write every generated file under ``root``, remove stale schemas; return changed paths."""
    files = render()
    changed = []
    for path, content in files.items():
        target = root / path
        if not target.exists() or target.read_text(encoding="utf-8") != content:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
            changed.append(path)
    for path in _stale(root, files):
        (root / path).unlink()
        changed.append(path)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the artefacts, or with --check report drift and exit 1."""
    parser = argparse.ArgumentParser(prog="python -m schemas.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="report drift, write nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    if args.check:
        drift = check(args.root)
        for line in drift:
            print(line, file=sys.stderr)
        if drift:
            print("run: python -m schemas.generate", file=sys.stderr)
            return 1
        return 0
    for path in write(args.root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
