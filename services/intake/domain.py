"""Intake's pure rules: who may submit what, validating inputs, their events, idempotency.

Nothing here does I/O, reads the clock or knows HTTP: callers pass ``now``, and
refusals are the exceptions of :mod:`services.intake.errors`. How an answer
looks on the wire (statuses, bodies, the rate limit, the OpenAPI document) is
the HTTP contract: :mod:`services.intake.contract`,
:mod:`services.intake.ratelimit`, :mod:`services.intake.openapi`. The adapters
(:mod:`services.intake.store`, :mod:`services.intake.http`,
:mod:`services.intake.ingest`) and the handlers (:mod:`services.intake.service`)
are built around these functions.

Permissions (a token's role → what it may submit; ``public`` tokens are refused):

====================  =========================================================
role                  may
====================  =========================================================
``field``             submit damage reports; read its own reports; report
                      households at home; record welfare checks in its areas
``shelter_staff``     submit shelter status; submit and read its own reports
                      (shelter staff see damage around their shelter); check
                      households in, out and transfer them at its own sites
                      (:mod:`services.intake.households`)
``sensor``            submit hazard observations (gauge readings, warnings,
                      seismic intensity), CAP alerts and JMA messages; flag
                      input as exercise
``hq``                everything, and read every team's reports
``public``            nothing (the gateway's read-only role)
(no token)            ``POST /v1/people/at-home`` only: the residents' form
                      (:mod:`services.intake.athome`)
====================  =========================================================

Supply requests and generators (:mod:`services.intake.supplies`) add: shelter_staff
request supplies, mark them received or cancel them, and read their sites' requests
(only for the sites they may act for: the token's ``shelters``, else its ``areas``);
field and shelter_staff report a generator's state (in their areas); hq also assigns
and dispatches requests and registers generators.

Request bodies (:mod:`schemas.intake`, shared with the field client) are the
schemas' payload models plus a few request-only fields
(``occurred_at``, ``exercise``, a discriminator), so validation, bounds and
error paths are exactly those of the events. Fields the server can fill are
filled *before* validation (:func:`validate_report` and friends): a missing
``reporter`` / ``reported_by`` becomes ``{"team": <token subject>}`` and a
shelter's id comes from the URL path.

Senders (see :func:`bind_sender`): every warning and seismic report is recorded
under the sender intake bound it to — ``token:<subject>`` when the token speaks
for itself, or a sender the input names (a CAP alert's ``cap:<sender>``, JMA's
``jma:<editorial office>``, a JSON body's ``sender``) which a sensor token may use
only if its ``senders`` claim lists it (else 403 ``sender_not_permitted``). HQ
may name any sender: the event then records ``overridden_by`` (the HQ subject),
the audit of the override. Consumers key warnings and quakes by (sender, id), so
one feed can never update or cancel another's warning.

Idempotency (see :func:`decide`): the key is ``(namespace, kind, scope, client
id)`` where the scope is the authenticated token subject, so two teams can never
collide or read each other's reports, and a drill never answers for live (the
store adds the namespace). Ids derived from a client id (:func:`input_id`) include
the namespace outside the live one, so a drill's events never share an id with
live events (the event store keeps one row per id). The body is compared by a
SHA-256 of its canonical validated form: an identical resend is a replay of the
stored answer (nothing new is written); a different body under the same id is a
conflict — except that a *rejected* report may be corrected and resent under the
same id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeVar
from uuid import UUID

from pydantic import ValidationError

from schemas.common import ContractModel, Problem
from schemas.envelope import Envelope, derive_id, new_event
from schemas.hazards import (
    GaugeReading,
    GaugeReadingPayload,
    HazardWarning,
    HazardWarningPayload,
    SeismicIntensity,
    SeismicIntensityPayload,
)
from schemas.intake import (
    GaugeReadingRequest,
    HazardAnyRequest,
    HazardObservationRequest,
    HazardWarningRequest,
    ReportRequest,
    ShelterAnyRequest,
    ShelterCloseRequest,
    ShelterOccupancyRequest,
    ShelterOpenRequest,
    ShelterStatusRequest,
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
from schemas.topics import LIVE
from services.common.auth import Principal, Role, may_speak_for, own_sender, speaks_for
from services.intake.errors import (
    FieldError,
    InvalidInput,
    NotPermitted,
    SenderNotPermitted,
    UnknownShelter,
)
from services.intake.parsing import field_errors, to_problems

__all__ = [
    "MAX_FUTURE_SKEW",
    "PERMISSIONS",
    "SOURCE",
    "Action",
    "Decision",
    "ExistingRequest",
    "Kind",
    "ReportEvents",
    "SenderBinding",
    "bind_sender",
    "bound",
    "canonical_hash",
    "decide",
    "enrich",
    "hazard_event",
    "input_id",
    "permitted",
    "readable_client_report_id",
    "report_events",
    "report_id_for",
    "report_rejected",
    "require",
    "shelter_event",
    "validate_hazard",
    "validate_report",
    "validate_shelter",
]

SOURCE: Final = "intake"
"""The envelope ``source`` of every event intake writes."""

MAX_FUTURE_SKEW: Final = timedelta(minutes=5)
"""A client-supplied event time further ahead of intake's clock than this is refused:
rules reason in event time, and a device with a wrong clock must not move the future."""


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
    JMA = "jma"
    """Submit a 気象庁防災情報XML message."""
    HOUSEHOLDS = "households"
    """Check households in and out of a shelter, or transfer them (at permitted sites)."""
    EXERCISE = "exercise"
    """Mark input as drill traffic (``exercise: true``)."""
    READ_ALL_REPORTS = "read_all_reports"
    """Read any team's reports."""
    SUPPLY_REQUEST = "supply_request"
    """Request supplies for a site (shelter_staff: the sites it may act for)."""
    SUPPLY_ASSIGN = "supply_assign"
    """Assign a supply request to a team or depot."""
    SUPPLY_DISPATCH = "supply_dispatch"
    """Mark a supply request dispatched."""
    SUPPLY_RECEIVE = "supply_receive"
    """Mark a supply request received (shelter_staff: its own sites' requests)."""
    SUPPLY_CANCEL = "supply_cancel"
    """Cancel a supply request (shelter_staff: its own sites' requests)."""
    READ_SUPPLY_REQUESTS = "read_supply_requests"
    """Read supply requests (shelter_staff: its own sites'; hq: all)."""
    GENERATOR_REGISTER = "generator_register"
    """Register (or re-register) a community generator."""
    GENERATOR_STATUS = "generator_status"
    """Report a generator's state (field, shelter_staff: generators of their areas)."""
    AT_HOME = "at_home"
    """Report a household sheltering at home (the public form needs no token)."""
    WELFARE_CHECK = "welfare_check"
    """Record a welfare-check visit to a household at home (in the token's areas)."""


PERMISSIONS: Mapping[Role, frozenset[Action]] = MappingProxyType(
    {
        Role.FIELD: frozenset({Action.REPORT, Action.READ_REPORT, Action.GENERATOR_STATUS,
                               Action.AT_HOME, Action.WELFARE_CHECK}),
        Role.SHELTER_STAFF: frozenset(
            {Action.SHELTER_STATUS, Action.REPORT, Action.READ_REPORT,
             Action.SUPPLY_REQUEST, Action.SUPPLY_RECEIVE, Action.SUPPLY_CANCEL,
             Action.READ_SUPPLY_REQUESTS, Action.GENERATOR_STATUS, Action.HOUSEHOLDS}
        ),
        Role.SENSOR: frozenset({Action.HAZARD_OBSERVATION, Action.CAP, Action.JMA,
                                Action.EXERCISE}),
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
    Action.JMA: "submit JMA messages",
    Action.HOUSEHOLDS: "check households in or out of shelters",
    Action.EXERCISE: "flag input as exercise (drill) traffic",
    Action.READ_ALL_REPORTS: "read other teams' reports",
    Action.SUPPLY_REQUEST: "request supplies",
    Action.SUPPLY_ASSIGN: "assign supply requests",
    Action.SUPPLY_DISPATCH: "mark supply requests dispatched",
    Action.SUPPLY_RECEIVE: "mark supply requests received",
    Action.SUPPLY_CANCEL: "cancel supply requests",
    Action.READ_SUPPLY_REQUESTS: "read supply requests",
    Action.GENERATOR_REGISTER: "register generators",
    Action.GENERATOR_STATUS: "report a generator's state",
    Action.AT_HOME: "report households at home",
    Action.WELFARE_CHECK: "record welfare checks",
}


# --- senders ------------------------------------------------------------------------


@dataclass(frozen=True)
class SenderBinding:
    """The sender an input is recorded under, and who overrode it (HQ), if anyone."""

    sender: str
    overridden_by: str | None = None


def bind_sender(principal: Principal, claimed: str | None) -> SenderBinding:
    """Bind an input to the authenticated principal (the rule in the module docstring).

    ``claimed`` is the sender the input names (``cap:<CAP sender>``,
    ``jma:<editorial office>``, a JSON ``sender``), ``None`` if it names none.
    """
    own = own_sender(principal)
    if claimed is None or may_speak_for(principal, claimed):
        return SenderBinding(claimed or own)
    if principal.role is Role.HQ:
        return SenderBinding(claimed, overridden_by=principal.subject)
    allowed = ", ".join(sorted(speaks_for(principal)))
    raise SenderNotPermitted(
        f"sender binding: this {principal.role.value} token speaks for {allowed} only, not "
        f"{claimed!r} (a sensor token's 'senders' claim lists the senders it may speak "
        "for; HQ may override)")


_Bindable = TypeVar("_Bindable", HazardWarningPayload, SeismicIntensityPayload)


def bound(payload: _Bindable, binding: SenderBinding) -> _Bindable:
    """``payload`` recorded under ``binding`` (its ``sender`` and ``overridden_by``)."""
    return payload.model_copy(update={"sender": binding.sender,
                                      "overridden_by": binding.overridden_by})


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
                     now: datetime) -> ShelterAnyRequest:
    """Validate a shelter status body for the shelter named in the URL.

    Stranded-commuter facilities are opened, filled and closed exactly like shelters
    (:attr:`~schemas.region.model.Site.takes_people`).
    """
    try:
        site = region.site(shelter_id)
    except LookupError:
        raise UnknownShelter(f"no shelter {shelter_id!r} in region {region.id!r}") from None
    if not site.takes_people:
        raise UnknownShelter(f"{shelter_id!r} is an evacuation site, not a shelter (避難所) "
                             "or a stranded-commuter facility (一時滞在施設)")
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


def validate_hazard(document: Any, region: Region, now: datetime) -> HazardAnyRequest:
    """Validate a hazard observation body against the region (gauges and areas it knows)."""
    try:
        request = HazardObservationRequest.model_validate(document).root
    except ValidationError as e:
        tag = document.get("observation") if isinstance(document, dict) else None
        errors = field_errors(e, tag=tag if isinstance(tag, str) else None)
        raise InvalidInput(_summary(e.error_count()), errors=errors) from None
    areas = _district_ids(region)
    problems: list[FieldError] = []
    if getattr(request, "overridden_by", None) is not None:
        problems.append(FieldError("/overridden_by", "is set by intake (an HQ token naming "
                                                     "another sender), not by the client"))
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


def input_id(namespace: str, *parts: str | UUID | int) -> UUID:
    """An id derived from an input's parts, in ``namespace``.

    Live ids are ``derive_id(*parts)`` (unchanged, so a resend across an upgrade
    keeps its id); any other namespace is one more part, so the same client id in
    a drill and in live never yields one id.
    """
    return derive_id(*parts) if namespace == LIVE else derive_id("ns", namespace, *parts)


def report_id_for(scope: str, client_report_id: str, *, namespace: str = LIVE) -> UUID:
    """Sonae's report id: derived from the reporting principal and the device's id."""
    return input_id(namespace, "report", scope, client_report_id)


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
    request: ReportRequest, scope: str, region: Region, now: datetime, *,
    namespace: str = LIVE,
) -> ReportEvents:
    """``report.submitted`` (as received) and ``report.accepted`` (enriched) for one report.

    Event ids derive from the report id, so a second write of the same report can
    never produce a second event (the outbox's unique event_id refuses it).
    ``occurred_at`` of both is the time the damage was observed (the client's, or
    receipt); ``recorded_at`` says when intake processed it.
    """
    payload = request.payload()
    report_id = report_id_for(scope, payload.client_report_id, namespace=namespace)
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


def _event_id(namespace: str, event_type: str, scope: str, client_id: str | None,
              index: int = 0) -> UUID | None:
    return None if client_id is None else input_id(namespace, event_type, scope, client_id,
                                                   index)


def shelter_event(request: ShelterAnyRequest, scope: str, client_id: str | None,
                  now: datetime, *, namespace: str = LIVE) -> Envelope:
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
                     event_id=_event_id(namespace, cls.EVENT_TYPE, scope, client_id))


def hazard_event(request: HazardAnyRequest, scope: str, client_id: str | None,
                 now: datetime, principal: Principal | None = None, *,
                 namespace: str = LIVE) -> Envelope:
    """The ``hazard.*`` event for a hazard observation request.

    With ``principal``, a warning or seismic report is bound to its sender
    (:func:`bind_sender`; the request's ``sender``, if any, is the claim).
    """
    extras = {"observation", "occurred_at", "exercise"}
    data = request.model_dump(exclude=extras)
    cls: type[Envelope]
    if isinstance(request, GaugeReadingRequest):
        cls, occurred = GaugeReading, request.observed_at
        payload: ContractModel = GaugeReadingPayload.model_validate(data)
    elif isinstance(request, HazardWarningRequest):
        cls, occurred = HazardWarning, request.issued_at
        payload = HazardWarningPayload.model_validate(data)
        if principal is not None:
            payload = bound(payload, bind_sender(principal, request.sender))
    else:
        cls, occurred = SeismicIntensity, request.occurred_at or now
        payload = SeismicIntensityPayload.model_validate(data)
        if principal is not None:
            payload = bound(payload, bind_sender(principal, request.sender))
    return new_event(cls, payload, occurred_at=occurred, source=SOURCE, recorded_at=now,
                     exercise=request.exercise,
                     event_id=_event_id(namespace, cls.EVENT_TYPE, scope, client_id))


# --- idempotency -----------------------------------------------------------------


def canonical_hash(document: Any) -> str:
    """SHA-256 of the canonical JSON form (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Kind(StrEnum):
    """Idempotency namespaces: a client id is unique per kind and scope."""

    REPORT = "report"
    SHELTER = "shelter"
    HAZARD = "hazard"
    CAP = "cap"
    JMA = "jma"
    SUPPLY_REQUEST = "supply_request"
    SUPPLY_STEP = "supply_step"
    GENERATOR = "generator"
    GENERATOR_STATUS = "generator_status"
    HOUSEHOLD_CHECK_IN = "household_check_in"
    HOUSEHOLD_CHECK_OUT = "household_check_out"
    HOUSEHOLD_TRANSFER = "household_transfer"
    AT_HOME = "at_home"
    WELFARE_CHECK = "welfare_check"


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
