"""Intake's request bodies: the event payloads plus a few request-only fields.

Each body is the ``schemas`` payload model of the event it becomes, extended by
``occurred_at`` (event time, when the device knows it), ``exercise`` (drill
traffic) and a discriminator (``action`` for shelters, ``observation`` for
hazards), so validation, bounds and error paths are exactly those of the
events. They live in the contract layer because two parties use them: intake
validates with them (:mod:`services.intake.domain`) and the field client
(:mod:`services.field_client`) checks an input with the same models before it
queues it. Fields the server fills when absent (``reporter``/``reported_by``,
a shelter's id from the URL) are marked optional in the JSON Schema.

Supply requests, their steps and generators are commands checked against the
state intake keeps (docs/people.md): each body carries its ``client_id``, the
idempotency key, because a resend must never take a step twice.

Households at shelters (``/v1/shelters/{id}/households``, see docs/people.md) carry
their idempotency id in the body (``client_id``, the pattern of a
``client_report_id``): the field client queues them offline and resends them
unchanged, so a resend is always recognisable. A check-in's ``household_code``
is the client's when it chose one (the field client does, to print it offline),
else intake derives it from the client id. :func:`read_household_code` is how both
read a code a person typed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, RootModel, StrictBool

from schemas.common import ContractModel, Name, Note, Reporter, ShelterId, Slug, UtcDatetime
from schemas.hazards import GaugeReadingPayload, HazardWarningPayload, SeismicIntensityPayload
from schemas.people import (
    AtHomeReportedPayload,
    HouseholdCheckedInPayload,
    HouseholdCheckedOutPayload,
    WelfareCheckedPayload,
)
from schemas.reports import ClientReportId, ReportSubmittedPayload
from schemas.shelters import (
    ShelterClosedPayload,
    ShelterNeedsReportedPayload,
    ShelterOccupancyReportedPayload,
    ShelterOpenedPayload,
)
from schemas.supplies import (
    GeneratorRegisteredPayload,
    GeneratorStatusReportedPayload,
    RequesterKind,
    SupplyLine,
    Urgency,
)

__all__ = [
    "AtHomeRequest",
    "ClientId",
    "GaugeReadingRequest",
    "GeneratorRegisterRequest",
    "GeneratorStatusRequest",
    "HazardAnyRequest",
    "HazardObservationRequest",
    "HazardWarningRequest",
    "HouseholdCheckInRequest",
    "HouseholdCheckOutRequest",
    "HouseholdTransferRequest",
    "ReportRequest",
    "SeismicIntensityRequest",
    "ShelterAnyRequest",
    "ShelterCloseRequest",
    "ShelterNeedsRequest",
    "ShelterOccupancyRequest",
    "ShelterOpenRequest",
    "ShelterStatusRequest",
    "SupplyRequestRequest",
    "SupplyStepRequest",
    "WelfareCheckRequest",
    "read_household_code",
]


def _server_filled(*names: str, **how: str) -> Any:
    """JSON Schema hook: fields the server fills when absent are not required on the wire.

    ``how`` says, per field, how intake fills it when that is not the usual (the token's
    subject as team, or the URL's shelter id).
    """

    def hook(schema: dict[str, Any]) -> None:
        required = [n for n in schema.get("required", ()) if n not in names]
        if required:
            schema["required"] = required
        else:
            schema.pop("required", None)
        for name in names:
            prop = schema.get("properties", {}).get(name)
            if prop is not None:
                way = how.get(name, "the token's subject as team, or the URL's shelter id")
                prop["description"] = (
                    prop.get("description", "") + f" Optional in a request: filled by intake "
                    f"({way})."
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


ShelterAnyRequest = (
    ShelterOpenRequest | ShelterCloseRequest | ShelterOccupancyRequest | ShelterNeedsRequest
)
"""Any shelter status request (what :class:`ShelterStatusRequest` holds)."""


class ShelterStatusRequest(
    RootModel[Annotated[ShelterAnyRequest, Field(discriminator="action")]]
):
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


HazardAnyRequest = GaugeReadingRequest | HazardWarningRequest | SeismicIntensityRequest
"""Any hazard observation request (what :class:`HazardObservationRequest` holds)."""


class HazardObservationRequest(
    RootModel[Annotated[HazardAnyRequest, Field(discriminator="observation")]]
):
    """``POST /v1/hazards/observations``: a gauge reading, warning or seismic intensity."""

    model_config = ConfigDict(frozen=True)


# --- supplies and generators ---------------------------------------------------------------

ClientId = ClientReportId
"""The client's id of a command (a ``client_report_id``'s pattern): its idempotency key."""


class SupplyRequestRequest(ContractModel):
    """``POST /v1/supplies/requests``: becomes ``supply.requested``.

    The request id is derived from the client id, and the area from the site (the
    region pack's, or the registered generator's): neither is the client's to say.
    """

    model_config = ConfigDict(json_schema_extra=_server_filled(
        "requested_by", requested_by="the token's subject as team"))

    client_id: ClientId
    """The client's id of the request (a resend with it is the same request)."""
    requester_kind: RequesterKind
    """What the requesting site is."""
    site_id: Slug
    """The site: a region-pack shelter or facility id, or a registered generator's id."""
    lines: Annotated[tuple[SupplyLine, ...], Field(min_length=1, max_length=20)]
    """What is asked for."""
    urgency: Urgency = Urgency.ROUTINE
    """How soon."""
    note: Note = ""
    """Remark from the site."""
    requested_by: Reporter
    """Who asked."""
    occurred_at: UtcDatetime | None = None
    """When the request was made, if the device knows; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic (only roles allowed to flag exercises)."""


class SupplyStepRequest(ContractModel):
    """``POST /v1/supplies/requests/{id}/{assign|dispatch|receive|cancel}``: one step."""

    client_id: ClientId
    """The client's id of the step (a resend with it is the same step)."""
    assignee: Name | None = None
    """``assign`` only, and required there: the team or depot that will deliver."""
    note: Note = ""
    """Remark, e.g. the vehicle, what was short, why it was cancelled."""
    occurred_at: UtcDatetime | None = None
    """When the step was taken; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic."""


class GeneratorRegisterRequest(GeneratorRegisteredPayload):
    """``POST /v1/generators``: becomes ``generator.registered`` (the same id again replaces)."""

    model_config = ConfigDict(json_schema_extra=_server_filled(
        "registered_by", "area_id", registered_by="the token's subject",
        area_id="from the site, when it names one"))

    client_id: ClientId
    """The client's id of the registration."""
    occurred_at: UtcDatetime | None = None
    """When it was registered; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic."""


class GeneratorStatusRequest(GeneratorStatusReportedPayload):
    """``POST /v1/generators/{id}/status``: becomes ``generator.status_reported``."""

    model_config = ConfigDict(json_schema_extra=_server_filled(
        "generator_id", "reported_by", generator_id="the URL's generator id"))

    client_id: ClientId
    """The client's id of the report."""
    occurred_at: UtcDatetime | None = None
    """When the state was observed; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic."""


# --- households at shelters -----------------------------------------------------------


class HouseholdCheckInRequest(HouseholdCheckedInPayload):
    """``POST /v1/shelters/{id}/households``: a household arrives (becomes
    ``shelter.household_checked_in``).

    ``transferred_from`` is intake's (the destination half of a transfer), never the
    client's: a body that sets it is refused, naming the field.
    """

    model_config = ConfigDict(json_schema_extra=_server_filled(
        "shelter_id", "household_code", "reported_by",
        household_code="derived from the token's subject and client_id"))

    client_id: ClientReportId
    """Id generated by the client; a resend with the same id is the same check-in (and, when
    no ``household_code`` is given, gets the same derived code)."""
    occurred_at: UtcDatetime | None = None
    """When the household arrived, if the device knows; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic (only roles allowed to flag exercises)."""


class HouseholdCheckOutRequest(HouseholdCheckedOutPayload):
    """``POST /v1/shelters/{id}/households/{code}/checkout``: a household leaves (becomes
    ``shelter.household_checked_out``); ``transferred_to`` is set by a transfer only."""

    model_config = ConfigDict(json_schema_extra=_server_filled(
        "shelter_id", "household_code", "reported_by",
        household_code="the URL's household code"))

    client_id: ClientReportId
    """Id generated by the client; a resend with the same id is the same check-out."""
    occurred_at: UtcDatetime | None = None
    """When the household left; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic."""


class HouseholdTransferRequest(ContractModel):
    """``POST /v1/shelters/{id}/households/{code}/transfer``: the household moves to ``to``
    (one ``shelter.household_checked_out`` at the source, one
    ``shelter.household_checked_in`` at the destination, in one transaction)."""

    model_config = ConfigDict(json_schema_extra=_server_filled("reported_by"))

    client_id: ClientReportId
    """Id generated by the client; a resend with the same id is the same transfer."""
    to: ShelterId
    """The destination: a shelter (or facility) of the region pack, not the source."""
    reported_by: Reporter
    """The staff who moved it."""
    occurred_at: UtcDatetime | None = None
    """When it moved; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic."""


# Crockford base32 read by a person: case does not matter, O is 0, I and L are 1.
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})


def read_household_code(text: str) -> str:
    """A household code as a person may type it (lower case, O for 0, I or L for 1), in its
    canonical form; anything else comes back upper-cased (and is then no code)."""
    return text.strip().upper().translate(_READ_AS)


# --- residents sheltering at home (POST /v1/people/…) ----------------------------------


class AtHomeRequest(AtHomeReportedPayload):
    """``POST /v1/people/at-home``: a household sheltering at home (becomes
    ``people.at_home_reported``), from the public form (no token) or a field team.

    Intake fills ``household_id`` (derived from ``client_id``, so a resend replaces the
    report or replays its answer), ``via`` (``public`` without a token, ``field`` with
    one) and, for a field team, ``reported_by``.
    """

    model_config = ConfigDict(
        json_schema_extra=_server_filled("household_id", "via", "reported_by"))

    client_id: ClientReportId
    """The sender's id for this household's report (the public form: a random UUID it
    keeps until intake acknowledges it)."""
    occurred_at: UtcDatetime | None = None
    """When the household said so, if the device knows; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic (never from the public form)."""


class WelfareCheckRequest(WelfareCheckedPayload):
    """``POST /v1/people/welfare-checks``: a field team's visit to a household at home
    (becomes ``people.welfare_checked``); ``checked_by`` is the token's subject."""

    model_config = ConfigDict(json_schema_extra=_server_filled("checked_by"))

    client_id: ClientReportId
    """The sender's id for this visit (a resend with the same body replays its answer)."""
    occurred_at: UtcDatetime | None = None
    """When the visit was made; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic."""
