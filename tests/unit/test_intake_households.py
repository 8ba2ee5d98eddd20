"""Intake's household rules: who may act where, the bodies, and what each command does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.envelope import new_event
from schemas.intake import read_household_code
from schemas.people import (
    HOUSEHOLD_CODE_ALPHABET,
    HouseholdCheckedIn,
    HouseholdCheckedOut,
    household_code_from,
)
from schemas.region import load_region
from schemas.topics import LIVE
from services.common.auth import Principal, Role
from services.intake.contract import refusal
from services.intake.domain import Action, Kind, input_id, permitted
from services.intake.errors import (
    HouseholdAlreadyCheckedIn,
    InvalidInput,
    NotPermitted,
    SiteNotPermitted,
    UnknownHousehold,
    UnknownShelter,
)
from services.intake.households import (
    accepts_households,
    check_in,
    check_out,
    derived_household_code,
    household_event_id,
    household_site,
    may_act_at,
    require_site,
    transfer,
    validate_check_in,
    validate_check_out,
    validate_transfer,
)
from services.intake.openapi import openapi_document
from services.intake.store import HouseholdRow

NOW = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)
REGION = load_region()
HERE = REGION.shelters_in("kanda-koen")[0]
THERE = REGION.shelters_in("jimbocho")[0]
FAR = next(s for s in REGION.sites if s.is_shelter and s.district_id not in
           {"kanda-koen", "jimbocho"})
EVACUATION_ONLY = next(s for s in REGION.sites if not s.takes_people)
CODE = "7K3M9QXD"


def who(role: Role, name: str = "staff-1", *, areas: set[str] | None = None,
        shelters: set[str] | None = None) -> Principal:
    return Principal(subject=name, role=role, token_id="t", expires_at=NOW + timedelta(hours=1),
                     areas=None if areas is None else frozenset(areas),
                     shelters=None if shelters is None else frozenset(shelters))


STAFF = who(Role.SHELTER_STAFF, areas={"kanda-koen"})


def arrival(shelter: str = HERE.id, at: datetime = NOW, **payload: Any) -> HouseholdCheckedIn:
    body = {"shelter_id": shelter, "household_code": CODE, "size": 3,
            "needs": ["infant", "language"], "language": "vi", "name": "Nguyen",
            "contact": "090-0000-0000", "reported_by": {"team": "staff-1"}, **payload}
    return new_event(HouseholdCheckedIn, body, occurred_at=at, source="intake")


def departure(shelter: str = HERE.id, at: datetime = NOW, **payload: Any) -> HouseholdCheckedOut:
    body = {"shelter_id": shelter, "household_code": CODE, "reported_by": {"team": "staff-1"},
            **payload}
    return new_event(HouseholdCheckedOut, body, occurred_at=at, source="intake")


def row_in(shelter: str = HERE.id, at: datetime = NOW) -> HouseholdRow:
    return check_in(None, arrival(shelter, at)).row


# --- sites and who may act there ---


def test_households_check_in_at_shelters_only() -> None:
    """A shelter and a stranded-commuter facility take households; an evacuation site that
    is neither is 404 for them."""
    assert accepts_households(HERE) and not accepts_households(EVACUATION_ONLY)
    assert accepts_households(REGION.facilities()[0])
    assert household_site(REGION, HERE.id) == HERE
    with pytest.raises(UnknownShelter, match="takes no households"):
        household_site(REGION, EVACUATION_ONLY.id)
    with pytest.raises(UnknownShelter, match="no shelter 'nowhere'"):
        household_site(REGION, "nowhere")


def test_only_shelter_staff_and_hq_may_check_households_in() -> None:
    """The role table: shelter_staff and hq have the households action, no one else."""
    assert permitted(Role.SHELTER_STAFF, Action.HOUSEHOLDS)
    assert permitted(Role.HQ, Action.HOUSEHOLDS)
    for role in (Role.FIELD, Role.SENSOR, Role.PUBLIC):
        assert not permitted(role, Action.HOUSEHOLDS)
    with pytest.raises(NotPermitted, match="field token may not check households"):
        require_site(who(Role.FIELD, areas={"kanda-koen"}), HERE)


def test_staff_act_at_the_sites_of_their_areas_without_a_shelters_claim() -> None:
    """Without a shelters claim, staff act at every shelter of their areas and nowhere else."""
    assert may_act_at(STAFF, HERE)
    assert not may_act_at(STAFF, THERE)
    with pytest.raises(SiteNotPermitted, match="sites of its areas only"):
        require_site(STAFF, THERE)


def test_a_shelters_claim_narrows_staff_to_the_sites_it_names() -> None:
    """With a shelters claim, only those sites, even inside the token's areas."""
    staff = who(Role.SHELTER_STAFF, areas={"kanda-koen", "jimbocho"}, shelters={THERE.id})
    assert may_act_at(staff, THERE)
    assert not may_act_at(staff, HERE)
    with pytest.raises(SiteNotPermitted, match=THERE.id):
        require_site(staff, HERE)


def test_hq_acts_at_every_shelter() -> None:
    """HQ may check households in anywhere."""
    assert all(may_act_at(who(Role.HQ, "hq"), s) for s in (HERE, THERE, FAR))


def test_refusals_answer_with_the_documented_statuses_and_codes() -> None:
    """404 unknown_household, 409 household_checked_in, 403 site_not_permitted."""
    answers = {cls: refusal(cls("x")) for cls in
               (UnknownHousehold, HouseholdAlreadyCheckedIn, SiteNotPermitted)}
    assert {cls: (a.status, a.body["error"]) for cls, a in answers.items()} == {
        UnknownHousehold: (404, "unknown_household"),
        HouseholdAlreadyCheckedIn: (409, "household_checked_in"),
        SiteNotPermitted: (403, "site_not_permitted"),
    }


# --- codes and ids ---


def test_a_derived_code_is_the_same_for_a_resend_and_differs_per_scope_and_namespace() -> None:
    """The code comes from (namespace, subject, client id): stable, never shared with a drill."""
    code = derived_household_code(LIVE, "staff-1", "c-1")
    assert code == derived_household_code(LIVE, "staff-1", "c-1")
    assert code == household_code_from(input_id(LIVE, "household", "staff-1", "c-1"))
    assert code != derived_household_code("tdrill", "staff-1", "c-1")
    assert code != derived_household_code(LIVE, "staff-2", "c-1")


def test_event_ids_differ_per_command_kind() -> None:
    """A check-in and a transfer under one client id never share an event id."""
    ids = {household_event_id(LIVE, kind, HouseholdCheckedIn.EVENT_TYPE, "s", "c-1")
           for kind in (Kind.HOUSEHOLD_CHECK_IN, Kind.HOUSEHOLD_TRANSFER)}
    assert len(ids) == 2


@given(st.text(alphabet=HOUSEHOLD_CODE_ALPHABET, min_size=8, max_size=8))
def test_a_code_typed_in_lower_case_reads_as_itself(code: str) -> None:
    """Case does not matter when a person types a code."""
    assert read_household_code(code.lower()) == code


def test_o_i_and_l_read_as_digits() -> None:
    """Crockford base32: O is 0, I and L are 1."""
    assert read_household_code(" 7kOm9qil ") == "7K0M9Q11"


# --- bodies ---


def test_a_check_in_without_a_code_gets_the_derived_one() -> None:
    """The shelter comes from the URL, the reporter from the token, the code from client_id."""
    request = validate_check_in({"client_id": "c-1", "size": 2}, HERE, STAFF, NOW,
                                namespace=LIVE)
    assert request.household_code == derived_household_code(LIVE, "staff-1", "c-1")
    assert request.shelter_id == HERE.id and request.reported_by.team == "staff-1"


def test_a_check_in_keeps_the_code_the_client_chose() -> None:
    """The field client prints its own code offline; intake keeps it."""
    request = validate_check_in({"client_id": "c-1", "size": 2, "household_code": CODE},
                                HERE, STAFF, NOW, namespace=LIVE)
    assert request.household_code == CODE


@pytest.mark.parametrize(("body", "pointers"), [
    ({"client_id": "bad id!", "size": 0}, {"/client_id", "/size"}),
    ({"size": 2}, {"/client_id"}),
    ({"client_id": "c", "size": 2, "shelter_id": THERE.id}, {"/shelter_id"}),
    ({"client_id": "c", "size": 2, "transferred_from": THERE.id}, {"/transferred_from"}),
    ({"client_id": "c", "size": 2, "needs": ["infant", "infant"]}, {"/needs"}),
    ({"client_id": "c", "size": 2, "household_code": "7K3M9QXU"}, {"/household_code"}),
    ({"client_id": "c", "size": 2, "occurred_at": "2026-12-04T04:00:00Z"}, {"/occurred_at"}),
])
def test_a_bad_check_in_names_each_field(body: dict[str, Any], pointers: set[str]) -> None:
    """Every problem is a field error with its pointer (and never the derived code's)."""
    with pytest.raises(InvalidInput) as caught:
        validate_check_in(body, HERE, STAFF, NOW, namespace=LIVE)
    assert {e.pointer for e in caught.value.errors} == pointers


def test_a_check_out_takes_the_code_from_the_url() -> None:
    """The URL names shelter and household; a body naming others, or a transfer, is refused."""
    request = validate_check_out({"client_id": "c-2"}, HERE, CODE, STAFF, NOW)
    assert (request.shelter_id, request.household_code) == (HERE.id, CODE)
    with pytest.raises(InvalidInput) as caught:
        validate_check_out({"client_id": "c-2", "household_code": "0000AAAA",
                            "transferred_to": THERE.id}, HERE, CODE, STAFF, NOW)
    assert {e.pointer for e in caught.value.errors} == {"/household_code", "/transferred_to"}


@pytest.mark.parametrize(("to", "code"), [
    (HERE.id, "same_shelter"), ("nowhere", "unknown_shelter"),
    (EVACUATION_ONLY.id, "unknown_shelter"),
])
def test_a_transfer_goes_to_another_shelter(to: str, code: str) -> None:
    """A transfer to the same shelter, or to a site that takes no households, names /to."""
    with pytest.raises(InvalidInput) as caught:
        validate_transfer({"client_id": "c-3", "to": to}, HERE, REGION, STAFF, NOW)
    assert [(e.pointer, e.code) for e in caught.value.errors] == [("/to", code)]


def test_a_transfer_may_go_to_a_shelter_the_staff_do_not_run() -> None:
    """The destination is any shelter: the source is what the token must run."""
    request = validate_transfer({"client_id": "c-3", "to": FAR.id}, HERE, REGION, STAFF, NOW)
    assert request.to == FAR.id and not may_act_at(STAFF, FAR)


# --- what each command does ---


def test_a_new_code_checks_in() -> None:
    """A check-in of a code never seen: the row holds what the event says."""
    change = check_in(None, arrival())
    assert change.row.checked_in and change.row.shelter_id == HERE.id
    assert (change.row.size, change.row.needs, change.row.name) == (
        3, ("infant", "language"), "Nguyen")
    assert [e.type for e in change.events] == ["shelter.household_checked_in"]


@pytest.mark.parametrize("shelter", [HERE.id, THERE.id])
def test_a_code_checked_in_cannot_check_in_again(shelter: str) -> None:
    """409 wherever it is in, without saying where else it is."""
    with pytest.raises(HouseholdAlreadyCheckedIn) as caught:
        check_in(row_in(HERE.id), arrival(shelter))
    assert HERE.id not in caught.value.message


def test_a_household_checked_out_may_come_back_but_not_before_it_left() -> None:
    """After a check-out the code checks in again, at an event time after the check-out."""
    left = check_out(row_in(), departure(at=NOW + timedelta(hours=1))).row
    again = check_in(left, arrival(THERE.id, NOW + timedelta(hours=2)))
    assert again.row.checked_in and again.row.shelter_id == THERE.id
    with pytest.raises(InvalidInput) as caught:
        check_in(left, arrival(at=NOW + timedelta(minutes=30)))
    assert [(e.pointer, e.code) for e in caught.value.errors] == [
        ("/occurred_at", "before_check_out")]


def test_a_check_out_leaves_the_row_out() -> None:
    """The row says out, and when (event time)."""
    change = check_out(row_in(), departure(at=NOW + timedelta(hours=1)))
    assert not change.row.checked_in
    assert change.row.checked_out_at == NOW + timedelta(hours=1)


@pytest.mark.parametrize("current", [
    None, row_in(THERE.id),
    check_out(row_in(), departure(at=NOW + timedelta(hours=1))).row,
], ids=["never-seen", "in-elsewhere", "checked-out"])
def test_only_a_household_in_at_that_shelter_checks_out(current: HouseholdRow | None) -> None:
    """404 unknown_household unless checked in at the URL's shelter (no other site named)."""
    with pytest.raises(UnknownHousehold) as caught:
        check_out(current, departure(at=NOW + timedelta(hours=2)))
    assert THERE.id not in caught.value.message


def test_a_check_out_before_the_check_in_is_refused() -> None:
    """The tracker orders a household's events by time: a check-out cannot precede it."""
    with pytest.raises(InvalidInput) as caught:
        check_out(row_in(), departure(at=NOW - timedelta(minutes=1)))
    assert [e.pointer for e in caught.value.errors] == ["/occurred_at"]


def test_a_transfer_writes_both_halves_with_the_same_household() -> None:
    """Checked out at the source naming the destination, checked in there naming the source,
    with size, needs and personal fields carried over, at one event time."""
    later = NOW + timedelta(hours=1)
    change = transfer(row_in(), departure(at=later, transferred_to=THERE.id),
                      arrival_id=input_id(LIVE, "x"), recorded_at=later)
    out, into = change.events
    assert isinstance(out, HouseholdCheckedOut) and isinstance(into, HouseholdCheckedIn)
    assert (out.payload.shelter_id, out.payload.transferred_to) == (HERE.id, THERE.id)
    assert (into.payload.shelter_id, into.payload.transferred_from) == (THERE.id, HERE.id)
    assert (into.payload.size, into.payload.needs, into.payload.language, into.payload.name,
            into.payload.contact) == (3, ("infant", "language"), "vi", "Nguyen",
                                      "090-0000-0000")
    assert into.occurred_at == out.occurred_at == later
    assert into.causation_id == out.event_id and into.event_id == input_id(LIVE, "x")
    assert change.row.shelter_id == THERE.id and change.row.checked_in
    assert change.row.checked_in_at == later


def test_a_transfer_of_a_household_not_in_at_the_source_is_refused() -> None:
    """The source half's rule: 404 unknown_household."""
    with pytest.raises(UnknownHousehold):
        transfer(row_in(THERE.id), departure(transferred_to=FAR.id),
                 arrival_id=input_id(LIVE, "x"), recorded_at=NOW)


# --- the OpenAPI document ---


def test_the_openapi_document_has_the_household_routes() -> None:
    """Three routes, their site enumerated from the sites that take households."""
    document = openapi_document(REGION)
    paths = document["paths"]
    check_in_op = paths["/v1/shelters/{shelter_id}/households"]["post"]
    assert {"201", "200", "403", "404", "409", "422"} <= set(check_in_op["responses"])
    sites = check_in_op["parameters"][0]["schema"]["enum"]
    assert sites == sorted(s.id for s in REGION.sites if accepts_households(s))
    for action in ("checkout", "transfer"):
        op = paths[f"/v1/shelters/{{shelter_id}}/households/{{code}}/{action}"]["post"]
        assert {"202", "200", "404", "409", "422"} <= set(op["responses"])
    schemas = document["components"]["schemas"]
    assert schemas["HouseholdCheckInRequest"]["properties"]["transferred_from"]["readOnly"]
    assert schemas["HouseholdTransferRequest"]["properties"]["to"]["enum"] == sites
