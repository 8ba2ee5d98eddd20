"""People: households checked in at shelters, and residents sheltering at home (在宅避難).

Households at shelters (topic ``shelters.updates``, keyed by the shelter, so the
shelter tracker folds them with the shelter's other updates):

- ``shelter.household_checked_in``: a household arrived at a shelter (or at a
  stranded-commuter facility, which the region pack lists as a site too);
- ``shelter.household_checked_out``: it left.

A household is known by its **household code** (:data:`HouseholdCode`), eight
characters of Crockford base32 (no I, L, O, U), printed or shown as a QR code at
check-in so check-out and transfer take seconds. The client that checks a
household in may choose the code (the field client does, offline); otherwise
intake derives it from the client's id, so a resend gets the same code.

A **transfer** is one request to intake that writes two events in one outbox
transaction: ``household_checked_out`` at the source naming ``transferred_to``,
and ``household_checked_in`` at the destination naming ``transferred_from``.
Each shelter applies its half once (per household code and event id), so both
occupancies move once, whatever order the halves arrive in.

Residents at home (topic ``people.athome``, keyed by the area):

- ``people.at_home_reported``: a household sheltering at home, its size and what
  it needs, from the public form (no account) or a field team;
- ``people.welfare_checked``: a field team visited a household that asked for a
  welfare check.

**Personal data.** Fields marked ``personal`` in the JSON Schema
(``json_schema_extra={"personal": True}``, listed in :data:`PERSONAL_FIELDS`)
identify or reach a person: they are visible to HQ and to the staff of the
shelter holding the household, never to the public or to other field teams, and
``sonae people purge`` removes them after the disaster while the counts stay.
Sizes, needs and areas are not personal; they are what HQ counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import AfterValidator, Field, Strict, StringConstraints

from schemas.common import (
    INT_ONLY,
    TEXT_PATTERN,
    UNIQUE_ITEMS,
    ActorId,
    AreaId,
    ContractModel,
    Name,
    Note,
    Reporter,
    ShelterId,
    no_duplicates,
)
from schemas.envelope import Envelope

__all__ = [
    "HOUSEHOLD_CODE_ALPHABET",
    "PERSONAL",
    "PERSONAL_FIELDS",
    "AtHomeNeed",
    "AtHomeReported",
    "AtHomeReportedPayload",
    "Contact",
    "HouseholdCheckedIn",
    "HouseholdCheckedInPayload",
    "HouseholdCheckedOut",
    "HouseholdCheckedOutPayload",
    "HouseholdCode",
    "HouseholdNeed",
    "HouseholdSize",
    "WelfareCheckOutcome",
    "WelfareChecked",
    "WelfareCheckedPayload",
    "household_code_from",
]

PERSONAL: Final[dict[str, Any]] = {"personal": True}
"""``json_schema_extra`` of a personal field (see the module docstring)."""

HOUSEHOLD_CODE_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford base32: no I, L, O or U, so a code read aloud or off paper is unambiguous."""

HouseholdCode = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9A-HJKMNP-TV-Z]{8}$"),
    Field(examples=["7K3M9QXD"]),
]
"""A household's code: eight characters of Crockford base32 (upper case)."""

HouseholdSize = Annotated[int, Strict(), Field(ge=1, le=50)]
"""People in one household, 1..50."""

Contact = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=TEXT_PATTERN),
    Field(json_schema_extra=PERSONAL),
]
"""How to reach a household (a phone number, a room): personal data."""


def household_code_from(value: UUID) -> str:
    """The household code for a derived id: its first 40 bits in Crockford base32."""
    bits = value.int >> (128 - 40)
    return "".join(HOUSEHOLD_CODE_ALPHABET[(bits >> shift) & 31]
                   for shift in range(35, -1, -5))


class HouseholdNeed(StrEnum):
    """What a household at a shelter needs beyond a place (counted for HQ, not personal)."""

    WHEELCHAIR = "wheelchair"
    """Someone uses a wheelchair: step-free space and toilets."""
    MEDICAL_CARE = "medical_care"
    """Someone needs medical care or medication."""
    INFANT = "infant"
    """An infant: milk, nappies, a quiet space."""
    PET = "pet"
    """Arrived with a pet (同行避難)."""
    LANGUAGE = "language"
    """Speaks a language other than Japanese (see ``language``)."""
    DIETARY = "dietary"
    """A dietary requirement (allergy, religious)."""


_HouseholdNeeds = Annotated[
    tuple[HouseholdNeed, ...],
    Field(max_length=len(HouseholdNeed), json_schema_extra=UNIQUE_ITEMS),
    AfterValidator(no_duplicates),
]

LanguageTag = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")]
"""A BCP 47 language tag, e.g. ``en``, ``zh-Hant``, ``vi``."""


class HouseholdCheckedInPayload(ContractModel):
    """A household arrived at a shelter (or a stranded-commuter facility)."""

    shelter_id: ShelterId
    """The site checked in at (region-pack id of a shelter or facility)."""
    household_code: HouseholdCode
    """The household's code (printed / QR); a later check-out names it."""
    size: HouseholdSize
    """People in the household."""
    needs: _HouseholdNeeds = ()
    """What it needs beyond a place."""
    language: LanguageTag | None = None
    """The language it speaks if not Japanese (with the ``language`` need)."""
    name: Annotated[Name | None, Field(json_schema_extra=PERSONAL)] = None
    """The name the household gave (personal data)."""
    contact: Contact | None = None
    """How to reach it (personal data)."""
    transferred_from: ShelterId | None = None
    """For the destination half of a transfer: the shelter it came from."""
    reported_by: Reporter
    """The shelter staff who checked it in."""


class HouseholdCheckedIn(Envelope):
    """A household checked in at a shelter."""

    type: Literal["shelter.household_checked_in"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: HouseholdCheckedInPayload


class HouseholdCheckedOutPayload(ContractModel):
    """A household left a shelter (went home, or was transferred)."""

    shelter_id: ShelterId
    """The site it left."""
    household_code: HouseholdCode
    """The household's code, as checked in."""
    transferred_to: ShelterId | None = None
    """For the source half of a transfer: the shelter it moved to."""
    reported_by: Reporter
    """The shelter staff who checked it out."""


class HouseholdCheckedOut(Envelope):
    """A household checked out of a shelter."""

    type: Literal["shelter.household_checked_out"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: HouseholdCheckedOutPayload


# --- residents sheltering at home ---------------------------------------------------------


class AtHomeNeed(StrEnum):
    """What a household sheltering at home needs."""

    WATER = "water"
    """Drinking water."""
    FOOD = "food"
    """Food."""
    MEDICINE = "medicine"
    """Medicine."""
    MEDICAL_POWER = "medical_power"
    """Power for a medical device (ventilator, oxygen concentrator, …)."""
    WELFARE_CHECK = "welfare_check"
    """Asks for a visit (安否確認): it joins HQ's work list."""


_AtHomeNeeds = Annotated[
    tuple[AtHomeNeed, ...],
    Field(max_length=len(AtHomeNeed), json_schema_extra=UNIQUE_ITEMS),
    AfterValidator(no_duplicates),
]


class AtHomeReportedPayload(ContractModel):
    """A household sheltering at home (在宅避難者), from the public form or a field team."""

    household_id: UUID
    """The report's id (intake derives it from the client's id): a later report with
    the same id replaces it; a welfare check names it."""
    area_id: AreaId
    """The district the household is in."""
    size: HouseholdSize
    """People in the household."""
    needs: _AtHomeNeeds = ()
    """What it needs."""
    contact: Contact | None = None
    """How to reach it, e.g. for the welfare check (personal data)."""
    address: Annotated[Name | None, Field(json_schema_extra=PERSONAL)] = None
    """Where it is (personal data: HQ only, for the visit)."""
    note: Annotated[Note, Field(json_schema_extra=PERSONAL)] = ""
    """Anything else it said (personal data: it may name people)."""
    via: Literal["public", "field"]
    """``public`` from the residents' form, ``field`` from a field team."""
    reported_by: Reporter | None = None
    """The field team, for ``via: field``; null from the public form."""


class AtHomeReported(Envelope):
    """A household sheltering at home said how many they are and what they need."""

    type: Literal["people.at_home_reported"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: AtHomeReportedPayload


class WelfareCheckOutcome(StrEnum):
    """What a welfare-check visit found."""

    SAFE = "safe"
    """Everyone safe; needs as reported."""
    NEEDS_HELP = "needs_help"
    """Help needed (see the note); HQ follows up."""
    NOT_FOUND = "not_found"
    """Nobody answered; the check stays on the list."""
    MOVED_TO_SHELTER = "moved_to_shelter"
    """The household went to a shelter (it checks in there)."""


class WelfareCheckedPayload(ContractModel):
    """A field team visited a household that asked for a welfare check."""

    household_id: UUID
    """The at-home report visited."""
    area_id: AreaId
    """Its district (the topic's key)."""
    outcome: WelfareCheckOutcome
    """What the visit found."""
    note: Annotated[Note, Field(json_schema_extra=PERSONAL)] = ""
    """What the team saw (personal data)."""
    checked_by: ActorId
    """The team's token subject."""


class WelfareChecked(Envelope):
    """A welfare-check visit was made."""

    type: Literal["people.welfare_checked"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: WelfareCheckedPayload


def _personal_fields() -> Mapping[str, frozenset[str]]:
    # Read off the JSON Schema, so the marks the docs show are the ones purged.
    out: dict[str, frozenset[str]] = {}
    for event in (HouseholdCheckedIn, AtHomeReported, WelfareChecked):
        payload = event.model_fields["payload"].annotation
        assert isinstance(payload, type) and issubclass(payload, ContractModel)
        properties = payload.model_json_schema()["properties"]
        out[event.EVENT_TYPE] = frozenset(
            name for name, schema in properties.items() if _is_personal(schema))
    return MappingProxyType(out)


def _is_personal(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    return schema.get("personal") is True or any(
        _is_personal(member) for member in schema.get("anyOf", ()))


PERSONAL_FIELDS: Final = _personal_fields()
"""Event type → the payload fields that are personal data (what a purge removes)."""
