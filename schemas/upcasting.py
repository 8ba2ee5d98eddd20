"""Upcasters: pure functions that lift an old event document to the next schema version.

An event type is never renamed. When its shape changes, its ``schema_version``
goes up by one and an upcaster from the previous version is registered here.
:func:`schemas.events.decode_event` applies the chain (v1 → v2 → … → current)
to the decoded JSON document *before* validation, so every consumer only ever
sees the current model, and the event store can keep old documents as they are.

An upcaster receives the whole envelope document (so it may also touch
envelope fields) and returns a new document without modifying its input; the
registry then sets ``schema_version`` to ``from_version + 1``. It must be pure:
no I/O, no clock, no randomness, so that decoding is deterministic. (The
registry still hands each chain a deep copy, so a careless upcaster cannot
corrupt the caller's data.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from schemas.errors import UnsupportedSchemaVersion, UpcasterConflict

__all__ = ["UPCASTERS", "Upcaster", "UpcasterRegistry", "report_submitted_v1_to_v2"]

Document = dict[str, Any]
Upcaster = Callable[[Document], Document]


class UpcasterRegistry:
    """Upcasters keyed by ``(event type, from_version)``."""

    def __init__(self) -> None:
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: register ``fn`` as the upcaster of ``event_type`` from ``from_version``."""
        if from_version < 1:
            raise UpcasterConflict(f"from_version must be >= 1, got {from_version}")

        def decorator(fn: Upcaster) -> Upcaster:
            key = (event_type, from_version)
            if key in self._upcasters:
                raise UpcasterConflict(
                    f"an upcaster for {event_type} v{from_version} is already registered"
                )
            self._upcasters[key] = fn
            return fn

        return decorator

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(sorted(self._upcasters))

    def __contains__(self, key: object) -> bool:
        return key in self._upcasters

    def upcast(self, document: Mapping[str, Any], target_version: int) -> Document:
        """Return ``document`` lifted to ``target_version``; the input is never modified.

        Raises :class:`UnsupportedSchemaVersion` when the document is newer than
        ``target_version`` or a step of the chain has no upcaster.
        """
        event_type = str(document.get("type"))
        version = document.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise UnsupportedSchemaVersion(
                event_type, -1, "schema_version must be an integer"
            )
        if version > target_version:
            raise UnsupportedSchemaVersion(
                event_type,
                version,
                f"{event_type} v{version} is newer than this code (v{target_version}); "
                "upgrade the consumer",
            )
        if version == target_version:
            return dict(document)
        current: Document = copy.deepcopy(dict(document))
        while version < target_version:
            fn = self._upcasters.get((event_type, version))
            if fn is None:
                raise UnsupportedSchemaVersion(
                    event_type, version, f"no upcaster for {event_type} from v{version}"
                )
            current = fn(current)
            if current.get("type") != event_type:
                # Renaming a type is forbidden: consumers key on it.
                raise UpcasterConflict(f"upcaster {fn.__name__} changed the event type")
            version += 1
            current["schema_version"] = version
        return current


UPCASTERS = UpcasterRegistry()
"""The registry :func:`schemas.events.decode_event` uses."""


@UPCASTERS.register("report.submitted", 1)
def report_submitted_v1_to_v2(document: Document) -> Document:
    """report.submitted v1 → v2: flat ``payload.lat``/``payload.lon`` become ``payload.location``.

    The first field-app build sent the position as two payload fields. v2 groups
    them so "no position" is one null instead of two. If only one of the pair is
    present, the other is left missing inside ``location`` so validation names
    it (``payload.location.lon``); if a ``location`` already exists the flat
    fields are left alone, and validation reports them as unknown.
    """
    payload = document.get("payload")
    if not isinstance(payload, dict) or "location" in payload:
        return document
    position = {axis: payload[axis] for axis in ("lat", "lon") if axis in payload}
    if not position:
        return document
    lifted = {name: value for name, value in payload.items() if name not in position}
    lifted["location"] = position
    return {**document, "payload": lifted}
