"""Which stored fields are personal, and how a purge blanks them (pure: no I/O, no clock).

A field is personal when the contract marks it (``schemas.people.PERSONAL_FIELDS``,
read off the JSON Schema) or when it is the ``name`` of the reporter of a people
or supplies event (``reported_by.name``, ``requested_by.name``). A purge sets each
to the value the contract gives it when it is absent (``null``, or ``""`` for a
note), so a purged envelope still decodes as the same event: drills, exports and
rehydration read it like any other. Sizes, needs, areas, sites and teams are not
touched: the counts stay.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from schemas.common import ContractModel
from schemas.events import EVENT_CLASSES
from schemas.people import PERSONAL_FIELDS
from services.recorder.errors import PurgeBeforeInFuture

__all__ = [
    "PERSONAL_PATHS",
    "PersonalPath",
    "check_before",
    "holds_personal",
    "personal_pointers",
    "purge_envelope",
]

# Event types whose reporter is a person of the public or a site's staff, and the
# payload field holding that Reporter.
_REPORTERS: Final[Mapping[str, str]] = MappingProxyType({
    "shelter.household_checked_in": "reported_by",
    "shelter.household_checked_out": "reported_by",
    "people.at_home_reported": "reported_by",
    "supply.requested": "requested_by",
    "generator.status_reported": "reported_by",
})


@dataclass(frozen=True)
class PersonalPath:
    """One personal field of an event type: where it sits and what a purge leaves."""

    path: tuple[str, ...]
    """Keys from the envelope down, e.g. ``("payload", "reported_by", "name")``."""
    blank: Any
    """The value a purge leaves: the field's default (``None``, or ``""`` for a note)."""

    @property
    def pointer(self) -> str:
        """The JSON pointer of the field, e.g. ``/payload/name``."""
        return "/" + "/".join(self.path)


def _payload_model(event_type: str) -> type[ContractModel]:
    payload = EVENT_CLASSES[event_type].model_fields["payload"].annotation
    assert isinstance(payload, type) and issubclass(payload, ContractModel)
    return payload


def _personal_paths() -> Mapping[str, tuple[PersonalPath, ...]]:
    out: dict[str, list[PersonalPath]] = {}
    for event_type, names in PERSONAL_FIELDS.items():
        model = _payload_model(event_type)
        out.setdefault(event_type, []).extend(
            PersonalPath(("payload", name), model.model_fields[name].default)
            for name in sorted(names))
    for event_type, reporter in _REPORTERS.items():
        out.setdefault(event_type, []).append(PersonalPath(("payload", reporter, "name"), None))
    return MappingProxyType({t: tuple(paths) for t, paths in sorted(out.items())})


PERSONAL_PATHS: Final = _personal_paths()
"""Event type → its personal fields (what ``sonae people purge`` blanks, what exports mark)."""


def personal_pointers(event_type: str) -> tuple[str, ...]:
    """The JSON pointers of ``event_type``'s personal fields (none for most types)."""
    return tuple(p.pointer for p in PERSONAL_PATHS.get(event_type, ()))


def _get(document: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def _blank(value: Any, blank: Any) -> bool:
    return value is None or value == blank


def holds_personal(event_type: str, envelope: Mapping[str, Any]) -> bool:
    """Whether the envelope (as JSON) holds a value in any of its type's personal fields."""
    return any(not _blank(_get(envelope, p.path), p.blank)
               for p in PERSONAL_PATHS.get(event_type, ()))


def purge_envelope(envelope: Mapping[str, Any]) -> dict[str, Any] | None:
    """The envelope with its personal fields blanked, or None when none holds a value.

    A field that is absent stays absent; a reporter that is null (the public form)
    stays null. Everything else, the envelope's ids and times included, is kept.
    """
    event_type = envelope.get("type")
    if not isinstance(event_type, str) or not holds_personal(event_type, envelope):
        return None
    purged = copy.deepcopy(dict(envelope))
    for p in PERSONAL_PATHS[event_type]:
        parent = _get(purged, p.path[:-1])
        if isinstance(parent, dict) and p.path[-1] in parent:
            parent[p.path[-1]] = p.blank
    return purged


def check_before(before: datetime, now: datetime) -> None:
    """Raise PurgeBeforeInFuture unless ``before`` is timezone-aware and not after ``now``.

    Purging "before a time still to come" would remove what is being collected now,
    during the disaster: that is never what the retention rule means.
    """
    if before.tzinfo is None or before.utcoffset() is None:
        raise PurgeBeforeInFuture(f"--before {before.isoformat()} has no timezone")
    if before > now:
        raise PurgeBeforeInFuture(
            f"--before {before.isoformat()} is in the future (now {now.isoformat()}): a purge "
            "removes personal data of events that already happened; give a past time")
