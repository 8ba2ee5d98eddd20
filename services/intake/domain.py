"""Intake's pure rules: who may submit what, request bodies, enrichment, idempotency.

Nothing here does I/O or reads the clock: callers pass ``now``. The adapters
(:mod:`services.intake.store`, :mod:`services.intake.http`,
:mod:`services.intake.ingest`) and the handlers (:mod:`services.intake.service`)
are built around these functions.

Permissions (a token's role → what it may submit; ``public`` tokens are refused):

====================  =========================================================
role                  may
====================  =========================================================
``field``             submit damage reports; read its own reports
``shelter_staff``     submit shelter status; submit and read its own reports
                      (shelter staff see damage around their shelter)
``sensor``            submit hazard observations (gauge readings, warnings,
                      seismic intensity) and CAP alerts; flag input as exercise
``hq``                everything, and read every team's reports
``public``            nothing (the gateway's read-only role)
====================  =========================================================

Request bodies are the schemas' payload models plus a few request-only fields
(``occurred_at``, ``exercise``, a discriminator), so validation, bounds and
error paths are exactly those of the events. Fields the server can fill are
filled *before* validation (:func:`validate_report` and friends): a missing
``reporter`` / ``reported_by`` becomes ``{"team": <token subject>}`` and a
shelter's id comes from the URL path.

Idempotency (see :func:`decide`): the key is ``(kind, scope, client id)`` where
the scope is the authenticated token subject, so two teams can never collide or
read each other's reports. The body is compared by a SHA-256 of its canonical
validated form: an identical resend returns the stored answer (200, nothing new
is written); a different body under the same id is a conflict (409) — except
that a *rejected* report may be corrected and resent under the same id.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictBool, ValidationError

from schemas.common import ContractModel, Problem, UtcDatetime
from schemas.envelope import Envelope, derive_id, new_event
from schemas.hazards import (
    GaugeReading,
    GaugeReadingPayload,
    HazardWarning,
    HazardWarningPayload,
    SeismicIntensity,
    SeismicIntensityPayload,
)
from schemas.region import Region
from schemas.reports import (
    ReportAccepted,
    ReportAcceptedPayload,
    ReportRejected,
    ReportRejectedPayload,
    ReportSubmitted,
    ReportSubmittedPayload,
)
from schemas.shelters import (
    ShelterClosed,
    ShelterClosedPayload,
    ShelterNeedsReported,
    ShelterNeedsReportedPayload,
    ShelterOccupancyReported,
    ShelterOccupancyReportedPayload,
    ShelterOpened,
    ShelterOpenedPayload,
)
from services.common.auth import Principal, Role

__all__ = [
    "MAX_FUTURE_SKEW",
    "PERMISSIONS",
    "SOURCE",
    "Acknowledgement",
    "Action",
    "ClientIdConflict",
    "Decision",
    "ErrorBody",
    "ErrorItem",
    "ExistingRequest",
    "FieldError",
    "GaugeReadingRequest",
    "HazardObservationRequest",
    "HazardWarningRequest",
    "IntakeError",
    "InvalidInput",
    "Kind",
    "Links",
    "MalformedInput",
    "NotPermitted",
    "RateLimiter",
    "ReportEvents",
    "ReportRequest",
    "ReportView",
    "SeismicIntensityRequest",
    "ShelterCloseRequest",
    "ShelterNeedsRequest",
    "ShelterOccupancyRequest",
    "ShelterOpenRequest",
    "ShelterStatusRequest",
    "UnknownReport",
    "UnknownShelter",
    "WarningSummary",
    "canonical_hash",
    "check_client_id",
    "decide",
    "enrich",
    "field_errors",
    "hazard_event",
    "parse_json",
    "permitted",
    "pointer",
    "readable_client_report_id",
    "report_events",
    "report_id_for",
    "report_rejected",
    "require",
    "retry_after_seconds",
    "shelter_event",
    "to_problems",
    "validate_hazard",
    "validate_report",
    "validate_shelter",
]

SOURCE: Final = "intake"
"""The envelope ``source`` of every event intake writes."""

MAX_FUTURE_SKEW: Final = timedelta(minutes=5)
"""A client-supplied event time further ahead of intake's clock than this is refused:
rules reason in event time, and a device with a wrong clock must not move the future."""


# --- errors ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with the input: a JSON pointer (RFC 6901) into the body and a message."""

    pointer: str
    """``/severity``, ``/location/lat``; ``""`` for the whole body."""
    message: str
    code: str = "invalid"

    def as_json(self) -> dict[str, str]:
        """The form used in HTTP error bodies."""
        return {"pointer": self.pointer, "message": self.message, "code": self.code}


class IntakeError(Exception):
    """Base of intake's refusals; ``status`` is the HTTP status it maps to."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errors: tuple[FieldError, ...] = tuple(errors)

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.errors:
            out["errors"] = [e.as_json() for e in self.errors]
        return out


class MalformedInput(IntakeError):
    """The body is not JSON (or not well-formed XML, or not UTF-8)."""

    status = 400
    code = "malformed"


class InvalidInput(IntakeError):
    """The body is well-formed but breaks the contract; ``errors`` lists every field."""

    status = 422
    code = "invalid"


class NotPermitted(IntakeError):
    """The token's role may not do this."""

    status = 403
    code = "forbidden"


class UnknownReport(IntakeError):
    """No report with that id is visible to the caller."""

    status = 404
    code = "not_found"


class UnknownShelter(IntakeError):
    """The URL names no shelter of the region pack."""

    status = 404
    code = "not_found"


class ClientIdConflict(IntakeError):
    """The client id was already used for a different body."""

    status = 409
    code = "conflict"


# --- permissions -----------------------------------------------------------------


class Action(StrEnum):
    """Something a principal can ask intake to do."""

    REPORT = "report"
    """Submit a damage report."""
    READ_REPORT = "read_report"
    """Read a report's outcome (own team's; hq: any)."""
    SHELTER_STATUS = "shelter_status"
    """Submit a shelter's opening, closing, occupancy or needs."""
    HAZARD_OBSERVATION = "hazard_observation"
    """Submit a gauge reading, a warning or seismic intensities."""
    CAP = "cap"
    """Submit an external CAP 1.2 alert."""
    EXERCISE = "exercise"
    """Mark input as drill traffic (``exercise: true``)."""
    READ_ALL_REPORTS = "read_all_reports"
    """Read any team's reports."""


PERMISSIONS: Mapping[Role, frozenset[Action]] = MappingProxyType(
    {
        Role.FIELD: frozenset({Action.REPORT, Action.READ_REPORT}),
        Role.SHELTER_STAFF: frozenset(
            {Action.SHELTER_STATUS, Action.REPORT, Action.READ_REPORT}
        ),
        Role.SENSOR: frozenset({Action.HAZARD_OBSERVATION, Action.CAP, Action.EXERCISE}),
        Role.HQ: frozenset(Action),
        Role.PUBLIC: frozenset(),
    }
)
"""Role → the actions it may take (see the module docstring)."""


def permitted(role: Role, action: Action) -> bool:
    """Whether ``role`` may take ``action``."""
    return action in PERMISSIONS.get(role, frozenset())


def require(principal: Principal, action: Action) -> None:
    """Raise :class:`NotPermitted` unless the principal's role may take ``action``."""
    if not permitted(principal.role, action):
        raise NotPermitted(f"a {principal.role.value} token may not {_ACTION_WORDS[action]}")


_ACTION_WORDS: Mapping[Action, str] = {
    Action.REPORT: "submit damage reports",
    Action.READ_REPORT: "read reports",
    Action.SHELTER_STATUS: "submit shelter status",
    Action.HAZARD_OBSERVATION: "submit hazard observations or warnings",
    Action.CAP: "submit CAP alerts",
    Action.EXERCISE: "flag input as exercise (drill) traffic",
    Action.READ_ALL_REPORTS: "read other teams' reports",
}


# --- parsing and error paths -----------------------------------------------------

# Control characters cannot be stored in PostgreSQL jsonb (NUL) and have no place
# in an error message; a key full of them is replaced, not echoed.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MAX_POINTER = 500
_MAX_MESSAGE = 1000


class _DuplicateKey(ValueError):
    pass


class _NonFinite(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"the key {_clean(key, 100)!r} appears twice in one object")
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """Decode a UTF-8 JSON body strictly; raise :class:`MalformedInput` with the reason.

    Refused as malformed: invalid UTF-8, invalid JSON, ``NaN``/``Infinity``, a key
    repeated in one object (ambiguous: which value did the sender mean?), lone
    UTF-16 surrogates (they cannot be re-encoded), and absurd nesting or numbers.
    """
    try:
        text = body.decode("utf-8")
        document = json.loads(
            text, parse_constant=_refuse_constant, object_pairs_hook=_no_duplicates
        )
        # Lone surrogates ("\ud800") survive json.loads but not UTF-8 encoding,
        # which every later step (events, PostgreSQL) needs.
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedInput(f"the body is not valid UTF-8: {e.reason} at byte {e.start}") from e
    except UnicodeEncodeError as e:
        raise MalformedInput("the body contains a lone UTF-16 surrogate escape") from e
    except json.JSONDecodeError as e:
        raise MalformedInput(f"the body is not valid JSON: {e.msg} at line {e.lineno} "
                             f"column {e.colno}") from e
    except (_DuplicateKey, _NonFinite) as e:
        raise MalformedInput(f"the body is not acceptable JSON: {e}") from e
    except RecursionError as e:
        raise MalformedInput("the body's JSON is nested too deeply") from e
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise MalformedInput(f"the body is not acceptable JSON: {e}") from e
    return document


def _clean(text: str, limit: int) -> str:
    cleaned = _CONTROL.sub("\ufffd", text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def pointer(loc: Iterable[int | str]) -> str:
    """An RFC 6901 JSON pointer for a pydantic error location (``("a", 0)`` → ``/a/0``)."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc]
    return _clean("".join("/" + p for p in parts), _MAX_POINTER)


def _message(msg: str) -> str:
    # pydantic prefixes errors raised by our validators; the reader needs only the rule.
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return _clean(msg, _MAX_MESSAGE) or "invalid"


def field_errors(
    error: ValidationError, *, tag: str | None = None, prefix: Sequence[str | int] = ()
) -> tuple[FieldError, ...]:
    """Every error of a pydantic validation as a :class:`FieldError` with a JSON pointer.

    ``tag``: a discriminated union puts the chosen tag first in each location; it
    is dropped so the pointer is into the body. ``prefix``: where the validated
    document sits inside the body (e.g. ``("data",)`` for the raw envelope).
    """
    out: list[FieldError] = []
    for e in error.errors(include_url=False, include_input=False):
        loc = tuple(e["loc"])
        if tag is not None and loc[:1] == (tag,):
            loc = loc[1:]
        code = "missing" if e["type"] == "missing" else "invalid"
        if e["type"] in ("union_tag_not_found", "union_tag_invalid"):
            # The union reports a bad discriminator at the object; point at the field.
            loc = (*loc, str(e.get("ctx", {}).get("discriminator", "")).strip("'"))
            code = "missing" if e["type"] == "union_tag_not_found" else "invalid"
        out.append(FieldError(pointer((*prefix, *loc)), _message(e["msg"]), code))
    return tuple(out)


def to_problems(errors: Sequence[FieldError]) -> tuple[Problem, ...]:
    """The errors as contract :class:`~schemas.common.Problem` values (dotted paths, ≤100)."""
    problems = []
    for e in errors[:100]:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in e.pointer.split("/")[1:]]
        dotted = _clean(".".join(parts).strip("."), 200) or None
        code = e.code if re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", e.code) else "invalid"
        problems.append(Problem(code=code, field=dotted, message=_clean(e.message, 1000)))
    return tuple(problems)


def check_client_id(value: str | None, *, what: str = "Idempotency-Key") -> str | None:
    """Validate a client-chosen id (header or envelope field) like a client_report_id."""
    if value is None:
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", value):
        raise MalformedInput(
            f"{what} must be 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return value


def canonical_hash(document: Any) -> str:
    """SHA-256 of the canonical JSON form (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- request bodies ---------------------------------------------------------------


def _server_filled(*names: str) -> Any:
    """JSON Schema hook: fields the server fills when absent are not required on the wire."""

    def hook(schema: dict[str, Any]) -> None:
        required = [n for n in schema.get("required", ()) if n not in names]
        if required:
            schema["required"] = required
        else:
            schema.pop("required", None)
        for name in names:
            prop = schema.get("properties", {}).get(name)
            if prop is not None:
                prop["description"] = (
                    prop.get("description", "") + " Optional in a request: filled by intake "
                    "(the token's subject as team, or the URL's shelter id)."
                ).strip()

    return hook


class ReportRequest(ReportSubmittedPayload):
    """``POST /v1/reports``: a ``report.submitted`` payload plus event time and drill flag."""

    model_config = ConfigDict(json_schema_extra=_server_filled("reporter"))

    occurred_at: UtcDatetime | None = None
    """When the damage was observed, if the device knows; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic (only roles allowed to flag exercises)."""

    def payload(self) -> ReportSubmittedPayload:
        """The ``report.submitted`` payload."""
        return ReportSubmittedPayload.model_validate(
            self.model_dump(exclude={"occurred_at", "exercise"})
        )


class ShelterOpenRequest(ShelterOpenedPayload):
    """A shelter is opening or open (becomes ``shelter.opened``)."""

    model_config = ConfigDict(json_schema_extra=_server_filled("shelter_id", "reported_by"))

    action: Literal["open"]
    """What is reported."""
    occurred_at: UtcDatetime | None = None
    """When it happened; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic."""


class ShelterCloseRequest(ShelterClosedPayload):
    """A shelter is closing or closed (becomes ``shelter.closed``)."""

    model_config = ConfigDict(json_schema_extra=_server_filled("shelter_id", "reported_by"))

    action: Literal["close"]
    """What is reported."""
    occurred_at: UtcDatetime | None = None
    """When it happened; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic."""


class ShelterOccupancyRequest(ShelterOccupancyReportedPayload):
    """A head count (becomes ``shelter.occupancy_reported``)."""

    model_config = ConfigDict(json_schema_extra=_server_filled("shelter_id", "reported_by"))

    action: Literal["occupancy"]
    """What is reported."""
    occurred_at: UtcDatetime | None = None
    """When the count was made; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic."""


class ShelterNeedsRequest(ShelterNeedsReportedPayload):
    """Supply levels and power (becomes ``shelter.needs_reported``)."""

    model_config = ConfigDict(json_schema_extra=_server_filled("shelter_id", "reported_by"))

    action: Literal["needs"]
    """What is reported."""
    occurred_at: UtcDatetime | None = None
    """When it was observed; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic."""


_ShelterAny = (
    ShelterOpenRequest | ShelterCloseRequest | ShelterOccupancyRequest | ShelterNeedsRequest
)


class ShelterStatusRequest(RootModel[Annotated[_ShelterAny, Field(discriminator="action")]]):
    """``POST /v1/shelters/{id}/status``: one of open, close, occupancy, needs (by ``action``)."""

    model_config = ConfigDict(frozen=True)


class GaugeReadingRequest(GaugeReadingPayload):
    """A river level (becomes ``hazard.gauge_reading``; event time = ``observed_at``)."""

    observation: Literal["gauge_reading"]
    """What is reported."""
    exercise: StrictBool = False
    """True for drill traffic."""


class HazardWarningRequest(HazardWarningPayload):
    """A warning issued, updated or cancelled (becomes ``hazard.warning``; time = ``issued_at``)."""

    observation: Literal["warning"]
    """What is reported."""
    exercise: StrictBool = False
    """True for drill traffic."""


class SeismicIntensityRequest(SeismicIntensityPayload):
    """Intensities for one earthquake (becomes ``hazard.seismic_intensity``)."""

    observation: Literal["seismic_intensity"]
    """What is reported."""
    occurred_at: UtcDatetime | None = None
    """When the earthquake happened; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic."""


_HazardAny = GaugeReadingRequest | HazardWarningRequest | SeismicIntensityRequest


class HazardObservationRequest(
    RootModel[Annotated[_HazardAny, Field(discriminator="observation")]]
):
    """``POST /v1/hazards/observations``: a gauge reading, warning or seismic intensity."""

    model_config = ConfigDict(frozen=True)


# --- response bodies ----------------------------------------------------------------


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True,
                              populate_by_name=True)

    def as_json(self) -> dict[str, Any]:
        """The JSON body (aliases applied, nulls left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Links(_Response):
    """Where to read the outcome again."""

    self_: str = Field(alias="self")
    """``/v1/reports/<report_id>``."""


class WarningSummary(_Response):
    """One warning an ingested CAP alert became."""

    warning_id: str
    kind: str
    alert_level_equivalent: int
    area_ids: list[str]


class Acknowledgement(_Response):
    """202 on first receipt (the input is durably recorded), 200 with the same body on a resend."""

    status: Literal["accepted"] = "accepted"
    """Always ``accepted`` here; rejections are 422 with :class:`ErrorBody`."""
    event_id: UUID
    """The first event written (for a report: ``report.submitted``)."""
    event_ids: list[UUID]
    """Every event written, in order."""
    report_id: UUID | None = None
    """Reports: Sonae's id of the report."""
    client_report_id: str | None = None
    """Reports: the device's id."""
    client_id: str | None = None
    """Other inputs: the idempotency key used (Idempotency-Key header, or the CAP sender and
    identifier); absent when none was given."""
    area_id: str | None = None
    """Reports: the resolved area (absent when outside the region and none was named)."""
    outside_region: bool | None = None
    """Reports: true when the position lies outside every area of the region."""
    warnings: list[WarningSummary] | None = None
    """CAP: the warnings the alert became."""
    skipped: list[str] | None = None
    """CAP: info blocks that named no area of the region."""
    links: Links | None = None
    """Reports: where to read the outcome."""


class ErrorItem(_Response):
    """One field error."""

    pointer: str
    """JSON pointer (RFC 6901) into the body; for CAP, the XML element or line."""
    message: str
    code: str


class ErrorBody(_Response):
    """Every 4xx/5xx body. A rejected report (422) also carries its ids, so GET shows why."""

    error: str
    """A stable code: malformed, invalid, unauthorized, forbidden, not_found, conflict,
    too_large, unsupported_media_type, rate_limited, unavailable, internal."""
    message: str
    """What went wrong, in words."""
    errors: list[ErrorItem] | None = None
    """422: every field error."""
    status: Literal["rejected"] | None = None
    """422 for a report with a readable client_report_id: the rejection was recorded."""
    report_id: UUID | None = None
    client_report_id: str | None = None
    event_id: UUID | None = None
    """The ``report.rejected`` event."""
    links: Links | None = None


class ReportView(_Response):
    """``GET /v1/reports/{id}``: what became of a report."""

    report_id: UUID
    client_report_id: str
    team: str | None = None
    """The reporting team as given (the token's subject when none was)."""
    status: Literal["accepted", "rejected"]
    reasons: list[Problem] = []
    """Why it was rejected (dotted field paths)."""
    area_id: str | None = None
    outside_region: bool | None = None
    submitted_event_id: UUID | None = None
    accepted_event_id: UUID | None = None
    rejected_event_id: UUID | None = None
    received_at: datetime
    updated_at: datetime
    links: Links


# --- preparing and validating -----------------------------------------------------


def _with_default(document: Any, name: str, value: Any) -> Any:
    if isinstance(document, dict) and name not in document:
        return {**document, name: value}
    return document


def _check_future(when: datetime | None, now: datetime, ptr: str) -> list[FieldError]:
    if when is not None and when > now + MAX_FUTURE_SKEW:
        return [FieldError(ptr, f"is {when.isoformat()}, in the future (intake's clock: "
                                f"{now.isoformat()})", "in_future")]
    return []


def validate_report(document: Any, principal: Principal, region: Region,
                    now: datetime) -> ReportRequest:
    """Validate a report body (reporter defaulting to the token subject) against the region."""
    prepared = _with_default(document, "reporter", {"team": principal.subject})
    try:
        request = ReportRequest.model_validate(prepared)
    except ValidationError as e:
        raise InvalidInput(_summary(e.error_count()), errors=field_errors(e)) from None
    problems = _check_future(request.occurred_at, now, "/occurred_at")
    if request.area_id is not None and request.area_id not in _district_ids(region):
        problems.append(FieldError("/area_id", f"no area {request.area_id!r} in region "
                                               f"{region.id!r}", "unknown_area"))
    if problems:
        raise InvalidInput(_summary(len(problems)), errors=problems)
    return request


def validate_shelter(document: Any, shelter_id: str, principal: Principal, region: Region,
                     now: datetime) -> _ShelterAny:
    """Validate a shelter status body for the shelter named in the URL."""
    try:
        site = region.site(shelter_id)
    except LookupError:
        raise UnknownShelter(f"no shelter {shelter_id!r} in region {region.id!r}") from None
    if not site.is_shelter:
        raise UnknownShelter(f"{shelter_id!r} is an evacuation site, not a shelter (避難所)")
    if isinstance(document, dict) and "shelter_id" in document \
            and document["shelter_id"] != shelter_id:
        raise InvalidInput("the body names another shelter than the URL", errors=[
            FieldError("/shelter_id", "does not match the shelter id in the URL")])
    prepared = _with_default(document, "shelter_id", shelter_id)
    prepared = _with_default(prepared, "reported_by", {"team": principal.subject})
    try:
        request = ShelterStatusRequest.model_validate(prepared).root
    except ValidationError as e:
        tag = prepared.get("action") if isinstance(prepared, dict) else None
        errors = field_errors(e, tag=tag if isinstance(tag, str) else None)
        raise InvalidInput(_summary(e.error_count()), errors=errors) from None
    problems = _check_future(request.occurred_at, now, "/occurred_at")
    if problems:
        raise InvalidInput(_summary(len(problems)), errors=problems)
    return request


def validate_hazard(document: Any, region: Region, now: datetime) -> _HazardAny:
    """Validate a hazard observation body against the region (gauges and areas it knows)."""
    try:
        request = HazardObservationRequest.model_validate(document).root
    except ValidationError as e:
        tag = document.get("observation") if isinstance(document, dict) else None
        errors = field_errors(e, tag=tag if isinstance(tag, str) else None)
        raise InvalidInput(_summary(e.error_count()), errors=errors) from None
    areas = _district_ids(region)
    problems: list[FieldError] = []
    if isinstance(request, GaugeReadingRequest):
        problems += _check_future(request.observed_at, now, "/observed_at")
        if request.gauge_id not in {g.id for g in region.gauges}:
            problems.append(FieldError("/gauge_id", f"no gauge {request.gauge_id!r} in region "
                                                    f"{region.id!r}", "unknown_gauge"))
    elif isinstance(request, HazardWarningRequest):
        problems += _check_future(request.issued_at, now, "/issued_at")
        problems += [FieldError(f"/area_ids/{i}", f"no area {a!r} in region {region.id!r}",
                                "unknown_area")
                     for i, a in enumerate(request.area_ids) if a not in areas]
    else:
        problems += _check_future(request.occurred_at, now, "/occurred_at")
        problems += [FieldError(f"/intensities/{i}/area_id",
                                f"no area {x.area_id!r} in region {region.id!r}", "unknown_area")
                     for i, x in enumerate(request.intensities) if x.area_id not in areas]
    if problems:
        raise InvalidInput(_summary(len(problems)), errors=problems)
    return request


def _summary(count: int) -> str:
    return f"the input has {count} invalid field{'s' if count != 1 else ''}"


def _district_ids(region: Region) -> frozenset[str]:
    return frozenset(d.id for d in region.districts)


def readable_client_report_id(document: Any) -> str | None:
    """The body's ``client_report_id`` if it is a valid one (so a rejection can be recorded)."""
    if not isinstance(document, dict):
        return None
    value = document.get("client_report_id")
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", value):
        return value
    return None


# --- enrichment and events --------------------------------------------------------


def report_id_for(scope: str, client_report_id: str) -> UUID:
    """Sonae's report id: derived from the reporting principal and the device's id."""
    return derive_id("report", scope, client_report_id)


def enrich(
    report: ReportSubmittedPayload, region: Region, *, report_id: UUID, submitted_event_id: UUID
) -> ReportAcceptedPayload:
    """The ``report.accepted`` payload: the area resolved, positions outside the region flagged.

    The area the team chose wins (they may know better than a boundary polygon);
    otherwise the district containing the position. A position outside every
    district is accepted with ``outside_region`` set — the report still reaches
    HQ, it just counts for no area unless the team named one.
    """
    inside = None
    if report.location is not None:
        inside = region.district_at(report.location.lat, report.location.lon)
    outside = report.location is not None and inside is None
    area = report.area_id if report.area_id is not None else (inside.id if inside else None)
    return ReportAcceptedPayload(
        report_id=report_id,
        submitted_event_id=submitted_event_id,
        report=report,
        outside_region=outside,
        area_id=area,
    )


@dataclass(frozen=True)
class ReportEvents:
    """The two events of an accepted report."""

    report_id: UUID
    submitted: ReportSubmitted
    accepted: ReportAccepted


def report_events(
    request: ReportRequest, scope: str, region: Region, now: datetime
) -> ReportEvents:
    """``report.submitted`` (as received) and ``report.accepted`` (enriched) for one report.

    Event ids derive from the report id, so a second write of the same report can
    never produce a second event (the outbox's unique event_id refuses it).
    ``occurred_at`` of both is the time the damage was observed (the client's, or
    receipt); ``recorded_at`` says when intake processed it.
    """
    payload = request.payload()
    report_id = report_id_for(scope, payload.client_report_id)
    occurred = request.occurred_at or now
    submitted = new_event(
        ReportSubmitted, payload, occurred_at=occurred, source=SOURCE, recorded_at=now,
        event_id=derive_id("report.submitted", report_id), exercise=request.exercise,
    )
    accepted = new_event(
        ReportAccepted,
        enrich(payload, region, report_id=report_id, submitted_event_id=submitted.event_id),
        occurred_at=occurred, source=SOURCE, recorded_at=now, cause=submitted,
        event_id=derive_id("report.accepted", report_id),
    )
    return ReportEvents(report_id, submitted, accepted)


def report_rejected(
    client_report_id: str, errors: Sequence[FieldError], now: datetime
) -> ReportRejected:
    """``report.rejected`` for a body with a readable client id that failed validation.

    Its id is random, not derived: one client id may be rejected several times
    (each corrected attempt that is still wrong), and the idempotency record,
    not the event id, is what stops an identical resend from writing again.
    """
    payload = ReportRejectedPayload(
        client_report_id=client_report_id, reasons=to_problems(errors) or (
            Problem(code="invalid", message="the report is invalid"),),
    )
    return new_event(ReportRejected, payload, occurred_at=now, source=SOURCE, recorded_at=now)


def _event_id(event_type: str, scope: str, client_id: str | None, index: int = 0) -> UUID | None:
    return None if client_id is None else derive_id(event_type, scope, client_id, index)


def shelter_event(request: _ShelterAny, scope: str, client_id: str | None,
                  now: datetime) -> Envelope:
    """The ``shelter.*`` event for a shelter status request."""
    extras = {"action", "occurred_at", "exercise"}
    data = request.model_dump(exclude=extras)
    cls: type[Envelope]
    payload: ContractModel
    if isinstance(request, ShelterOpenRequest):
        cls, payload = ShelterOpened, ShelterOpenedPayload.model_validate(data)
    elif isinstance(request, ShelterCloseRequest):
        cls, payload = ShelterClosed, ShelterClosedPayload.model_validate(data)
    elif isinstance(request, ShelterOccupancyRequest):
        cls = ShelterOccupancyReported
        payload = ShelterOccupancyReportedPayload.model_validate(data)
    else:
        cls, payload = ShelterNeedsReported, ShelterNeedsReportedPayload.model_validate(data)
    return new_event(cls, payload, occurred_at=request.occurred_at or now, source=SOURCE,
                     recorded_at=now, exercise=request.exercise,
                     event_id=_event_id(cls.EVENT_TYPE, scope, client_id))


def hazard_event(request: _HazardAny, scope: str, client_id: str | None,
                 now: datetime) -> Envelope:
    """The ``hazard.*`` event for a hazard observation request."""
    extras = {"observation", "occurred_at", "exercise"}
    data = request.model_dump(exclude=extras)
    cls: type[Envelope]
    if isinstance(request, GaugeReadingRequest):
        cls, occurred = GaugeReading, request.observed_at
        payload: ContractModel = GaugeReadingPayload.model_validate(data)
    elif isinstance(request, HazardWarningRequest):
        cls, occurred = HazardWarning, request.issued_at
        payload = HazardWarningPayload.model_validate(data)
    else:
        cls, occurred = SeismicIntensity, request.occurred_at or now
        payload = SeismicIntensityPayload.model_validate(data)
    return new_event(cls, payload, occurred_at=occurred, source=SOURCE, recorded_at=now,
                     exercise=request.exercise,
                     event_id=_event_id(cls.EVENT_TYPE, scope, client_id))


# --- idempotency -----------------------------------------------------------------


class Kind(StrEnum):
    """Idempotency namespaces: a client id is unique per kind and scope."""

    REPORT = "report"
    SHELTER = "shelter"
    HAZARD = "hazard"
    CAP = "cap"


@dataclass(frozen=True)
class ExistingRequest:
    """What the idempotency table holds for a (kind, scope, client id)."""

    body_hash: str
    status_code: int
    response: Mapping[str, Any] = field(default_factory=dict)


class Decision(Enum):
    """What to do with an input, given what was recorded for its client id."""

    WRITE = "write"
    """First receipt (or a corrected resend of a rejected report): write and acknowledge."""
    REPLAY = "replay"
    """Identical resend: return the stored answer (200 for an accepted one), write nothing."""
    CONFLICT = "conflict"
    """Same id, different body, first one accepted: 409, write nothing."""


def decide(existing: ExistingRequest | None, body_hash: str) -> Decision:
    """The idempotency rule (see the module docstring)."""
    if existing is None:
        return Decision.WRITE
    if existing.body_hash == body_hash:
        return Decision.REPLAY
    if existing.status_code == 422:
        # A rejection claims nothing: the team may fix the report and resend it
        # under the same id (the field CLI does exactly that).
        return Decision.WRITE
    return Decision.CONFLICT


# --- rate limiting ----------------------------------------------------------------


class RateLimiter:
    """A token bucket per key (the token subject): ``burst`` requests, refilled at ``rate``/s.

    ``take`` returns 0 when a request may proceed, else the seconds until it may
    (the Retry-After). Idle keys are forgotten once their bucket is full again,
    so memory is bounded by the number of recently active subjects.
    """

    def __init__(self, burst: float, rate: float, *, max_keys: int = 100_000) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("burst must be >= 1 and rate > 0")
        self.burst = float(burst)
        self.rate = float(rate)
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float) -> float:
        """Spend one token of ``key``'s bucket at monotonic time ``now``."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self._max_keys:
                self._forget_idle(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key, (_, last) in list(self._buckets.items()):
            if now - last >= full_after:
                del self._buckets[key]


def retry_after_seconds(wait: float) -> int:
    """Retry-After is whole seconds; never 0 for a refused request."""
    return max(1, math.ceil(wait))

