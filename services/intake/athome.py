"""Residents sheltering at home (在宅避難者) and welfare checks: intake's pure rules.

Two inputs, both on ``people.athome`` (keyed by the area) through the outbox:

- ``POST /v1/people/at-home`` (:class:`~schemas.intake.AtHomeRequest`) becomes
  ``people.at_home_reported``. It comes from a field team or HQ (``via: field``,
  ``reported_by`` the token's subject unless the body names the team) or from the
  residents' form **without a token** (``via: public``, ``reported_by`` null). A
  request without a token is the public form's: its client id must be a UUID (the
  page draws a random one and keeps it until intake acknowledges it, so the id is
  the only thing that ties a resend to its report, and nobody can guess another
  household's), it may not flag drill traffic, and it may not name a reporter.
- ``POST /v1/people/welfare-checks`` (:class:`~schemas.intake.WelfareCheckRequest`)
  becomes ``people.welfare_checked``: a field team of the household's area, or HQ,
  visited a household reported at home.

Ids: the household id is derived from (namespace, scope, client id) where the scope
is the token's subject, or :data:`PUBLIC_SCOPE` for the form (:func:`household_id_for`). A
resend with the same body replays the stored answer; with another body it
**replaces** the report (the contract's rule: "a later report with the same id
replaces it"): one more revision, one more event, whose id is derived from the
household and the revision (:func:`at_home_event`). A welfare check is an ordinary
input: the same client id with another body is a conflict.

State (migration 0013, per namespace): the household's area and latest revision,
so that a welfare check names a household that was reported (404
``unknown_household``) in the area it gives (422 ``/area_id``). Those checks need
the database and are made by :mod:`services.intake.athome_store` in the
transaction that writes; everything here is pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from pydantic import ValidationError

from schemas.envelope import new_event
from schemas.intake import AtHomeRequest, WelfareCheckRequest
from schemas.people import (
    AtHomeReported,
    AtHomeReportedPayload,
    WelfareChecked,
    WelfareCheckedPayload,
)
from schemas.region import Region
from schemas.topics import LIVE
from services.common.auth import Principal, Role
from services.intake.domain import (
    MAX_FUTURE_SKEW,
    SOURCE,
    Action,
    Decision,
    ExistingRequest,
    input_id,
    require,
)
from services.intake.errors import FieldError, InvalidInput, NotPermitted
from services.intake.parsing import field_errors

__all__ = [
    "MAX_PUBLIC_JSON_BYTES",
    "PUBLIC_SCOPE",
    "AtHomeInput",
    "WelfareInput",
    "at_home_event",
    "decide_at_home",
    "household_id_for",
    "validate_at_home",
    "validate_welfare_check",
    "welfare_event",
]

PUBLIC_SCOPE: Final = "(public)"
"""The idempotency scope of the residents' form. A token's scope is its subject, and a
subject cannot contain parentheses (:mod:`services.common.auth`), so no token ever
shares the form's scope."""
MAX_PUBLIC_JSON_BYTES: Final = 16 * 1024
"""Largest body the public form may send: its longest field, the note (2000
characters), is under 8 KiB of UTF-8 even in Japanese."""
_PLACEHOLDER: Final = UUID(int=0)
_UUID: Final = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                          r"[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class AtHomeInput:
    """A validated at-home report: the request, who sent it and the household's id."""

    request: AtHomeRequest
    scope: str
    """The idempotency scope: the token's subject, or :data:`PUBLIC_SCOPE`."""
    household_id: UUID
    payload: AtHomeReportedPayload
    """The event's payload (``via`` and ``reported_by`` filled)."""


@dataclass(frozen=True)
class WelfareInput:
    """A validated welfare check."""

    request: WelfareCheckRequest
    scope: str
    payload: WelfareCheckedPayload


def household_id_for(scope: str, client_id: str, *, namespace: str = LIVE) -> UUID:
    """The household id of a client id sent under ``scope`` (a resend gets the same one)."""
    return input_id(namespace, "people.at_home", scope, client_id)


def _summary(count: int) -> str:
    return f"the input has {count} invalid field{'s' if count != 1 else ''}"


def _future(when: datetime | None, now: datetime) -> list[FieldError]:
    if when is not None and when > now + MAX_FUTURE_SKEW:
        return [FieldError("/occurred_at", f"is {when.isoformat()}, in the future (intake's "
                                           f"clock: {now.isoformat()})", "in_future")]
    return []


def _area(area_id: str, region: Region) -> list[FieldError]:
    if area_id in {d.id for d in region.districts}:
        return []
    return [FieldError("/area_id", f"no area {area_id!r} in region {region.id!r}",
                       "unknown_area")]


def validate_at_home(document: Any, principal: Principal | None, region: Region,
                     now: datetime, *, namespace: str = LIVE) -> AtHomeInput:
    """Validate an at-home report; ``principal`` None is the public form (no token).

    Raises :class:`InvalidInput` naming every bad field, or :class:`NotPermitted`
    (a token whose role may not report, or drill traffic from the public form).
    """
    public = principal is None
    if principal is not None:
        require(principal, Action.AT_HOME)
    if not isinstance(document, dict):
        raise InvalidInput("the body must be a JSON object",
                           errors=[FieldError("", "must be a JSON object")])
    problems = [FieldError(f"/{name}", "is set by intake, not by the client")
                for name in ("household_id", "via") if name in document]
    if public and document.get("reported_by") is not None:
        problems.append(FieldError("/reported_by", "the residents' form names no reporter"))
    prepared: dict[str, Any] = {**document, "household_id": str(_PLACEHOLDER),
                                "via": "public" if public else "field"}
    if principal is not None and "reported_by" not in document:
        prepared["reported_by"] = {"team": principal.subject}
    try:
        request = AtHomeRequest.model_validate(prepared)
    except ValidationError as e:
        errors = [x for x in field_errors(e) if x.pointer not in ("/household_id", "/via")]
        raise InvalidInput(_summary(len(errors) + len(problems)),
                           errors=problems + errors) from None
    if public and not _UUID.fullmatch(request.client_id):
        problems.append(FieldError("/client_id", "from the residents' form must be a UUID "
                                                 "(the page draws a random one)"))
    problems += _future(request.occurred_at, now) + _area(request.area_id, region)
    if problems:
        raise InvalidInput(_summary(len(problems)), errors=problems)
    if request.exercise and public:
        raise NotPermitted("the residents' form may not flag input as exercise (drill) "
                           "traffic")
    if request.exercise:
        assert principal is not None
        require(principal, Action.EXERCISE)
    scope = PUBLIC_SCOPE if principal is None else principal.subject
    household = household_id_for(scope, request.client_id, namespace=namespace)
    data = request.model_dump(exclude={"client_id", "occurred_at", "exercise"})
    payload = AtHomeReportedPayload.model_validate({**data, "household_id": household})
    return AtHomeInput(request, scope, household, payload)


def validate_welfare_check(document: Any, principal: Principal, region: Region,
                           now: datetime) -> WelfareInput:
    """Validate a welfare check: a field team of the area (or HQ) with a visit's outcome."""
    require(principal, Action.WELFARE_CHECK)
    if not isinstance(document, dict):
        raise InvalidInput("the body must be a JSON object",
                           errors=[FieldError("", "must be a JSON object")])
    problems: list[FieldError] = []
    if "checked_by" in document and document["checked_by"] != principal.subject:
        problems.append(FieldError("/checked_by", "is the token's subject; leave it out"))
    prepared = {**document, "checked_by": principal.subject}
    try:
        request = WelfareCheckRequest.model_validate(prepared)
    except ValidationError as e:
        errors = list(field_errors(e))
        raise InvalidInput(_summary(len(errors) + len(problems)),
                           errors=problems + errors) from None
    problems += _future(request.occurred_at, now) + _area(request.area_id, region)
    if problems:
        raise InvalidInput(_summary(len(problems)), errors=problems)
    if principal.role is Role.FIELD and request.area_id not in (principal.areas or ()):
        areas = ", ".join(sorted(principal.areas or ())) or "none"
        raise NotPermitted(f"a field team may record welfare checks in its own areas only "
                           f"({areas}), not in {request.area_id!r}")
    if request.exercise:
        require(principal, Action.EXERCISE)
    data = request.model_dump(exclude={"client_id", "occurred_at", "exercise"})
    return WelfareInput(request, principal.subject, WelfareCheckedPayload.model_validate(data))


def decide_at_home(existing: ExistingRequest | None, body_hash: str) -> Decision:
    """An identical resend replays; anything else writes (a new report, or a replacement)."""
    if existing is not None and existing.body_hash == body_hash:
        return Decision.REPLAY
    return Decision.WRITE


def at_home_event(item: AtHomeInput, revision: int, now: datetime, *,
                  namespace: str = LIVE) -> AtHomeReported:
    """``people.at_home_reported`` for revision ``revision`` (1 for the first report).

    Its id is derived from the household and the revision, so a revision is written
    at most once (the outbox's unique event id), and a report changed back to an
    earlier body is still a new event.
    """
    return new_event(
        AtHomeReported, item.payload, occurred_at=item.request.occurred_at or now,
        source=SOURCE, recorded_at=now, exercise=item.request.exercise,
        event_id=input_id(namespace, "people.at_home_reported", item.scope,
                          item.request.client_id, revision))


def welfare_event(item: WelfareInput, now: datetime, *, namespace: str = LIVE
                  ) -> WelfareChecked:
    """``people.welfare_checked``, its id derived from the sender and the client id."""
    return new_event(
        WelfareChecked, item.payload, occurred_at=item.request.occurred_at or now,
        source=SOURCE, recorded_at=now, exercise=item.request.exercise,
        event_id=input_id(namespace, "people.welfare_checked", item.scope,
                          item.request.client_id))
