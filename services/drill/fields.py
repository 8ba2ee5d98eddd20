"""Where the ids and the times are in each event type, read once from the contracts.

Replaying an event means giving it a new id, shifting its times and remapping
the ids it refers to. Rather than listing fields by hand (and missing the next
one a contract gains), the paths of every ``uuid`` and ``date-time`` field of
each payload are read from the event models' JSON Schema once, and the same
paths serve the rewriter (:mod:`services.drill.replay`) and the normaliser of
:mod:`services.drill.verify`.

A path is a tuple of keys from the payload down; ``"*"`` stands for every item
of an array.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from schemas.events import EVENT_CLASSES

__all__ = ["ITEMS", "Path", "TypeFields", "fields_of", "locate"]

Path = tuple[str, ...]
ITEMS = "*"
"""Path segment: every item of an array."""


@dataclass(frozen=True)
class TypeFields:
    """The payload paths of one event type's ids and times."""

    uuids: tuple[Path, ...]
    times: tuple[Path, ...]


@cache
def fields_of(event_type: str) -> TypeFields:
    """The uuid and date-time paths of ``event_type``'s payload (KeyError if unknown)."""
    schema = EVENT_CLASSES[event_type].model_json_schema()
    defs: Mapping[str, Any] = schema.get("$defs", {})
    uuids: list[Path] = []
    times: list[Path] = []
    payload = schema["properties"]["payload"]
    _collect(payload, defs, (), uuids, times, frozenset())
    return TypeFields(tuple(dict.fromkeys(uuids)), tuple(dict.fromkeys(times)))


def _collect(schema: Mapping[str, Any], defs: Mapping[str, Any], path: Path,
             uuids: list[Path], times: list[Path], seen: frozenset[str]) -> None:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in seen:  # a recursive model: its fields were collected one level up
            return
        _collect(defs[name], defs, path, uuids, times, seen | {name})
        return
    fmt = schema.get("format")
    if fmt == "uuid":
        uuids.append(path)
        return
    if fmt == "date-time":
        times.append(path)
        return
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, ()):
            _collect(sub, defs, path, uuids, times, seen)
    for name, sub in schema.get("properties", {}).items():
        _collect(sub, defs, (*path, name), uuids, times, seen)
    items = schema.get("items")
    if isinstance(items, Mapping):
        _collect(items, defs, (*path, ITEMS), uuids, times, seen)
    for sub in schema.get("prefixItems", ()):
        _collect(sub, defs, (*path, ITEMS), uuids, times, seen)


def locate(document: Any, path: Path) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) holding a non-null value at ``path`` inside ``document``.

    ``container[key]`` is the value, so callers can read or replace it in place.
    """
    if not path:
        return
    head, rest = path[0], path[1:]
    if head == ITEMS:
        if isinstance(document, list):
            for index, item in enumerate(document):
                if rest:
                    yield from locate(item, rest)
                elif item is not None:
                    yield document, index
        return
    if not isinstance(document, dict) or document.get(head) is None:
        return
    if rest:
        yield from locate(document[head], rest)
    else:
        yield document, head
