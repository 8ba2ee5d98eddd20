"""Intake's HTTP contract: the response bodies and the status each refusal is answered with.

Every body a client receives is one of the models below, dumped by
:meth:`_Response.as_json` — the same models :mod:`services.intake.openapi`
documents, so the document and the answers cannot drift apart:

- :class:`Acknowledgement` — 202 on first receipt (201 for a new supply request, and
  for a household check-in, which creates a household code), 200 with the stored body
  on an identical resend;
- :class:`ReportView` — ``GET /v1/reports/{id}``;
- :class:`SupplyRequestList` — ``GET /v1/supplies/requests`` (each a
  :class:`SupplyRequestView`);
- :class:`Health` — ``GET /healthz``;
- :class:`ErrorBody` — every 4xx/5xx; a recorded rejection (422) and a conflict
  (409) also carry the report's ids.

:data:`REFUSALS` is the one table from intake's refusals
(:mod:`services.intake.errors`) to an HTTP status and error code;
:func:`refusal` answers one. The errors themselves know nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Problem
from schemas.supplies import RequesterKind, SupplyLine, SupplyRequestStatus, Urgency
from services.intake.errors import (
    BodyTooLarge,
    BodyTooSlow,
    ClientIdConflict,
    FieldError,
    HouseholdAlreadyCheckedIn,
    InputRefused,
    InvalidInput,
    MalformedInput,
    NotPermitted,
    Overloaded,
    RateLimited,
    SenderNotPermitted,
    SiteNotPermitted,
    TooManyElements,
    TransitionRefused,
    UnknownAtHomeHousehold,
    UnknownGenerator,
    UnknownHousehold,
    UnknownReport,
    UnknownShelter,
    UnknownSupplyRequest,
    UnsupportedMediaType,
)

__all__ = [
    "REFUSALS",
    "ROUTER_CODES",
    "Acknowledgement",
    "Answer",
    "ErrorBody",
    "ErrorItem",
    "Health",
    "HouseholdList",
    "HouseholdView",
    "Ignored",
    "Links",
    "ReportView",
    "SupplyRequestList",
    "SupplyRequestView",
    "WarningSummary",
    "conflict",
    "error_body",
    "refusal",
    "rejected_report",
    "report_link",
]


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
    """202 on first receipt (the input is durably recorded; 201 for a new supply request), 200
    with the same body on a resend."""

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
    """Other inputs: the idempotency key used (Idempotency-Key header, a household command's
    client_id, or the CAP sender and identifier); absent when none was given."""
    household_code: str | None = None
    """Households: the code checked in, out or transferred (print it or show it as a QR
    code at check-in)."""
    shelter_id: str | None = None
    """Households: where the household is now (a transfer's destination)."""
    area_id: str | None = None
    """Reports: the resolved area (absent when outside the region and none was named)."""
    outside_region: bool | None = None
    """Reports: true when the position lies outside every area of the region."""
    warnings: list[WarningSummary] | None = None
    """CAP and JMA: the warnings the message became."""
    skipped: list[str] | None = None
    """CAP: info blocks that named no area of the region; JMA: parts not applied, and why."""
    links: Links | None = None
    """Reports: where to read the outcome."""
    request_id: UUID | None = None
    """Supply requests and their steps: the request (derived from the client id)."""
    request_status: SupplyRequestStatus | None = None
    """Supply requests and their steps: the request's status after this input."""
    generator_id: str | None = None
    """Generators: the generator registered or reported on."""
    household_id: UUID | None = None
    """Residents at home: the household's id (derived from the client id; a welfare check
    names it)."""


class Ignored(_Response):
    """200 for a JMA message about nothing of the region: acknowledged, nothing recorded."""

    status: Literal["ignored"] = "ignored"
    client_id: str
    """The message's identity (``jma:<uuid>``)."""
    reason: str
    """Why nothing of it concerns the region."""
    notes: list[str] | None = None
    """Parts skipped, each with its reason."""


class ErrorItem(_Response):
    """One field error."""

    pointer: str
    """JSON pointer (RFC 6901) into the body; for CAP, the XML element or line."""
    message: str
    code: str


class ErrorBody(_Response):
    """Every 4xx/5xx body. A rejected report (422) also carries its ids, so GET shows why."""

    error: str
    """A stable code: malformed, invalid, unauthorized, forbidden, sender_not_permitted,
    site_not_permitted, not_found, unknown_household, unknown_request, unknown_generator,
    conflict, household_checked_in, transition_refused, timeout, too_large,
    unsupported_media_type, rate_limited, unavailable, internal."""
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


class SupplyRequestView(_Response):
    """One supply request as intake holds it (the state its steps are checked against)."""

    request_id: UUID
    requester_kind: RequesterKind
    site_id: str
    """The requesting site: a region-pack site id, or a generator id."""
    area_id: str
    lines: list[SupplyLine]
    urgency: Urgency
    note: str
    status: SupplyRequestStatus
    assignee: str | None = None
    """The team or depot it was assigned to."""
    requested_by: str
    """The requesting team."""
    requested_at: datetime
    """Event time of the request."""
    updated_at: datetime
    """Event time of its latest step."""


class SupplyRequestList(_Response):
    """``GET /v1/supplies/requests``: the requests the caller may see, newest first."""

    requests: list[SupplyRequestView]
    truncated: bool = False
    """True when more matched than one answer holds (narrow by site or status)."""


class HouseholdView(_Response):
    """One household checked in at a shelter (personal: name and contact)."""

    household_code: str
    size: int
    needs: list[str]
    language: str | None = None
    name: str | None = None
    """Personal."""
    contact: str | None = None
    """Personal."""
    checked_in_at: datetime
    """Event time of its check-in (for a transfer, of the transfer)."""


class HouseholdList(_Response):
    """``GET /v1/shelters/{shelter_id}/households``: the households checked in there now,
    newest check-in first (personal data: answered with ``Cache-Control: no-store``)."""

    shelter_id: str
    households: list[HouseholdView]


class Health(_Response):
    """``GET /healthz``: ``healthy`` (200) when the database answers — the broker may be
    down: intake still accepts — else ``unhealthy`` (503).

    Nothing else: the body is public, so the reason (a driver's error text), the outbox
    backlog and the broker's state are in the log and at ``/metrics``
    (``intake_outbox_backlog``, ``intake_relay_broker_connected``), not here."""

    status: Literal["healthy", "unhealthy"]


# --- refusals → status and body ------------------------------------------------------


REFUSALS: Final[Mapping[type[InputRefused], tuple[int, str]]] = MappingProxyType({
    MalformedInput: (400, "malformed"),
    NotPermitted: (403, "forbidden"),
    SenderNotPermitted: (403, "sender_not_permitted"),
    SiteNotPermitted: (403, "site_not_permitted"),
    UnknownReport: (404, "not_found"),
    UnknownShelter: (404, "not_found"),
    UnknownSupplyRequest: (404, "unknown_request"),
    UnknownGenerator: (404, "unknown_generator"),
    UnknownAtHomeHousehold: (404, "unknown_household"),
    BodyTooSlow: (408, "timeout"),
    ClientIdConflict: (409, "conflict"),
    TransitionRefused: (409, "transition_refused"),
    UnknownHousehold: (404, "unknown_household"),
    HouseholdAlreadyCheckedIn: (409, "household_checked_in"),
    BodyTooLarge: (413, "too_large"),
    TooManyElements: (413, "too_large"),
    UnsupportedMediaType: (415, "unsupported_media_type"),
    InvalidInput: (422, "invalid"),
    RateLimited: (429, "rate_limited"),
    Overloaded: (503, "unavailable"),
})
"""Each refusal's HTTP status and :attr:`ErrorBody.error` code (a subclass answers as the
nearest class listed; a refusal listed nowhere is a plain 400 ``bad_request``)."""

ROUTER_CODES: Final[Mapping[int, str]] = MappingProxyType(
    {404: "not_found", 405: "method_not_allowed", 413: "too_large"})
"""Error codes of the router's own refusals (no route, wrong method, body over the limit);
any other status the router raises is ``http_error``."""


def _status_and_code(error: InputRefused) -> tuple[int, str]:
    for cls in type(error).__mro__:
        if cls in REFUSALS:
            return REFUSALS[cls]
    return 400, "bad_request"


def _items(errors: tuple[FieldError, ...]) -> list[ErrorItem] | None:
    return [ErrorItem(pointer=e.pointer, message=e.message, code=e.code)
            for e in errors] or None


def error_body(code: str, message: str, errors: tuple[FieldError, ...] = ()) -> dict[str, Any]:
    """The JSON of an :class:`ErrorBody` with no report ids (every plain 4xx/5xx)."""
    return ErrorBody(error=code, message=message, errors=_items(errors)).as_json()


@dataclass(frozen=True)
class Answer:
    """A status, the JSON of its body and any headers it needs."""

    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def refusal(error: InputRefused) -> Answer:
    """The answer to a refusal: its status and code from :data:`REFUSALS`, its field errors."""
    status, code = _status_and_code(error)
    headers = ({"Retry-After": str(error.retry_after)}
               if isinstance(error, RateLimited | Overloaded) else {})
    return Answer(status, error_body(code, error.message, error.errors), headers)


def report_link(report_id: UUID) -> Links:
    """Where a report's outcome is read again."""
    return Links(self_=f"/v1/reports/{report_id}")


def rejected_report(error: InvalidInput, *, report_id: UUID, client_report_id: str,
                    event_id: UUID) -> Answer:
    """422 for a report whose rejection was recorded: the field errors and the report's ids."""
    status, code = _status_and_code(error)
    body = ErrorBody(
        error=code, message=error.message, errors=_items(error.errors), status="rejected",
        report_id=report_id, client_report_id=client_report_id, event_id=event_id,
        links=report_link(report_id),
    ).as_json()
    return Answer(status, body)


def conflict(error: ClientIdConflict, on_record: Mapping[str, Any]) -> Answer:
    """409, naming the report (``report_id``, ``client_report_id``, ``links``) that the answer
    on record gave, when it was a report's."""
    status, code = _status_and_code(error)
    ids = {name: on_record[name] for name in ("report_id", "client_report_id", "links")
           if name in on_record}
    body = ErrorBody(error=code, message=error.message, errors=_items(error.errors),
                     **ids).as_json()
    return Answer(status, body)
