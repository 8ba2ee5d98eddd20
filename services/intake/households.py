"""Households at shelters: check-in, check-out and transfer (docs/people.md).

The rules are pure functions (no I/O, no clock): who may act at which site
(:func:`may_act_at`), which sites take households (:func:`accepts_households`),
validating the bodies (:func:`validate_check_in` and friends) and what a command
does to the household's current row (:func:`check_in`, :func:`check_out`,
:func:`transfer`: the new row and the events, or a refusal). :class:`Households`
is the handler: it runs them and hands the store a
:class:`~services.intake.store.HouseholdWrite`, which decides idempotency, locks
the household's row, applies the rule and writes row, record and outbox rows in
one transaction (:meth:`~services.intake.store.Store.record_household`).

Who (after the role check of :mod:`services.intake.domain`, ``Action.HOUSEHOLDS``):

- ``hq``: at every site that takes households;
- ``shelter_staff``: at the sites of its token's ``shelters`` claim when it has
  one, else at every such site of its ``areas`` (403 ``site_not_permitted``); a
  transfer needs the *source* permitted, the destination may be any shelter.

State (the ``households`` table, per namespace):

- a check-in of a code that is checked in (here or elsewhere) is 409
  ``household_checked_in``; a code checked out before may check in again;
- a check-out or transfer of a code not checked in at the URL's shelter is 404
  ``unknown_household`` (the answer never says where else it is: where a
  household is belongs to the staff holding it and HQ);
- a transfer to the shelter it is at, or to a site that takes no households,
  is 422 naming ``/to``; an event time before the household's check-in (or, for
  a check-in, before its last check-out) is 422 naming ``/occurred_at``, since
  the tracker orders a household's events by event time.

Idempotency: a command's key is (kind, token subject, ``client_id``); a resend is
a replay (200 with the first answer) whatever the household did since, a
different body under the same id is 409 ``conflict``. Event ids derive from the
key, and a check-in without ``household_code`` gets
``household_code_from(input_id(namespace, "household", subject, client_id))``,
so a resend gets the same code and a drill never shares one with live.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from schemas.envelope import new_event
from schemas.intake import (
    HouseholdCheckInRequest,
    HouseholdCheckOutRequest,
    HouseholdTransferRequest,
    read_household_code,
)
from schemas.people import (
    HOUSEHOLD_CODE_ALPHABET,
    HouseholdCheckedIn,
    HouseholdCheckedInPayload,
    HouseholdCheckedOut,
    HouseholdCheckedOutPayload,
    household_code_from,
)
from schemas.region import Region, Site
from schemas.shelters import ShelterClosed
from services.common.auth import Principal, acts_at
from services.intake.contract import (
    Acknowledgement,
    Answer,
    HouseholdList,
    HouseholdView,
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
    HouseholdAlreadyCheckedIn,
    InputRefused,
    InvalidInput,
    SiteNotPermitted,
    UnknownHousehold,
    UnknownShelter,
)
from services.intake.metrics import IntakeMetrics
from services.intake.parsing import field_errors
from services.intake.store import (
    ClosingChange,
    HouseholdChange,
    HouseholdRow,
    HouseholdWrite,
    Recorded,
    Store,
)

__all__ = [
    "Households",
    "accepts_households",
    "check_in",
    "check_out",
    "closing_check_outs",
    "derived_household_code",
    "household_event_id",
    "household_site",
    "may_act_at",
    "require_site",
    "transfer",
    "validate_check_in",
    "validate_check_out",
    "validate_transfer",
]

_CLIENT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_CODE: Final = re.compile(f"[{HOUSEHOLD_CODE_ALPHABET}]{{8}}")


# --- sites and who may act there ----------------------------------------------------


def accepts_households(site: Site) -> bool:
    """Whether households are checked in at ``site``: every site people stay at (a shelter
    or a stranded-commuter facility, :attr:`~schemas.region.Site.takes_people`)."""
    return site.takes_people


def household_site(region: Region, site_id: str) -> Site:
    """The site a URL names, if it takes households; else :class:`UnknownShelter` (404)."""
    try:
        site = region.site(site_id)
    except LookupError:
        raise UnknownShelter(f"no shelter {site_id[:100]!r} in region {region.id!r}") from None
    if not accepts_households(site):
        raise UnknownShelter(f"{site_id!r} takes no households (an evacuation site, not a "
                             "shelter or a stranded-commuter facility)")
    return site


def may_act_at(principal: Principal, site: Site) -> bool:
    """Whether ``principal`` may check households in and out at ``site``."""
    return acts_at(principal, site.id, site.district_id)


def require_site(principal: Principal, site: Site) -> None:
    """:class:`~services.intake.errors.NotPermitted` unless ``principal`` may act at ``site``."""
    require(principal, Action.HOUSEHOLDS)
    if not may_act_at(principal, site):
        where = (f"its shelters ({', '.join(sorted(principal.shelters))})"
                 if principal.shelters is not None else "the sites of its areas")
        raise SiteNotPermitted(f"this shelter_staff token acts at {where} only, not at "
                               f"{site.id!r}")


# --- codes and ids ---------------------------------------------------------------------


def derived_household_code(namespace: str, scope: str, client_id: str) -> str:
    """The code intake gives a check-in that names none (the same for a resend)."""
    return household_code_from(input_id(namespace, "household", scope, client_id))


def household_event_id(namespace: str, kind: Kind, event_type: str, scope: str,
                       client_id: str) -> UUID:
    """The id of an event a household command writes: one per (kind, type, key)."""
    return input_id(namespace, kind.value, event_type, scope, client_id)


# --- validating ------------------------------------------------------------------------


def _readable_client_id(document: Any) -> str | None:
    value = document.get("client_id") if isinstance(document, dict) else None
    return value if isinstance(value, str) and _CLIENT_ID.fullmatch(value) else None


def _summary(count: int) -> str:
    return f"the input has {count} invalid field{'s' if count != 1 else ''}"


def _refuse(problems: list[FieldError]) -> None:
    if problems:
        raise InvalidInput(_summary(len(problems)), errors=problems)


def _check_future(when: datetime | None, now: datetime) -> list[FieldError]:
    if when is not None and when > now + MAX_FUTURE_SKEW:
        return [FieldError("/occurred_at", f"is {when.isoformat()}, in the future (intake's "
                                           f"clock: {now.isoformat()})", "in_future")]
    return []


def _must_match(document: Any, name: str, value: str, where: str) -> list[FieldError]:
    if isinstance(document, dict) and name in document and document[name] != value:
        return [FieldError(f"/{name}", f"does not match the {where} in the URL")]
    return []


def _intake_sets(document: Any, name: str, how: str) -> list[FieldError]:
    if isinstance(document, dict) and document.get(name) is not None:
        return [FieldError(f"/{name}", f"is set by intake ({how}), not by the client")]
    return []


def _with_defaults(document: Any, **defaults: Any) -> Any:
    if not isinstance(document, dict):
        return document
    return {**{k: v for k, v in defaults.items() if v is not None}, **document}


_Request = TypeVar("_Request", bound=BaseModel)


def _validated(model: type[_Request], prepared: Any, *,
               filled: frozenset[str] = frozenset()) -> _Request:
    try:
        return model.model_validate(prepared)
    except ValidationError as e:
        # A field intake fills is missing only because another one (the client id it is
        # derived from) is invalid: that one is named, not this.
        errors = [x for x in field_errors(e)
                  if not (x.code == "missing" and x.pointer.lstrip("/") in filled)]
        raise InvalidInput(_summary(len(errors)), errors=errors) from None


def validate_check_in(document: Any, site: Site, principal: Principal, now: datetime, *,
                      namespace: str) -> HouseholdCheckInRequest:
    """Validate a check-in body for the URL's site (code derived when the body has none)."""
    problems = _must_match(document, "shelter_id", site.id, "shelter id")
    problems += _intake_sets(document, "transferred_from", "the destination half of a "
                                                           "transfer")
    _refuse(problems)
    client_id = _readable_client_id(document)
    code = None if client_id is None else derived_household_code(namespace,
                                                                 principal.subject, client_id)
    prepared = _with_defaults(document, shelter_id=site.id, household_code=code,
                              reported_by={"team": principal.subject})
    request = _validated(HouseholdCheckInRequest, prepared,
                         filled=frozenset({"household_code"}))
    _refuse(_check_future(request.occurred_at, now))
    return request


def validate_check_out(document: Any, site: Site, code: str, principal: Principal,
                       now: datetime) -> HouseholdCheckOutRequest:
    """Validate a check-out body for the URL's site and household code."""
    problems = _must_match(document, "shelter_id", site.id, "shelter id")
    problems += _must_match(document, "household_code", code, "household code")
    problems += _intake_sets(document, "transferred_to", "a transfer, POST …/transfer")
    _refuse(problems)
    prepared = _with_defaults(document, shelter_id=site.id, household_code=code,
                              reported_by={"team": principal.subject})
    request = _validated(HouseholdCheckOutRequest, prepared)
    _refuse(_check_future(request.occurred_at, now))
    return request


def validate_transfer(document: Any, source: Site, region: Region, principal: Principal,
                      now: datetime) -> HouseholdTransferRequest:
    """Validate a transfer body from the URL's site: ``to`` another site taking households."""
    prepared = _with_defaults(document, reported_by={"team": principal.subject})
    request = _validated(HouseholdTransferRequest, prepared)
    problems = _check_future(request.occurred_at, now)
    if request.to == source.id:
        problems.append(FieldError("/to", f"is the shelter the household is at ({source.id!r}); "
                                          "a transfer names another", "same_shelter"))
    else:
        try:
            household_site(region, request.to)
        except UnknownShelter as e:
            problems.append(FieldError("/to", e.message, "unknown_shelter"))
    _refuse(problems)
    return request


# --- what a command does to the household's row ------------------------------------------


def _row(payload: HouseholdCheckedInPayload, at: datetime) -> HouseholdRow:
    return HouseholdRow(
        household_code=payload.household_code, shelter_id=payload.shelter_id,
        size=payload.size, needs=tuple(n.value for n in payload.needs),
        language=payload.language, name=payload.name, contact=payload.contact,
        checked_in=True, checked_in_at=at)


def check_in(current: HouseholdRow | None, arrival: HouseholdCheckedIn) -> HouseholdChange:
    """A household checks in: refused while its code is checked in anywhere."""
    p = arrival.payload
    if current is not None and current.checked_in:
        where = "here" if current.shelter_id == p.shelter_id else "at another site"
        raise HouseholdAlreadyCheckedIn(
            f"household {p.household_code} is checked in {where} already: check it out or "
            "transfer it first (or check in with a new code)")
    if current is not None and current.checked_out_at is not None \
            and arrival.occurred_at < current.checked_out_at:
        raise InvalidInput(_summary(1), errors=[FieldError(
            "/occurred_at", f"is before the household last checked out "
                            f"({current.checked_out_at.isoformat()})", "before_check_out")])
    return HouseholdChange(_row(p, arrival.occurred_at), (arrival,))


def _leaving(current: HouseholdRow | None, departure: HouseholdCheckedOut) -> HouseholdRow:
    p = departure.payload
    if current is None or not current.checked_in or current.shelter_id != p.shelter_id:
        raise UnknownHousehold(f"no household {p.household_code} is checked in at "
                               f"{p.shelter_id!r}")
    if departure.occurred_at < current.checked_in_at:
        raise InvalidInput(_summary(1), errors=[FieldError(
            "/occurred_at", f"is before the household checked in "
                            f"({current.checked_in_at.isoformat()})", "before_check_in")])
    return current


def check_out(current: HouseholdRow | None, departure: HouseholdCheckedOut) -> HouseholdChange:
    """A household leaves: refused unless it is checked in at that shelter."""
    row = _leaving(current, departure)
    return HouseholdChange(
        replace(row, checked_in=False, checked_out_at=departure.occurred_at), (departure,))


def transfer(current: HouseholdRow | None, departure: HouseholdCheckedOut, *,
             arrival_id: UUID, recorded_at: datetime) -> HouseholdChange:
    """A household moves: checked out at the source (``departure``, naming
    ``transferred_to``) and checked in at the destination with the same size, needs and
    personal fields, at the same event time; refused unless it is in at the source."""
    row = _leaving(current, departure)
    p = departure.payload
    if p.transferred_to is None or p.transferred_to == p.shelter_id:
        raise ValueError("a transfer's departure names another shelter in transferred_to")
    arrival = new_event(
        HouseholdCheckedIn,
        HouseholdCheckedInPayload(
            shelter_id=p.transferred_to, household_code=p.household_code, size=row.size,
            needs=row.needs, language=row.language, name=row.name, contact=row.contact,
            transferred_from=p.shelter_id, reported_by=p.reported_by),
        occurred_at=departure.occurred_at, source=SOURCE, recorded_at=recorded_at,
        cause=departure, event_id=arrival_id)
    moved = replace(row, shelter_id=p.transferred_to, checked_in=True,
                    checked_in_at=departure.occurred_at, checked_out_at=None)
    return HouseholdChange(moved, (departure, arrival))


def closing_check_outs(households: Sequence[HouseholdRow], close: ShelterClosed, *,
                       namespace: str, recorded_at: datetime) -> ClosingChange:
    """A shelter closes (stage closed): every household checked in there at the close's
    time is checked out, reported by the closing staff at that time.

    Each check-out's id derives from the close's id and the household code, so a resend
    of the close writes the same events; it is caused by the close (same chain, same
    ``exercise`` flag). A household checked in *after* the close's event time stays in,
    as it does in the shelter tracker (a closing checks out who is in at its time).
    """
    p = close.payload
    rows: list[HouseholdRow] = []
    events: list[HouseholdCheckedOut] = []
    for row in sorted(households, key=lambda r: r.household_code):
        if row.shelter_id != p.shelter_id or not row.checked_in \
                or row.checked_in_at > close.occurred_at:
            continue
        events.append(new_event(
            HouseholdCheckedOut,
            HouseholdCheckedOutPayload(shelter_id=p.shelter_id,
                                       household_code=row.household_code,
                                       reported_by=p.reported_by),
            occurred_at=close.occurred_at, source=SOURCE, recorded_at=recorded_at,
            cause=close,
            event_id=input_id(namespace, HouseholdCheckedOut.EVENT_TYPE, close.event_id,
                              row.household_code)))
        rows.append(replace(row, checked_in=False, checked_out_at=close.occurred_at))
    return ClosingChange(tuple(rows), tuple(events))


# --- the handler -------------------------------------------------------------------------


class Households:
    """Check-in, check-out and transfer: validate, authorise, and record durably."""

    def __init__(self, store: Store, region: Region, *, metrics: IntakeMetrics,
                 clock: Callable[[], datetime]) -> None:
        self.store = store
        self.namespace = store.namespace
        self.region = region
        self.metrics = metrics
        self._clock = clock

    async def check_in(self, principal: Principal, shelter_id: str, document: Any) -> Answer:
        """``shelter.household_checked_in``: 201 with the household code."""
        kind = Kind.HOUSEHOLD_CHECK_IN
        site = household_site(self.region, shelter_id)
        require_site(principal, site)
        now = self._clock()
        request = self._valid(kind, lambda: validate_check_in(
            document, site, principal, now, namespace=self.namespace))
        self._exercise(principal, request.exercise)
        scope = principal.subject
        arrival = new_event(
            HouseholdCheckedIn,
            HouseholdCheckedInPayload.model_validate(
                request.model_dump(exclude={"client_id", "occurred_at", "exercise"})),
            occurred_at=request.occurred_at or now, source=SOURCE, recorded_at=now,
            exercise=request.exercise,
            event_id=household_event_id(self.namespace, kind, HouseholdCheckedIn.EVENT_TYPE,
                                        scope, request.client_id))
        return await self._record(
            kind, scope, request.client_id, request, 201, arrival.payload.household_code, site.id,
            (arrival.event_id,), lambda current: check_in(current, arrival),
            shelters=(site.id,))

    async def check_out(self, principal: Principal, shelter_id: str, code: str,
                        document: Any) -> Answer:
        """``shelter.household_checked_out``: 202."""
        kind = Kind.HOUSEHOLD_CHECK_OUT
        site = household_site(self.region, shelter_id)
        require_site(principal, site)
        code = self._known_code(code, site)
        now = self._clock()
        request = self._valid(kind, lambda: validate_check_out(
            document, site, code, principal, now))
        self._exercise(principal, request.exercise)
        scope = principal.subject
        departure = new_event(
            HouseholdCheckedOut,
            HouseholdCheckedOutPayload.model_validate(
                request.model_dump(exclude={"client_id", "occurred_at", "exercise"})),
            occurred_at=request.occurred_at or now, source=SOURCE, recorded_at=now,
            exercise=request.exercise,
            event_id=household_event_id(self.namespace, kind, HouseholdCheckedOut.EVENT_TYPE,
                                        scope, request.client_id))
        return await self._record(
            kind, scope, request.client_id, request, 202, code, site.id, (departure.event_id,),
            lambda current: check_out(current, departure), shelters=(site.id,))

    async def transfer(self, principal: Principal, shelter_id: str, code: str,
                       document: Any) -> Answer:
        """``household_checked_out`` at the source and ``household_checked_in`` at ``to``,
        in one transaction: 202."""
        kind = Kind.HOUSEHOLD_TRANSFER
        source = household_site(self.region, shelter_id)
        require_site(principal, source)
        code = self._known_code(code, source)
        now = self._clock()
        request = self._valid(kind, lambda: validate_transfer(
            document, source, self.region, principal, now))
        self._exercise(principal, request.exercise)
        scope = principal.subject
        departure = new_event(
            HouseholdCheckedOut,
            HouseholdCheckedOutPayload(shelter_id=source.id, household_code=code,
                                       transferred_to=request.to,
                                       reported_by=request.reported_by),
            occurred_at=request.occurred_at or now, source=SOURCE, recorded_at=now,
            exercise=request.exercise,
            event_id=household_event_id(self.namespace, kind, HouseholdCheckedOut.EVENT_TYPE,
                                        scope, request.client_id))
        arrival_id = household_event_id(self.namespace, kind, HouseholdCheckedIn.EVENT_TYPE,
                                        scope, request.client_id)
        return await self._record(
            kind, scope, request.client_id, request, 202, code, request.to,
            (departure.event_id, arrival_id),
            lambda current: transfer(current, departure, arrival_id=arrival_id,
                                     recorded_at=now),
            extra_hash={"from": source.id, "household_code": code},
            shelters=(source.id, request.to))

    async def listing(self, principal: Principal, shelter_id: str) -> Answer:
        """The households checked in at ``shelter_id`` now (personal data: never cached)."""
        site = household_site(self.region, shelter_id)
        require_site(principal, site)
        rows = await self.store.households_at(site.id)
        listing = HouseholdList(shelter_id=site.id, households=[
            HouseholdView(household_code=r.household_code, size=r.size, needs=list(r.needs),
                          language=r.language, name=r.name, contact=r.contact,
                          checked_in_at=r.checked_in_at)
            for r in rows])
        return Answer(200, listing.as_json(), {"Cache-Control": "no-store"})

    # --- shared ----------------------------------------------------------------------

    def _valid(self, kind: Kind, validate: Callable[[], _Request]) -> _Request:
        try:
            return validate()
        except InputRefused:
            self._count(kind, "invalid")
            raise

    def _exercise(self, principal: Principal, exercise: bool) -> None:
        if exercise:
            require(principal, Action.EXERCISE)

    def _known_code(self, code: str, site: Site) -> str:
        canonical = read_household_code(code)
        if not _CODE.fullmatch(canonical):
            raise UnknownHousehold(f"no household {code[:20]!r} is checked in at {site.id!r} "
                                   "(a code is eight characters of 0-9 and A-Z without "
                                   "I, L, O, U)")
        return canonical

    async def _record(self, kind: Kind, scope: str, client_id: str, request: BaseModel,
                      status: int, code: str, shelter_id: str, event_ids: tuple[UUID, ...],
                      apply: Callable[[HouseholdRow | None], HouseholdChange], *,
                      extra_hash: dict[str, str] | None = None,
                      shelters: tuple[str, ...] = ()) -> Answer:
        ack = Acknowledgement(
            event_id=event_ids[0], event_ids=list(event_ids), client_id=client_id,
            household_code=code, shelter_id=shelter_id).as_json()
        body_hash = canonical_hash({**request.model_dump(mode="json"), **(extra_hash or {})})
        try:
            recorded = await self.store.record_household(HouseholdWrite(
                kind=kind, scope=scope, client_id=client_id, body_hash=f"{kind}:{body_hash}",
                status_code=status, response=ack, household_code=code, event_ids=event_ids,
                apply=apply, shelters=shelters))
        except InputRefused:
            self._count(kind, "refused")
            raise
        return self._answer(kind, recorded, client_id)

    def _answer(self, kind: Kind, recorded: Recorded, client_id: str) -> Answer:
        if recorded.decision is Decision.WRITE:
            self._count(kind, "written")
            return Answer(recorded.status_code, dict(recorded.response))
        if recorded.decision is Decision.REPLAY:
            self._count(kind, "replayed")
            return Answer(200, dict(recorded.response))
        self._count(kind, "conflict")
        return conflict(ClientIdConflict(
            f"client_id {client_id!r} was already used for a different "
            f"{kind.value.replace('_', ' ')}; send a new id for a new input"),
            recorded.response)

    def _count(self, kind: Kind, outcome: str) -> None:
        self.metrics.submissions.labels(kind.value, outcome).inc()
