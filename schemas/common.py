"""Shared field types and small value models used by every event module.

The wire contract is strict: identifiers are plain slugs (the region pack defines
their values, so nothing here knows about Chiyoda), free text is bounded and
free of control characters, numbers are bounded and finite, and every time is
timezone-aware and normalised to UTC.

Numbers and booleans are *strict* (``"5"`` is not a severity, ``1`` is not
``true``) while UUIDs, enums and times are read from their JSON string form, so
that the same models validate a decoded JSON document and a Python call alike.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    field_validator,
)

__all__ = [
    "INT_ONLY",
    "SLUG_PATTERN",
    "TEXT_PATTERN",
    "UNIQUE_ITEMS",
    "ActorId",
    "AreaId",
    "AreaIds",
    "ContractModel",
    "Count",
    "ExternalId",
    "GaugeId",
    "GeoPoint",
    "Latitude",
    "LongText",
    "Longitude",
    "Name",
    "Note",
    "Problem",
    "Reason",
    "Reporter",
    "ShelterId",
    "ShelterIds",
    "ShortText",
    "Slug",
    "Source",
    "UtcDatetime",
    "Version",
    "dotted",
    "ensure_utc",
    "no_duplicates",
    "utc_now",
]


class ContractModel(BaseModel):
    """Base of every payload and value model: immutable, closed, documented.

    ``extra="forbid"`` everywhere: an unknown field is an error that names it.
    Tolerance for older producers comes from upcasters, not from lenient models.
    Attribute docstrings become field descriptions in the generated JSON Schema
    and docs/events.md.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
    )


_H = TypeVar("_H", bound=Hashable)

# --- identifiers -----------------------------------------------------------

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=64)]
"""A lowercase identifier defined by configuration or the region pack."""

AreaId = Annotated[
    str,
    StringConstraints(pattern=SLUG_PATTERN, max_length=64),
    Field(examples=["kanda-koen"]),
]
ShelterId = Annotated[
    str,
    StringConstraints(pattern=SLUG_PATTERN, max_length=64),
    Field(examples=["e1310100005201"]),
]
GaugeId = Annotated[
    str,
    StringConstraints(pattern=SLUG_PATTERN, max_length=64),
    Field(examples=["kandagawa-ochanomizu"]),
]

# Identifiers minted by systems we do not control (JMA, CAP senders): CAP 1.2
# forbids spaces, commas, "<" and "&" in identifiers; we accept the usual
# characters of URNs and JMA ids and nothing that could confuse a log line.
ExternalId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}$", max_length=200),
]

# An authenticated principal (the JWT ``sub``) or a rule id for automatic actions.
ActorId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}$", max_length=128),
    Field(examples=["hq-duty-officer"]),
]

# The service or feed that emitted an event, e.g. "intake" or "jma-feed".
Source = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9._:-]{0,63}$", max_length=64),
    Field(examples=["intake", "shelter-tracker"]),
]

# --- text ------------------------------------------------------------------

# C0 controls other than tab/newline/carriage return, and DEL, are refused: a
# NUL cannot be stored in a PostgreSQL jsonb column (the event store), and the
# others only ever arrive by accident or malice.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=TEXT_PATTERN)]
"""A short non-empty label: a team, a person, a shelter's display name."""
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=TEXT_PATTERN)]
"""A one-line text such as a warning's official name."""
Note = Annotated[str, StringConstraints(max_length=500, pattern=TEXT_PATTERN)]
"""An optional remark from the field."""
Reason = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=TEXT_PATTERN)]
"""Why an operator decided something; part of the audit trail."""
LongText = Annotated[str, StringConstraints(max_length=2000, pattern=TEXT_PATTERN)]
"""A description or rationale."""

# --- numbers ---------------------------------------------------------------

# Strict: a JSON "5" or true is not a number. Counts are bounded well above any
# real ward figure so that a typo (an extra digit) is accepted but garbage is not.
Count = Annotated[int, Strict(), Field(ge=0, le=100_000)]
"""A head count, 0..100000."""
Version = Annotated[int, Strict(), Field(ge=1, le=1_000_000)]
"""A per-aggregate version, starting at 1."""
Latitude = Annotated[float, Strict(), Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
Longitude = Annotated[float, Strict(), Field(ge=-180.0, le=180.0, allow_inf_nan=False)]



def _int_only(value: Any) -> Any:
    # pydantic's Literal validator accepts True for 1 and 3.0 for 3, and Strict()
    # cannot be applied to a Literal; this keeps integer literals as strict as Count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("Input should be an integer")
    return value


INT_ONLY = BeforeValidator(_int_only)
"""Annotate an integer ``Literal`` with this to refuse booleans, floats and strings."""

# --- collections -----------------------------------------------------------

UNIQUE_ITEMS: dict[str, Any] = {"uniqueItems": True}
"""JSON Schema marker for lists validated by :func:`no_duplicates`."""


def no_duplicates(items: tuple[_H, ...]) -> tuple[_H, ...]:
    """Refuse a list that names the same item twice (an area listed twice is a bug)."""
    seen: set[Hashable] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"duplicate item {item!r}")
        seen.add(item)
    return items


AreaIds = Annotated[
    tuple[AreaId, ...],
    Field(min_length=1, max_length=200, json_schema_extra=UNIQUE_ITEMS),
    AfterValidator(no_duplicates),
]
"""One or more distinct area ids."""
ShelterIds = Annotated[
    tuple[ShelterId, ...],
    Field(max_length=500, json_schema_extra=UNIQUE_ITEMS),
    AfterValidator(no_duplicates),
]
"""Zero or more distinct shelter ids."""

# --- time ------------------------------------------------------------------


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC (only ever called at the edges)."""
    return datetime.now(UTC)


def ensure_utc(value: datetime) -> datetime:
    """Normalise an aware datetime to UTC so equal instants compare and print alike."""
    try:
        return value.astimezone(UTC)
    except OverflowError as e:
        # A year-1 time with a positive offset has no UTC representation; pydantic
        # only turns ValueError into a field error, so translate.
        raise ValueError("time is out of range after conversion to UTC") from e


def _no_epoch_numbers(value: Any) -> Any:
    # pydantic would read 1700000000 as a unix time; the contract is ISO 8601
    # with an explicit offset, so that a unit mix-up (ms vs s) cannot slip in.
    if isinstance(value, int | float):
        raise ValueError("expected an ISO 8601 time with a UTC offset, not a number")
    return value


UtcDatetime = Annotated[
    AwareDatetime,
    BeforeValidator(_no_epoch_numbers),
    AfterValidator(ensure_utc),
]
"""An ISO 8601 time with an offset; stored and emitted in UTC."""


# --- small shared value models ---------------------------------------------


class GeoPoint(ContractModel):
    """A WGS 84 position."""

    lat: Latitude
    """Latitude in decimal degrees, -90..90."""
    lon: Longitude
    """Longitude in decimal degrees, -180..180."""


class Reporter(ContractModel):
    """Who sent a field report or shelter update.

    ``name`` is personal data: it stays in HQ views and is never published.
    """

    team: Name
    """The field team or organisation, e.g. a 地域防災組織 or a ward staff unit."""
    name: Name | None = None
    """The person's name, if given (personal data: HQ only)."""


class Problem(ContractModel):
    """One reason something was refused, pointing at the field at fault."""

    code: Slug
    """A stable machine-readable reason, e.g. ``invalid``, ``duplicate``, ``outside_region``."""
    field: ShortText | None = None
    """Dotted path of the offending field (``payload.location.lat``); null for the whole input."""
    message: Reason
    """Human-readable explanation."""

    @field_validator("field")
    @classmethod
    def _dotted(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith(".") or value.endswith(".")):
            raise ValueError("field must be a dotted path without leading or trailing dots")
        return value


def dotted(loc: Sequence[int | str]) -> str:
    """Render a pydantic error location as a dotted path (``payload.area_ids.0``)."""
    return ".".join(str(part) for part in loc)


class NonFiniteNumber(ValueError):
    """A JSON document holds ``NaN`` or ``Infinity``: not JSON, and never a finite value."""


def refuse_non_finite(name: str) -> Any:
    """``json.loads(..., parse_constant=refuse_non_finite)``: refuse NaN and ±Infinity.

    Python's json module accepts them by default; a number field must not silently
    become non-finite, so every JSON Sonae reads goes through this.
    """
    raise NonFiniteNumber(f"{name} is not valid JSON")
