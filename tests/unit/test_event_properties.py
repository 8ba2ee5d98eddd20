"""Property tests: every event type round-trips through JSON; bad input names its field.

Strategies are derived from each type's generated JSON Schema (the contract we
publish) and applied as mutations of the type's example document: hypothesis
picks a few fields and draws new values for them from their schema. Values that
break a cross-field rule (say, a generator without fuel hours) are discarded
with ``assume``; the rules themselves are tested one by one in test_events.py.
"""

from __future__ import annotations

import json
import math
import re
import string
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from schemas.common import TEXT_PATTERN
from schemas.errors import InvalidEvent
from schemas.events import EVENT_CLASSES, decode_event, encode_event
from schemas.examples import example

Path = tuple[str | int, ...]
Schema = Mapping[str, Any]

PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,  # the first draw compiles regexes; later ones are fast
    suppress_health_check=[HealthCheck.too_slow],
)

_CONTROL = "".join(chr(c) for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_TEXT = st.characters(exclude_categories=("Cs",), exclude_characters=_CONTROL)
_MAX_LIST = 4  # enough to exercise lists without slowing every draw


# --- schema helpers --------------------------------------------------------------------


@cache
def schema_of(event_type: str) -> tuple[Schema, Schema]:
    """The type's JSON Schema and its $defs."""
    schema = EVENT_CLASSES[event_type].model_json_schema()
    return schema, schema.get("$defs", {})


def resolve(schema: Schema, defs: Schema) -> Schema:
    """Follow a $ref."""
    ref = schema.get("$ref")
    return defs[ref.rsplit("/", 1)[-1]] if isinstance(ref, str) else schema


def branches(schema: Schema, defs: Schema) -> list[Schema]:
    """The alternatives of an anyOf (or the schema itself), resolved."""
    return [resolve(b, defs) for b in schema.get("anyOf", [schema])]


def non_null(schema: Schema, defs: Schema) -> Schema:
    """The first non-null alternative."""
    options = [b for b in branches(resolve(schema, defs), defs) if b.get("type") != "null"]
    return options[0] if options else {"type": "null"}


def nullable(schema: Schema, defs: Schema) -> bool:
    return any(b.get("type") == "null" for b in branches(resolve(schema, defs), defs))


def dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


# --- valid values ----------------------------------------------------------------------


def _times() -> st.SearchStrategy[str]:
    offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    return st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets
    ).map(lambda d: d.isoformat())


def valid(schema: Schema, defs: Schema) -> st.SearchStrategy[Any]:
    """Values that satisfy ``schema`` on their own (cross-field rules aside)."""
    schema = resolve(schema, defs)
    if "anyOf" in schema:
        return st.one_of([valid(b, defs) for b in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    if kind == "number":
        return st.floats(
            schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False
        )
    if kind == "string":
        return _valid_string(schema)
    if kind == "array":
        items = valid(schema.get("items", {}), defs)
        return st.lists(
            items,
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", _MAX_LIST), _MAX_LIST),
            unique_by=(lambda v: json.dumps(v, sort_keys=True))
            if schema.get("uniqueItems")
            else None,
        )
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: valid(v, defs) for k, v in properties.items() if k in required},
            optional={k: valid(v, defs) for k, v in properties.items() if k not in required},
        )
    raise AssertionError(f"no strategy for schema {schema}")


def _valid_string(schema: Schema) -> st.SearchStrategy[str]:
    fmt, pattern = schema.get("format"), schema.get("pattern")
    low, high = schema.get("minLength", 0), schema.get("maxLength", 200)
    if fmt == "uuid":
        return st.uuids().map(str)
    if fmt == "date-time":
        return _times()
    if pattern is None or pattern == TEXT_PATTERN:
        return st.text(_TEXT, min_size=low, max_size=high)
    return st.from_regex(pattern, fullmatch=True).filter(lambda s: low <= len(s) <= high)


# --- the example document and its mutable places ---------------------------------------------


def document(event_type: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(encode_event(example(event_type)))
    return loaded


def places(
    schema: Schema, defs: Schema, value: Any, path: Path = ()
) -> Iterator[tuple[Path, Schema]]:
    """Every field position of the example (present, or optional and absent), with its schema."""
    if path:
        yield path, schema
    target = non_null(schema, defs)
    if target.get("type") == "object" and isinstance(value, dict):
        for name, sub in target.get("properties", {}).items():
            if path == () and name == "type":
                continue  # the discriminator: changing it is a different event, tested apart
            yield from places(sub, defs, value.get(name), (*path, name))
    elif target.get("type") == "array" and isinstance(value, list):
        for index, item in enumerate(value):
            yield from places(target.get("items", {}), defs, item, (*path, index))


@cache
def places_of(event_type: str) -> tuple[tuple[Path, Schema], ...]:
    schema, defs = schema_of(event_type)
    return tuple(places(schema, defs, document(event_type)))


def _has(container: Any, part: str | int) -> bool:
    if isinstance(container, dict):
        return isinstance(part, str)
    return isinstance(container, list) and isinstance(part, int) and part < len(container)


def put(doc: dict[str, Any], path: Path, value: Any) -> bool:
    """Set ``doc[path] = value`` if the parent still exists; report whether it did."""
    parent: Any = doc
    for part in path[:-1]:
        if not (_has(parent, part) and (isinstance(parent, list) or part in parent)):
            return False
        parent = parent[part]
    if not _has(parent, path[-1]):
        return False
    parent[path[-1]] = value
    return True


@st.composite
def mutated(draw: st.DrawFn, event_type: str) -> dict[str, Any]:
    """The example document with one to four fields redrawn from their schema."""
    _, defs = schema_of(event_type)
    doc = document(event_type)
    chosen = draw(
        st.lists(st.sampled_from(places_of(event_type)), min_size=1, max_size=4,
                 unique_by=lambda p: p[0])
    )
    for path, schema in sorted(chosen, key=lambda p: len(p[0])):
        put(doc, path, draw(valid(schema, defs)))
    return doc


# --- invalid values --------------------------------------------------------------------------


def _wrong_type(schema: Schema) -> Any:
    kind = schema.get("type")
    if kind in ("integer", "number"):
        return "12"  # numbers are strict: a numeric string is not a number
    if kind == "boolean":
        return "true"
    if kind == "array":
        return 7
    if kind == "object":
        return "x"
    return {"unexpected": 1}


def invalid(schema: Schema, defs: Schema, value: Any) -> list[tuple[Any, Path]]:
    """Bad replacements for a field: (value, path suffix that the error must name)."""
    target = non_null(schema, defs)
    out: list[tuple[Any, Path]] = [(_wrong_type(target), ())]
    if not nullable(schema, defs):
        out.append((None, ()))
    if "const" in target:
        const = target["const"]
        out.append((const + 1 if isinstance(const, int) else f"not-{const}", ()))
    if "enum" in target:
        out.append(("not-a-member", ()))
    if "minimum" in target:
        out.append((target["minimum"] - 1, ()))
    if "maximum" in target:
        out.append((target["maximum"] + 1, ()))
    if "maxLength" in target:
        out.append(("a" * (target["maxLength"] + 1), ()))
    if target.get("pattern") == TEXT_PATTERN:
        out.append(("bad\x00", ()))
    elif "pattern" in target:
        out.append(("Not A Slug!", ()))
    if target.get("format") == "uuid":
        out.append(("not-a-uuid", ()))
    if target.get("format") == "date-time":
        out.append(("2025-08-21T14:00:00", ()))  # naive
    if target.get("type") == "array":
        if target.get("minItems"):
            out.append(([], ()))
        if "maxItems" in target and target["maxItems"] < 600:
            item = value[0] if isinstance(value, list) and value else None
            if item is not None and not target.get("uniqueItems"):
                out.append(([item] * (target["maxItems"] + 1), ()))
        if target.get("uniqueItems") and isinstance(value, list) and value:
            out.append(([value[0], value[0]], ()))
    if target.get("type") == "object" and isinstance(value, dict):
        out.append(({**value, "unexpected_field": 1}, ("unexpected_field",)))
        for name in target.get("required", ()):
            out.append(({k: v for k, v in value.items() if k != name}, (name,)))
    return out


def value_at(doc: Any, path: Path) -> Any:
    for part in path:
        doc = doc[part] if isinstance(doc, dict | list) else None
        if doc is None:
            return None
    return doc


_MISSING = object()
"""Marker: remove the envelope field instead of replacing it."""


@cache
def invalid_cases(event_type: str) -> tuple[tuple[Path, Any, Path], ...]:
    """(field path, bad value, path the error must name) for every field of the example."""
    root, defs = schema_of(event_type)
    doc = document(event_type)
    # The envelope itself: every field is required (decoding must never invent an
    # event_id or default a drill event to live) and nothing else is allowed.
    cases: list[tuple[Path, Any, Path]] = [
        ((name,), _MISSING, (name,)) for name in root["properties"]
    ]
    cases.append((("unexpected_field",), 1, ("unexpected_field",)))
    for path, schema in places_of(event_type):
        current = value_at(doc, path)
        for bad, suffix in invalid(schema, defs, current):
            cases.append((path, bad, (*path, *suffix)))
    return tuple(cases)


# --- properties -------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", list(EVENT_CLASSES))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_event_round_trips_through_json(event_type: str, data: st.DataObject) -> None:
    """Any valid event decodes from JSON, re-encodes byte-identically and compares equal."""
    doc = data.draw(mutated(event_type))
    try:
        event = decode_event(json.dumps(doc, ensure_ascii=False).encode("utf-8"))
    except InvalidEvent:
        assume(False)  # a cross-field rule refused the combination
        raise  # unreachable: assume(False) aborts the example
    assert decode_event(doc) == event  # the mapping path agrees with the bytes path
    raw = encode_event(event)
    again = decode_event(raw)
    assert again == event
    assert encode_event(again) == raw
    assert type(again) is EVENT_CLASSES[event_type]


def assert_names_field(doc: dict[str, Any], expected: Path) -> None:
    """Both decode paths refuse ``doc`` alike, and an error names ``expected`` (or inside it)."""
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(json.dumps(doc, ensure_ascii=False).encode("utf-8"))
    with pytest.raises(InvalidEvent) as from_mapping:
        decode_event(doc)
    assert from_mapping.value.problems == excinfo.value.problems
    named = dotted(expected)
    fields = excinfo.value.fields
    assert any(f == named or f.startswith(named + ".") for f in fields), (named, fields)


@pytest.mark.parametrize("event_type", list(EVENT_CLASSES))
def test_every_listed_breakage_names_its_field(event_type: str) -> None:
    """Each way of breaking each field (type, null, range, length, pattern, extra, missing)."""
    # Exhaustive rather than sampled: the list is finite and a sample of it
    # would miss rare cases such as a missing ``exercise`` flag.
    for path, bad, expected in invalid_cases(event_type):
        doc = document(event_type)
        if bad is _MISSING:
            del doc[str(path[0])]
        else:
            assert put(doc, path, bad)
        assert_names_field(doc, expected)


def bad_values(schema: Schema, defs: Schema) -> st.SearchStrategy[Any] | None:
    """Random values a leaf field must refuse, or None if the field is not a bounded leaf."""
    target = non_null(schema, defs)
    options: list[st.SearchStrategy[Any]] = []
    if target.get("type") in ("integer", "number"):
        if "minimum" in target:
            options.append(st.integers(max_value=math.ceil(target["minimum"]) - 1))
        if "maximum" in target:
            options.append(st.integers(min_value=math.floor(target["maximum"]) + 1))
        options.append(st.text(string.digits, min_size=1).map(str))  # strict: no numeric text
    if "enum" in target:
        options.append(st.text(max_size=20).filter(lambda v: v not in target["enum"]))
    if target.get("type") == "string" and "maxLength" in target:
        high = target["maxLength"]
        options.append(st.text(_TEXT, min_size=high + 1, max_size=high + 10))
    pattern = target.get("pattern")
    if pattern is not None and pattern != TEXT_PATTERN:
        options.append(st.text(max_size=30).filter(lambda v: not re.fullmatch(pattern, v)))
    if target.get("format") == "uuid":
        options.append(st.text(max_size=40).filter(lambda v: not _is_uuid(v)))
    if target.get("format") == "date-time":
        options.append(st.datetimes().map(lambda d: d.isoformat()))  # naive
    return st.one_of(options) if options else None


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@cache
def breakable(event_type: str) -> tuple[tuple[Path, Schema], ...]:
    """The places that have a random-bad-value strategy."""
    _, defs = schema_of(event_type)
    return tuple(
        (path, schema) for path, schema in places_of(event_type)
        if bad_values(schema, defs) is not None
    )


@pytest.mark.parametrize("event_type", list(EVENT_CLASSES))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_random_bad_value_is_named_in_the_error(event_type: str, data: st.DataObject) -> None:
    """Any out-of-range number, over-long or off-pattern string, or bad enum names its field."""
    _, defs = schema_of(event_type)
    path, schema = data.draw(st.sampled_from(breakable(event_type)))
    strategy = bad_values(schema, defs)
    assert strategy is not None
    doc = document(event_type)
    assert put(doc, path, data.draw(strategy))
    assert_names_field(doc, path)


@pytest.mark.parametrize("event_type", list(EVENT_CLASSES))
def test_every_field_of_every_example_is_exercised(event_type: str) -> None:
    """The mutation places cover the whole payload, so the properties reach every field."""
    covered = {dotted(p) for p, _ in places_of(event_type)}
    payload = document(event_type)["payload"]
    for name in payload:
        assert f"payload.{name}" in covered
    assert invalid_cases(event_type)


def test_string_alphabet_matches_the_text_rule() -> None:
    """The text strategy excludes exactly the ASCII characters the contract's text refuses."""
    refused = {chr(c) for c in range(0x80) if not re.fullmatch(TEXT_PATTERN, chr(c))}
    assert refused == set(_CONTROL)
