"""Supply requests and generators in intake: permissions, the step table, validation (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from schemas.region import load_region
from schemas.supplies import RequesterKind, SupplyLine, SupplyRequestStatus, Urgency
from schemas.topics import LIVE
from services.common.auth import Principal, Role
from services.intake.domain import permitted
from services.intake.errors import (
    InvalidInput,
    NotPermitted,
    TransitionRefused,
    UnknownGenerator,
    UnknownSupplyRequest,
)
from services.intake.openapi import openapi_document
from services.intake.supplies import (
    STEPS,
    Current,
    GeneratorRow,
    Requester,
    RequestQuery,
    Step,
    SupplyRequestRow,
    generator_status_effect,
    may_act_for,
    registration_effect,
    request_effect,
    requester_kinds,
    step_effect,
    validate_generator,
    validate_generator_status,
    validate_step,
    validate_supply_request,
    visible_to,
)

NOW = datetime(2025, 8, 21, 5, 0, tzinfo=UTC)
REGION = load_region()
SHELTERS = [s for s in REGION.sites if s.is_shelter]
KANDA = next(s for s in SHELTERS if s.district_id == "kanda-koen")
KANDA_2 = next(s for s in SHELTERS if s.district_id == "kanda-koen" and s.id != KANDA.id)
FUJIMI = next(s for s in SHELTERS if s.district_id == "fujimi")
EVACUATION_ONLY = next(s for s in REGION.sites if not s.takes_people)
S = SupplyRequestStatus


def who(role: Role, name: str = "kanda-staff", *, areas: tuple[str, ...] | None = None,
        shelters: tuple[str, ...] | None = None) -> Principal:
    if areas is None and role in (Role.FIELD, Role.SHELTER_STAFF):
        areas = ("kanda-koen",)
    return Principal(subject=name, role=role, token_id="t", expires_at=NOW + timedelta(hours=1),
                     areas=None if areas is None else frozenset(areas),
                     shelters=None if shelters is None else frozenset(shelters))


HQ = who(Role.HQ, "hq-duty")
STAFF = who(Role.SHELTER_STAFF)
AT_KANDA = Requester(RequesterKind.SHELTER, KANDA.id, KANDA.id, "kanda-koen")


def row(status: SupplyRequestStatus, requester: Requester = AT_KANDA) -> SupplyRequestRow:
    return SupplyRequestRow(
        request_id=uuid4(), scope="kanda-staff", requester=requester,
        lines=(SupplyLine(item="water", quantity=10),), urgency=Urgency.URGENT, note="",
        requested_by="kanda-staff", status=status, assignee=None, requested_at=NOW,
        updated_at=NOW, last_event_id=uuid4())


def body(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"client_id": "q-1", "requester_kind": "shelter",
                                "site_id": KANDA.id, "lines": [{"item": "water",
                                                                "quantity": 100}]}
    document.update(overrides)
    return document


def take(step: Step, current: SupplyRequestRow | None, principal: Principal = HQ,
         **document: Any) -> Any:
    document = {"client_id": "s-1", **document}
    if step is Step.ASSIGN:
        document.setdefault("assignee", "神田倉庫")
    request = validate_step(document, step, NOW)
    request_id = current.request_id if current is not None else uuid4()
    return step_effect(step, request, principal, Current(request=current),
                       request_id=request_id, namespace=LIVE, now=NOW)


# --- permissions per role and step ---


@pytest.mark.parametrize(("role", "allowed"), [
    (Role.HQ, {Step.ASSIGN, Step.DISPATCH, Step.RECEIVE, Step.CANCEL}),
    (Role.SHELTER_STAFF, {Step.RECEIVE, Step.CANCEL}),
    (Role.FIELD, set()),
    (Role.SENSOR, set()),
    (Role.PUBLIC, set()),
])
def test_each_role_may_take_exactly_its_steps(role: Role, allowed: set[Step]) -> None:
    """Assign and dispatch are HQ's; receive and cancel also the site's staff."""
    assert {s for s, (_, action) in STEPS.items() if permitted(role, action)} == allowed
    for step in Step:
        principal = who(role)
        if step in allowed:
            assert take(step, row(_before(step)), principal).request is not None
        else:
            with pytest.raises(NotPermitted, match="may not"):
                take(step, row(_before(step)), principal)


def _before(step: Step) -> SupplyRequestStatus:
    return {Step.ASSIGN: S.REQUESTED, Step.DISPATCH: S.ASSIGNED, Step.RECEIVE: S.DISPATCHED,
            Step.CANCEL: S.REQUESTED}[step]


def test_staff_act_for_their_shelters_claim_else_their_areas() -> None:
    """The shelters claim narrows; without it every site of the areas; others never."""
    assert may_act_for(STAFF, AT_KANDA)
    at_fujimi = Requester(RequesterKind.SHELTER, FUJIMI.id, FUJIMI.id, "fujimi")
    assert not may_act_for(STAFF, at_fujimi)
    narrow = who(Role.SHELTER_STAFF, shelters=(KANDA_2.id,))
    assert not may_act_for(narrow, AT_KANDA)
    assert may_act_for(narrow, Requester(RequesterKind.SHELTER, KANDA_2.id, KANDA_2.id,
                                         "kanda-koen"))
    loose_generator = Requester(RequesterKind.GENERATOR, "gen-1", None, "kanda-koen")
    assert may_act_for(STAFF, loose_generator) and not may_act_for(narrow, loose_generator)
    assert may_act_for(HQ, at_fujimi) and may_act_for(HQ, loose_generator)
    assert not may_act_for(who(Role.FIELD), AT_KANDA)


def test_receive_and_cancel_need_the_requesting_sites_staff() -> None:
    """Staff of another site may neither receive nor cancel a request (403, naming it)."""
    other = who(Role.SHELTER_STAFF, "fujimi-staff", areas=("fujimi",))
    for step in (Step.RECEIVE, Step.CANCEL):
        with pytest.raises(NotPermitted, match=KANDA.id):
            take(step, row(_before(step)), other)
        assert take(step, row(_before(step)), STAFF).request.status in (S.RECEIVED, S.CANCELLED)


@pytest.mark.parametrize("principal", [
    STAFF, who(Role.SHELTER_STAFF, shelters=(KANDA_2.id,)), who(Role.SHELTER_STAFF,
                                                               areas=("fujimi",))])
def test_a_listing_is_may_act_for_as_a_query(principal: Principal) -> None:
    """Every row the listing's filter admits is one the token may act for, and only those."""
    requesters = [AT_KANDA,
                  Requester(RequesterKind.SHELTER, KANDA_2.id, KANDA_2.id, "kanda-koen"),
                  Requester(RequesterKind.SHELTER, FUJIMI.id, FUJIMI.id, "fujimi"),
                  Requester(RequesterKind.GENERATOR, "gen-1", None, "kanda-koen"),
                  Requester(RequesterKind.GENERATOR, "gen-2", KANDA_2.id, "kanda-koen")]
    query = visible_to(principal)
    for requester in requesters:
        assert _admits(query, requester) == may_act_for(principal, requester), requester
    assert visible_to(HQ) == RequestQuery()
    with pytest.raises(NotPermitted):
        visible_to(who(Role.FIELD))


def _admits(query: RequestQuery, requester: Requester) -> bool:
    # The SQL of services/intake/supplies_store.py's listing, in Python.
    return ((query.host_sites is None or requester.host_site_id in query.host_sites)
            and (query.areas is None or requester.area_id in query.areas))


# --- the step table ---

ALLOWED = {
    (S.REQUESTED, Step.ASSIGN): S.ASSIGNED,
    (S.REQUESTED, Step.CANCEL): S.CANCELLED,
    (S.ASSIGNED, Step.DISPATCH): S.DISPATCHED,
    (S.ASSIGNED, Step.CANCEL): S.CANCELLED,
    (S.DISPATCHED, Step.RECEIVE): S.RECEIVED,
}
"""The request state machine, written out: every other (status, step) is refused."""


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("step", list(Step))
def test_every_step_from_every_status(status: SupplyRequestStatus, step: Step) -> None:
    """Allowed steps move the status; every other is 409 naming both statuses."""
    current = row(status)
    target = {Step.ASSIGN: "assigned", Step.DISPATCH: "dispatched", Step.RECEIVE: "received",
              Step.CANCEL: "cancelled"}[step]
    if (status, step) in ALLOWED:
        effect = take(step, current)
        assert effect.request.status is ALLOWED[(status, step)]
        assert effect.response["request_status"] == ALLOWED[(status, step)].value
        [event] = effect.events
        assert event.type == f"supply.{target}" and event.payload.request_id == \
            current.request_id
    else:
        with pytest.raises(TransitionRefused) as refused:
            take(step, current)
        assert status.value in str(refused.value) and target in str(refused.value)


def test_a_step_of_no_request_is_unknown() -> None:
    """404 for a request id the namespace does not hold."""
    with pytest.raises(UnknownSupplyRequest):
        take(Step.ASSIGN, None)


def test_assign_names_the_assignee_and_only_assign_does() -> None:
    """assign without an assignee, or another step with one: 422 at /assignee."""
    with pytest.raises(InvalidInput) as missing:
        validate_step({"client_id": "s-1"}, Step.ASSIGN, NOW)
    assert [(e.pointer, e.code) for e in missing.value.errors] == [("/assignee", "missing")]
    with pytest.raises(InvalidInput) as extra:
        validate_step({"client_id": "s-1", "assignee": "x"}, Step.RECEIVE, NOW)
    assert [e.pointer for e in extra.value.errors] == ["/assignee"]
    effect = take(Step.ASSIGN, row(S.REQUESTED), assignee="神田倉庫")
    assert effect.request.assignee == "神田倉庫" and effect.events[0].payload.by == "hq-duty"
    later = take(Step.DISPATCH, effect.request)
    assert later.request.assignee == "神田倉庫"


# --- requests: the site, the ids ---


def test_only_sites_that_can_request_do() -> None:
    """A shelter requests as a shelter, a stranded-commuter facility as a facility; an
    evacuation site alone cannot request."""
    assert requester_kinds(KANDA) == {RequesterKind.SHELTER}
    facility = REGION.facilities()[0]
    assert requester_kinds(facility) == {RequesterKind.FACILITY}
    assert requester_kinds(EVACUATION_ONLY) == frozenset()


@pytest.mark.parametrize(("overrides", "pointer", "code"), [
    ({"site_id": "no-such-site"}, "/site_id", "unknown_site"),
    ({"site_id": EVACUATION_ONLY.id}, "/site_id", "cannot_request"),
    ({"requester_kind": "facility"}, "/requester_kind", "wrong_kind"),
    ({"requester_kind": "generator", "site_id": "gen-9"}, "/site_id", "unknown_generator"),
    ({"lines": []}, "/lines", "invalid"),
    ({"lines": [{"item": "water", "quantity": 0}]}, "/lines/0/quantity", "invalid"),
    ({"occurred_at": "2025-08-21T06:00:00Z"}, "/occurred_at", "in_future"),
])
def test_a_bad_request_names_the_field(overrides: dict[str, Any], pointer: str,
                                       code: str) -> None:
    """Each refusal of a request points at the field at fault."""
    with pytest.raises(InvalidInput) as refused:
        request = validate_supply_request(body(**overrides), HQ, NOW)
        request_effect(request, HQ, REGION, Current(), namespace=LIVE, now=NOW)
    # (pydantic also reports a tuple whose only item failed as too short: both are listed)
    first = refused.value.errors[0]
    assert (first.pointer, first.code) == (pointer, code)


def test_a_request_fills_area_and_reporter_and_derives_its_ids_per_namespace() -> None:
    """area from the site, requested_by from the token; drill and live ids differ."""
    request = validate_supply_request(body(), STAFF, NOW)
    live = request_effect(request, STAFF, REGION, Current(), namespace=LIVE, now=NOW)
    again = request_effect(request, STAFF, REGION, Current(), namespace=LIVE, now=NOW)
    drill = request_effect(request, STAFF, REGION, Current(), namespace="drill.x", now=NOW)
    [event] = live.events
    assert event.payload.area_id == "kanda-koen" and event.payload.requested_by.team == \
        "kanda-staff"
    assert live.status_code == 201 and live.request.status is S.REQUESTED
    assert (live.request.request_id, event.event_id) == (again.request.request_id,
                                                         again.events[0].event_id)
    assert live.request.request_id != drill.request.request_id
    assert event.event_id != drill.events[0].event_id
    with pytest.raises(NotPermitted, match=FUJIMI.id):
        request_effect(validate_supply_request(body(site_id=FUJIMI.id), STAFF, NOW), STAFF,
                       REGION, Current(), namespace=LIVE, now=NOW)


def test_a_generators_request_takes_its_area_and_site() -> None:
    """Fuel for a registered generator: its area; its site for the staff check."""
    generator = GeneratorRow("gen-1", KANDA_2.id, "kanda-koen")
    request = validate_supply_request(body(requester_kind="generator", site_id="gen-1"),
                                      STAFF, NOW)
    effect = request_effect(request, STAFF, REGION, Current(generator=generator),
                            namespace=LIVE, now=NOW)
    assert effect.request.requester == Requester(RequesterKind.GENERATOR, "gen-1",
                                                 KANDA_2.id, "kanda-koen")
    narrow = who(Role.SHELTER_STAFF, shelters=(KANDA.id,))
    with pytest.raises(NotPermitted):
        request_effect(request, narrow, REGION, Current(generator=generator), namespace=LIVE,
                       now=NOW)


# --- generators ---


def registration(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"client_id": "g-1", "generator_id": "gen-1", "owner": "町会",
                                "site_id": KANDA.id, "location": {"lat": 35.69, "lon": 139.76},
                                "fuel": "lpg", "rated_kva": 2.0, "runtime_full_hours": 10.0}
    document.update(overrides)
    return document


def test_a_registration_is_hqs_and_takes_its_sites_area() -> None:
    """HQ registers; the area defaults to the site's and must agree with it."""
    request = validate_generator(registration(), HQ, REGION, NOW)
    assert request.area_id == "kanda-koen" and request.registered_by == "hq-duty"
    effect = registration_effect(request, HQ, namespace=LIVE, now=NOW)
    assert effect.registration is not None and effect.events[0].type == "generator.registered"
    with pytest.raises(NotPermitted):
        registration_effect(request, STAFF, namespace=LIVE, now=NOW)
    for document, pointer in ((registration(area_id="fujimi"), "/area_id"),
                              (registration(site_id="nowhere"), "/site_id"),
                              (registration(site_id=None, area_id="nowhere"), "/area_id"),
                              (registration(site_id=None), "/area_id"),
                              (registration(registered_by="someone-else"), "/registered_by")):
        with pytest.raises(InvalidInput) as refused:
            validate_generator(document, HQ, REGION, NOW)
        assert refused.value.errors[0].pointer == pointer, document


def test_a_status_report_needs_the_generator_and_its_area() -> None:
    """404 unregistered; field and staff of its area, and HQ, may report; others 403."""
    generator = GeneratorRow("gen-1", None, "kanda-koen")
    report = {"client_id": "st-1", "state": "fuel_low", "fuel_hours_left": 2.0}
    request = validate_generator_status(report, "gen-1", STAFF, NOW)
    with pytest.raises(UnknownGenerator):
        generator_status_effect(request, HQ, Current(), namespace=LIVE, now=NOW)
    for principal in (HQ, STAFF, who(Role.FIELD)):
        effect = generator_status_effect(request, principal, Current(generator=generator),
                                         namespace=LIVE, now=NOW)
        assert effect.generator_state is not None
        assert effect.generator_state.state == "fuel_low"
    with pytest.raises(NotPermitted, match="kanda-koen"):
        generator_status_effect(request, who(Role.FIELD, areas=("fujimi",)),
                                Current(generator=generator), namespace=LIVE, now=NOW)
    with pytest.raises(InvalidInput) as refused:
        validate_generator_status({**report, "generator_id": "gen-2"}, "gen-1", STAFF, NOW)
    assert refused.value.errors[0].pointer == "/generator_id"


def test_request_ids_are_uuids() -> None:
    """A request id is a UUID derived from its parts (stable across calls)."""
    request = validate_supply_request(body(), STAFF, NOW)
    effect = request_effect(request, STAFF, REGION, Current(), namespace=LIVE, now=NOW)
    assert isinstance(effect.request.request_id, UUID)
    assert effect.response["request_id"] == str(effect.request.request_id)


def test_the_openapi_document_states_the_step_rules() -> None:
    """Each step is an operation answering 404 and 409; only assign requires an assignee."""
    document = openapi_document(REGION)
    schemas = document["components"]["schemas"]
    for step in Step:
        operation = document["paths"][f"/v1/supplies/requests/{{request_id}}/{step.value}"]
        responses = operation["post"]["responses"]
        assert {"202", "200", "403", "404", "409", "422"} <= set(responses), step
        ref = operation["post"]["requestBody"]["content"]["application/json"]["schema"]
        name = ref["$ref"].rsplit("/", 1)[-1]
        has_assignee = "assignee" in schemas[name]["properties"]
        assert has_assignee == (step is Step.ASSIGN)
        assert ("assignee" in schemas[name]["required"]) == (step is Step.ASSIGN)
    assert "201" in document["paths"]["/v1/supplies/requests"]["post"]["responses"]
    assert "404" in document["paths"]["/v1/generators/{generator_id}/status"]["post"][
        "responses"]
