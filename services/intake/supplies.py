"""Supply requests and community generators: intake's rules for them, and their handlers.

These inputs are *commands checked against state*: a step of a supply request is
allowed or refused by the request's current status, a generator's state report
needs the generator registered. Intake keeps that state per namespace (tables
``supply_requests`` and ``generators``, migration 0011) and the store
(:mod:`services.intake.supplies_store`) reads it, locked, in the transaction that
then writes the new state, the idempotency record and the events' outbox rows:
an acknowledged step is durable, and a refused one (403, 404, 409, 422 raised by
the pure functions below while the transaction is open) changes nothing.

Who may do what (the role half is :data:`services.intake.domain.PERMISSIONS`; the
site half is :func:`may_act_for`):

============================  ==========================================================
input                         who
============================  ==========================================================
request supplies              hq; shelter_staff for a site they may act for
assign, dispatch              hq
receive, cancel               hq; shelter_staff of the requesting site
list requests                 hq (all); shelter_staff (the sites they may act for)
register a generator          hq (the same id again replaces the registration)
report a generator's state    hq; field and shelter_staff whose areas hold it
============================  ==========================================================

A shelter_staff token *may act for* a site when its ``shelters`` claim names the
site, or, without that claim, when its ``areas`` hold the site's area. A request
from a generator acts for the site the generator stands at (none: only its area
counts, so a token narrowed to its shelters cannot act for it).

Ids: a request's id is derived from the namespace, the requesting token's subject
and the client id (:func:`~services.intake.domain.input_id`), and every event id
from the same parts and its event type, so a resend can never make a second
request or a second step; the idempotency rule is that of every other input
(:func:`~services.intake.domain.decide`), with the client id in the body.

The pure part (validation, :func:`requester_kinds`, :func:`may_act_for`, the
``*_effect`` functions) does no I/O and reads no clock; :class:`Supplies` is the
handlers, given the store as a port.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Protocol, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from schemas.common import utc_now
from schemas.envelope import Envelope, new_event
from schemas.errors import SupplyTransitionRefused
from schemas.intake import (
    GeneratorRegisterRequest,
    GeneratorStatusRequest,
    SupplyRequestRequest,
    SupplyStepRequest,
)
from schemas.region import Region, Site
from schemas.supplies import (
    GeneratorRegistered,
    GeneratorRegisteredPayload,
    GeneratorStatusReported,
    GeneratorStatusReportedPayload,
    RequesterKind,
    SupplyAssigned,
    SupplyCancelled,
    SupplyDispatched,
    SupplyLine,
    SupplyReceived,
    SupplyRequested,
    SupplyRequestedPayload,
    SupplyRequestStatus,
    SupplyStepPayload,
    Urgency,
    next_status,
)
from services.common.auth import Principal, Role, acts_at
from services.intake.contract import (
    Acknowledgement,
    Answer,
    SupplyRequestList,
    SupplyRequestView,
    conflict,
)
from services.intake.domain import (
    MAX_FUTURE_SKEW,
    SOURCE,
    Action,
    Decision,
    Kind,
    canonical_hash,
    input_id,
    require,
)
from services.intake.errors import (
    ClientIdConflict,
    FieldError,
    InputRefused,
    InvalidInput,
    MalformedInput,
    NotPermitted,
    TransitionRefused,
    UnknownGenerator,
    UnknownSupplyRequest,
)
from services.intake.metrics import IntakeMetrics
from services.intake.parsing import field_errors
from services.intake.store import Recorded

__all__ = [
    "MAX_LISTED",
    "STEPS",
    "Command",
    "Current",
    "Effect",
    "GeneratorRow",
    "GeneratorStateChange",
    "Registration",
    "RequestQuery",
    "Requester",
    "Step",
    "Supplies",
    "SupplyPort",
    "SupplyRequestRow",
    "generator_status_effect",
    "may_act_for",
    "registration_effect",
    "request_effect",
    "request_id_for",
    "requester_kinds",
    "resolve_requester",
    "step_effect",
    "validate_generator",
    "validate_generator_status",
    "validate_step",
    "validate_supply_request",
    "visible_to",
]

MAX_LISTED: Final = 500
"""Most requests one ``GET /v1/supplies/requests`` answer lists (newest first)."""


# --- who may act for a site -------------------------------------------------------------


def requester_kinds(site: Site) -> frozenset[RequesterKind]:
    """What a region-pack site may request supplies as (empty: it cannot request).

    The one place that says which sites can request: a shelter (指定避難所) as a
    shelter, a stranded-commuter facility (一時滞在施設) as a facility.
    """
    kinds: set[RequesterKind] = set()
    if site.is_shelter:
        kinds.add(RequesterKind.SHELTER)
    if site.is_temporary_stay:
        kinds.add(RequesterKind.FACILITY)
    return frozenset(kinds)


@dataclass(frozen=True)
class Requester:
    """The site a supply request comes from, as far as permissions need it."""

    kind: RequesterKind
    site_id: str
    """The region-pack site, or the generator's id."""
    host_site_id: str | None
    """The region-pack site it stands at (the site itself; a generator's site, if any)."""
    area_id: str
    """Its district."""


def may_act_for(principal: Principal, requester: Requester) -> bool:
    """Whether ``principal`` may request, receive or cancel supplies for ``requester``.

    HQ for every site; a shelter_staff token for the sites its ``shelters`` claim
    names, or, without that claim, for the sites in its ``areas``; nobody else.
    """
    return acts_at(principal, requester.host_site_id, requester.area_id)


@dataclass(frozen=True)
class RequestQuery:
    """Which supply requests a listing may return (None: no limit on that column)."""

    site_id: str | None = None
    status: SupplyRequestStatus | None = None
    host_sites: frozenset[str] | None = None
    """Only requests standing at one of these sites."""
    areas: frozenset[str] | None = None
    """Only requests in one of these areas."""
    limit: int = MAX_LISTED


def visible_to(principal: Principal, *, site_id: str | None = None,
               status: SupplyRequestStatus | None = None) -> RequestQuery:
    """The listing ``principal`` may see: :func:`may_act_for` as a query (HQ: everything)."""
    require(principal, Action.READ_SUPPLY_REQUESTS)
    if principal.role is Role.HQ:
        return RequestQuery(site_id=site_id, status=status)
    if principal.shelters is not None:
        return RequestQuery(site_id=site_id, status=status, host_sites=principal.shelters)
    return RequestQuery(site_id=site_id, status=status, areas=principal.areas or frozenset())


def _site_list(principal: Principal) -> str:
    names = principal.shelters if principal.shelters is not None else principal.areas
    what = "shelters" if principal.shelters is not None else "areas"
    return f"its {what}: {', '.join(sorted(names or ())) or 'none'}"


# --- validation -------------------------------------------------------------------------


def _summary(count: int) -> str:
    return f"the input has {count} invalid field{'s' if count != 1 else ''}"


def _with_default(document: Any, name: str, value: Any) -> Any:
    if isinstance(document, dict) and name not in document:
        return {**document, name: value}
    return document


def _future(when: datetime | None, now: datetime, ptr: str) -> list[FieldError]:
    if when is not None and when > now + MAX_FUTURE_SKEW:
        return [FieldError(ptr, f"is {when.isoformat()}, in the future (intake's clock: "
                                f"{now.isoformat()})", "in_future")]
    return []


_Model = TypeVar("_Model", bound=BaseModel)
_T = TypeVar("_T")


def _validated(model: type[_Model], document: Any) -> _Model:
    try:
        return model.model_validate(document)
    except ValidationError as e:
        raise InvalidInput(_summary(e.error_count()), errors=field_errors(e)) from None


def _refuse_if(problems: list[FieldError]) -> None:
    if problems:
        raise InvalidInput(_summary(len(problems)), errors=problems)


def validate_supply_request(document: Any, principal: Principal,
                            now: datetime) -> SupplyRequestRequest:
    """A supply request body (``requested_by`` defaulting to the token's subject)."""
    prepared = _with_default(document, "requested_by", {"team": principal.subject})
    request = _validated(SupplyRequestRequest, prepared)
    _refuse_if(_future(request.occurred_at, now, "/occurred_at"))
    return request


class Step(StrEnum):
    """A step of a supply request after it was made (the last segment of its URL)."""

    ASSIGN = "assign"
    DISPATCH = "dispatch"
    RECEIVE = "receive"
    CANCEL = "cancel"


STEPS: Final[Mapping[Step, tuple[type[Envelope], Action]]] = {
    Step.ASSIGN: (SupplyAssigned, Action.SUPPLY_ASSIGN),
    Step.DISPATCH: (SupplyDispatched, Action.SUPPLY_DISPATCH),
    Step.RECEIVE: (SupplyReceived, Action.SUPPLY_RECEIVE),
    Step.CANCEL: (SupplyCancelled, Action.SUPPLY_CANCEL),
}
"""Each step's event and the action a token's role must allow for it."""


def validate_step(document: Any, step: Step, now: datetime) -> SupplyStepRequest:
    """A step body: ``assignee`` required to assign, and refused on every other step."""
    request = _validated(SupplyStepRequest, document)
    problems = _future(request.occurred_at, now, "/occurred_at")
    if step is Step.ASSIGN and request.assignee is None:
        problems.append(FieldError("/assignee", "is required to assign a request (the team "
                                                "or depot that will deliver)", "missing"))
    if step is not Step.ASSIGN and request.assignee is not None:
        problems.append(FieldError("/assignee", f"only an assign step names an assignee, not "
                                                f"{step.value}"))
    _refuse_if(problems)
    return request


def validate_generator(document: Any, principal: Principal, region: Region,
                       now: datetime) -> GeneratorRegisterRequest:
    """A registration body: ``registered_by`` is the token's subject; the area defaults to
    the site's and must be a district of the region (and the site's, when it names one)."""
    if isinstance(document, dict) and "registered_by" in document \
            and document["registered_by"] != principal.subject:
        raise InvalidInput(_summary(1), errors=[FieldError(
            "/registered_by", "is set by intake (the token's subject), not by the client")])
    prepared = _with_default(document, "registered_by", principal.subject)
    site = None
    site_id = prepared.get("site_id") if isinstance(prepared, dict) else None
    if isinstance(site_id, str):
        try:
            site = region.site(site_id)
        except LookupError:
            raise InvalidInput(_summary(1), errors=[FieldError(
                "/site_id", f"no site {site_id!r} in region {region.id!r}",
                "unknown_site")]) from None
        prepared = _with_default(prepared, "area_id", site.district_id)
    request = _validated(GeneratorRegisterRequest, prepared)
    problems = _future(request.occurred_at, now, "/occurred_at")
    if request.area_id not in {d.id for d in region.districts}:
        problems.append(FieldError("/area_id", f"no area {request.area_id!r} in region "
                                               f"{region.id!r}", "unknown_area"))
    elif site is not None and site.district_id != request.area_id:
        problems.append(FieldError("/area_id", f"site {site.id!r} is in area "
                                               f"{site.district_id!r}, not "
                                               f"{request.area_id!r}", "area_mismatch"))
    _refuse_if(problems)
    return request


def validate_generator_status(document: Any, generator_id: str, principal: Principal,
                              now: datetime) -> GeneratorStatusRequest:
    """A state report for the generator the URL names (``reported_by`` defaulting to the
    token's subject)."""
    if isinstance(document, dict) and "generator_id" in document \
            and document["generator_id"] != generator_id:
        raise InvalidInput(_summary(1), errors=[
            FieldError("/generator_id", "does not match the generator id in the URL")])
    prepared = _with_default(document, "generator_id", generator_id)
    prepared = _with_default(prepared, "reported_by", {"team": principal.subject})
    request = _validated(GeneratorStatusRequest, prepared)
    _refuse_if(_future(request.occurred_at, now, "/occurred_at"))
    return request


# --- the state, and what a command does to it -------------------------------------------


@dataclass(frozen=True)
class SupplyRequestRow:
    """One row of ``supply_requests``: a request and where it stands."""

    request_id: UUID
    scope: str
    """The requesting token's subject."""
    requester: Requester
    lines: tuple[SupplyLine, ...]
    urgency: Urgency
    note: str
    requested_by: str
    """The requesting team."""
    status: SupplyRequestStatus
    assignee: str | None
    requested_at: datetime
    updated_at: datetime
    last_event_id: UUID

    def view(self) -> SupplyRequestView:
        """The row as ``GET /v1/supplies/requests`` lists it."""
        return SupplyRequestView(
            request_id=self.request_id, requester_kind=self.requester.kind,
            site_id=self.requester.site_id, area_id=self.requester.area_id,
            lines=list(self.lines), urgency=self.urgency, note=self.note, status=self.status,
            assignee=self.assignee, requested_by=self.requested_by,
            requested_at=self.requested_at, updated_at=self.updated_at)


@dataclass(frozen=True)
class GeneratorRow:
    """What a command needs of a registered generator."""

    generator_id: str
    site_id: str | None
    area_id: str


@dataclass(frozen=True)
class Current:
    """The state a command is checked against, read (and locked) in its transaction."""

    request: SupplyRequestRow | None = None
    generator: GeneratorRow | None = None


@dataclass(frozen=True)
class Registration:
    """A generator's registration to store (replacing an earlier one, keeping its state)."""

    payload: GeneratorRegisteredPayload
    registered_at: datetime


@dataclass(frozen=True)
class GeneratorStateChange:
    """A generator's reported state to store (unless a later report is already stored)."""

    generator_id: str
    state: str
    fuel_hours_left: float | None
    at: datetime


@dataclass(frozen=True)
class Effect:
    """What an accepted command writes: its answer, its events and the state they move."""

    status_code: int
    response: Mapping[str, Any]
    events: tuple[Envelope, ...]
    request: SupplyRequestRow | None = None
    registration: Registration | None = None
    generator_state: GeneratorStateChange | None = None


@dataclass(frozen=True)
class Command:
    """A command's idempotency key and the hash of its validated body."""

    kind: Kind
    scope: str
    client_id: str
    body_hash: str


def request_id_for(namespace: str, scope: str, client_id: str) -> UUID:
    """A supply request's id: derived from the requesting subject and the client's id."""
    return input_id(namespace, "supply.request", scope, client_id)


def resolve_requester(request: SupplyRequestRequest, region: Region,
                      generator: GeneratorRow | None) -> Requester:
    """The requesting site of ``request``: a region-pack site that can request as the kind
    named (:func:`requester_kinds`), or a registered generator; 422 naming the field."""
    if request.requester_kind is RequesterKind.GENERATOR:
        if generator is None:
            raise InvalidInput(_summary(1), errors=[FieldError(
                "/site_id", f"no generator {request.site_id!r} is registered",
                "unknown_generator")])
        return Requester(RequesterKind.GENERATOR, generator.generator_id, generator.site_id,
                         generator.area_id)
    try:
        site = region.site(request.site_id)
    except LookupError:
        raise InvalidInput(_summary(1), errors=[FieldError(
            "/site_id", f"no site {request.site_id!r} in region {region.id!r}",
            "unknown_site")]) from None
    kinds = requester_kinds(site)
    if not kinds:
        raise InvalidInput(_summary(1), errors=[FieldError(
            "/site_id", f"{site.id!r} is not a site that can request supplies (a shelter)",
            "cannot_request")])
    if request.requester_kind not in kinds:
        raise InvalidInput(_summary(1), errors=[FieldError(
            "/requester_kind", f"site {site.id!r} requests as "
                               f"{' or '.join(sorted(kinds))}, not "
                               f"{request.requester_kind.value}", "wrong_kind")])
    return Requester(request.requester_kind, site.id, site.id, site.district_id)


def request_effect(request: SupplyRequestRequest, principal: Principal, region: Region,
                   current: Current, *, namespace: str, now: datetime) -> Effect:
    """``supply.requested`` and the new request row, if ``principal`` may act for the site."""
    requester = resolve_requester(request, region, current.generator)
    if not may_act_for(principal, requester):
        raise NotPermitted(f"this {principal.role.value} token may not request supplies for "
                           f"{requester.site_id!r} ({_site_list(principal)})")
    scope = principal.subject
    request_id = request_id_for(namespace, scope, request.client_id)
    payload = SupplyRequestedPayload(
        request_id=request_id, requester_kind=requester.kind, site_id=requester.site_id,
        area_id=requester.area_id, lines=request.lines, urgency=request.urgency,
        note=request.note, requested_by=request.requested_by)
    occurred = request.occurred_at or now
    event = new_event(SupplyRequested, payload, occurred_at=occurred, source=SOURCE,
                      recorded_at=now, exercise=request.exercise,
                      event_id=input_id(namespace, SupplyRequested.EVENT_TYPE, scope,
                                        request.client_id))
    row = SupplyRequestRow(
        request_id=request_id, scope=scope, requester=requester, lines=request.lines,
        urgency=request.urgency, note=request.note, requested_by=request.requested_by.team,
        status=SupplyRequestStatus.REQUESTED, assignee=None, requested_at=occurred,
        updated_at=occurred, last_event_id=event.event_id)
    ack = Acknowledgement(event_id=event.event_id, event_ids=[event.event_id],
                          client_id=request.client_id, request_id=request_id,
                          area_id=requester.area_id, request_status=row.status)
    return Effect(201, ack.as_json(), (event,), request=row)


def step_effect(step: Step, request: SupplyStepRequest, principal: Principal,
                current: Current, *, request_id: UUID, namespace: str,
                now: datetime) -> Effect:
    """The step's event and the request's new status, checked against its current one.

    404 for no such request; 403 for a receive or cancel by staff who may not act for
    the requesting site; 409 naming both statuses when the step is not allowed.
    """
    row = current.request
    if row is None:
        raise UnknownSupplyRequest(f"no supply request {str(request_id)!r}")
    cls, action = STEPS[step]
    require(principal, action)
    if not may_act_for(principal, row.requester):
        raise NotPermitted(f"this {principal.role.value} token may not {step.value} requests "
                           f"of {row.requester.site_id!r} ({_site_list(principal)})")
    try:
        status = next_status(row.status, cls.EVENT_TYPE)
    except SupplyTransitionRefused as e:
        raise TransitionRefused(f"supply request {request_id}: {e}") from None
    payload = SupplyStepPayload(request_id=request_id, by=principal.subject,
                                assignee=request.assignee, note=request.note)
    occurred = request.occurred_at or now
    event = new_event(cls, payload, occurred_at=occurred, source=SOURCE, recorded_at=now,
                      exercise=request.exercise,
                      event_id=input_id(namespace, cls.EVENT_TYPE, principal.subject,
                                        request.client_id))
    moved = replace(row, status=status, updated_at=occurred, last_event_id=event.event_id,
                    assignee=request.assignee if step is Step.ASSIGN else row.assignee)
    ack = Acknowledgement(event_id=event.event_id, event_ids=[event.event_id],
                          client_id=request.client_id, request_id=request_id,
                          request_status=status)
    return Effect(202, ack.as_json(), (event,), request=moved)


_REQUEST_ONLY: Final = {"client_id", "occurred_at", "exercise"}


def registration_effect(request: GeneratorRegisterRequest, principal: Principal, *,
                        namespace: str, now: datetime) -> Effect:
    """``generator.registered`` and the registration to store (HQ only)."""
    require(principal, Action.GENERATOR_REGISTER)
    payload = GeneratorRegisteredPayload.model_validate(
        request.model_dump(exclude=_REQUEST_ONLY))
    occurred = request.occurred_at or now
    event = new_event(GeneratorRegistered, payload, occurred_at=occurred, source=SOURCE,
                      recorded_at=now, exercise=request.exercise,
                      event_id=input_id(namespace, GeneratorRegistered.EVENT_TYPE,
                                        principal.subject, request.client_id))
    ack = Acknowledgement(event_id=event.event_id, event_ids=[event.event_id],
                          client_id=request.client_id, generator_id=payload.generator_id,
                          area_id=payload.area_id)
    return Effect(202, ack.as_json(), (event,),
                  registration=Registration(payload, occurred))


def generator_status_effect(request: GeneratorStatusRequest, principal: Principal,
                            current: Current, *, namespace: str, now: datetime) -> Effect:
    """``generator.status_reported`` for a registered generator (404 otherwise), by HQ or
    a field or shelter_staff token whose areas hold it (403 otherwise)."""
    require(principal, Action.GENERATOR_STATUS)
    generator = current.generator
    if generator is None:
        raise UnknownGenerator(f"no generator {request.generator_id!r} is registered")
    if principal.role is not Role.HQ and (
            principal.areas is None or generator.area_id not in principal.areas):
        raise NotPermitted(f"this {principal.role.value} token may not report on generator "
                           f"{generator.generator_id!r} in area {generator.area_id!r} (its "
                           f"areas: {', '.join(sorted(principal.areas or ())) or 'none'})")
    payload = GeneratorStatusReportedPayload.model_validate(
        request.model_dump(exclude=_REQUEST_ONLY))
    occurred = request.occurred_at or now
    event = new_event(GeneratorStatusReported, payload, occurred_at=occurred, source=SOURCE,
                      recorded_at=now, exercise=request.exercise,
                      event_id=input_id(namespace, GeneratorStatusReported.EVENT_TYPE,
                                        principal.subject, request.client_id))
    ack = Acknowledgement(event_id=event.event_id, event_ids=[event.event_id],
                          client_id=request.client_id, generator_id=generator.generator_id,
                          area_id=generator.area_id)
    change = GeneratorStateChange(generator.generator_id, payload.state.value,
                                  payload.fuel_hours_left, occurred)
    return Effect(202, ack.as_json(), (event,), generator_state=change)


def _body_hash(kind: Kind, model: BaseModel, **context: str) -> str:
    return f"{kind}:" + canonical_hash({**context, "body": model.model_dump(mode="json")})


# --- handlers ---------------------------------------------------------------------------


class SupplyPort(Protocol):
    """What the handlers need of the store (:mod:`services.intake.supplies_store`)."""

    namespace: str

    async def apply(self, command: Command, decide: Callable[[Current], Effect], *,
                    request_id: UUID | None = None,
                    generator_id: str | None = None) -> Recorded:
        """Decide ``command`` against its idempotency record; if it is new, read the state
        (the request ``request_id``, the generator ``generator_id``), locked, hand it to
        ``decide`` and write what it returns, all in one transaction."""
        ...

    async def list_requests(self, query: RequestQuery) -> list[SupplyRequestRow]:
        """The requests ``query`` selects, newest first, at most ``query.limit``."""
        ...


class Supplies:
    """The handlers of supply requests and generators (the HTTP routes call these)."""

    def __init__(self, store: SupplyPort, region: Region, *,
                 metrics: IntakeMetrics | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.store = store
        self.namespace = store.namespace
        self.region = region
        self.metrics = metrics or IntakeMetrics()
        self._clock = clock

    async def request(self, principal: Principal, document: Any) -> Answer:
        """A supply request → ``supply.requested`` (201), for a site the token may act for."""
        require(principal, Action.SUPPLY_REQUEST)
        now = self._clock()
        request = self._checked(Kind.SUPPLY_REQUEST, lambda: validate_supply_request(
            document, principal, now))
        if request.exercise:
            require(principal, Action.EXERCISE)
        generator_id = (request.site_id if request.requester_kind is RequesterKind.GENERATOR
                        else None)
        command = Command(Kind.SUPPLY_REQUEST, principal.subject, request.client_id,
                          _body_hash(Kind.SUPPLY_REQUEST, request))
        return await self._apply(command, lambda current: request_effect(
            request, principal, self.region, current, namespace=self.namespace, now=now),
            generator_id=generator_id)

    async def step(self, principal: Principal, request_id: str, step: Step,
                   document: Any) -> Answer:
        """A step of a request → its ``supply.*`` event, if its status allows the step."""
        require(principal, STEPS[step][1])
        try:
            ident = UUID(request_id)
        except ValueError:
            raise UnknownSupplyRequest(f"no supply request {request_id[:100]!r}") from None
        now = self._clock()
        request = self._checked(Kind.SUPPLY_STEP, lambda: validate_step(document, step, now))
        if request.exercise:
            require(principal, Action.EXERCISE)
        command = Command(Kind.SUPPLY_STEP, principal.subject, request.client_id,
                          _body_hash(Kind.SUPPLY_STEP, request, request_id=str(ident),
                                     step=step.value))
        return await self._apply(command, lambda current: step_effect(
            step, request, principal, current, request_id=ident, namespace=self.namespace,
            now=now), request_id=ident)

    async def register_generator(self, principal: Principal, document: Any) -> Answer:
        """A generator's registration → ``generator.registered`` (HQ)."""
        require(principal, Action.GENERATOR_REGISTER)
        now = self._clock()
        request = self._checked(Kind.GENERATOR, lambda: validate_generator(
            document, principal, self.region, now))
        command = Command(Kind.GENERATOR, principal.subject, request.client_id,
                          _body_hash(Kind.GENERATOR, request))
        return await self._apply(command, lambda current: registration_effect(
            request, principal, namespace=self.namespace, now=now),
            generator_id=request.generator_id)

    async def report_generator(self, principal: Principal, generator_id: str,
                               document: Any) -> Answer:
        """A generator's state → ``generator.status_reported``, if it is registered."""
        require(principal, Action.GENERATOR_STATUS)
        now = self._clock()
        request = self._checked(Kind.GENERATOR_STATUS, lambda: validate_generator_status(
            document, generator_id, principal, now))
        if request.exercise:
            require(principal, Action.EXERCISE)
        command = Command(Kind.GENERATOR_STATUS, principal.subject, request.client_id,
                          _body_hash(Kind.GENERATOR_STATUS, request))
        return await self._apply(command, lambda current: generator_status_effect(
            request, principal, current, namespace=self.namespace, now=now),
            generator_id=request.generator_id)

    async def requests(self, principal: Principal, *, site: str | None = None,
                       status: str | None = None) -> Answer:
        """The supply requests ``principal`` may see (``?site=``, ``?status=``)."""
        wanted = None
        if status is not None:
            try:
                wanted = SupplyRequestStatus(status)
            except ValueError:
                raise MalformedInput(
                    "the query parameter 'status' must be one of "
                    + ", ".join(s.value for s in SupplyRequestStatus)) from None
        query = visible_to(principal, site_id=site, status=wanted)
        rows = await self.store.list_requests(replace(query, limit=query.limit + 1))
        listing = SupplyRequestList(requests=[r.view() for r in rows[:query.limit]],
                                    truncated=len(rows) > query.limit)
        return Answer(200, listing.as_json())

    # --- shared ---------------------------------------------------------------------------

    def _checked(self, kind: Kind, validate: Callable[[], _T]) -> _T:
        try:
            return validate()
        except InvalidInput:
            self._count(kind, "invalid")
            raise

    async def _apply(self, command: Command, decide: Callable[[Current], Effect], *,
                     request_id: UUID | None = None,
                     generator_id: str | None = None) -> Answer:
        try:
            recorded = await self.store.apply(command, decide, request_id=request_id,
                                              generator_id=generator_id)
        except InputRefused:
            # Raised by the decision inside the transaction, which rolled back.
            self._count(command.kind, "refused")
            raise
        if recorded.decision is Decision.WRITE:
            self._count(command.kind, "written")
            return Answer(recorded.status_code, dict(recorded.response))
        if recorded.decision is Decision.REPLAY:
            self._count(command.kind, "replayed")
            return Answer(200, dict(recorded.response))
        self._count(command.kind, "conflict")
        return conflict(ClientIdConflict(
            f"client id {command.client_id!r} was already used for a different "
            f"{command.kind.value}; send a new id for a new input"), recorded.response)

    def _count(self, kind: Kind, outcome: str) -> None:
        self.metrics.submissions.labels(kind.value, outcome).inc()
