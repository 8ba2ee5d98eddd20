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
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, RootModel, StrictBool, StringConstraints

from schemas.common import ContractModel, Name, Note, Reporter, Slug, UtcDatetime
from schemas.hazards import GaugeReadingPayload, HazardWarningPayload, SeismicIntensityPayload
from schemas.reports import ReportSubmittedPayload
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
    "ClientId",
    "GaugeReadingRequest",
    "GeneratorRegisterRequest",
    "GeneratorStatusRequest",
    "HazardAnyRequest",
    "HazardObservationRequest",
    "HazardWarningRequest",
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
]


_FILLED = "(the token's subject as team, or the URL's shelter id)"


def _server_filled(*names: str, how: str = _FILLED) -> Any:
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
                    prop.get("description", "") + f" Optional in a request: filled by intake "
                    f"{how}."
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

ClientId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", max_length=64),
    Field(examples=["0b6c4f2e-6a51-4d0e-9a57-2f1f1c9a7e10"]),
]
"""The client's id of a command (1-64 of A-Z a-z 0-9 _ -): its idempotency key."""


class SupplyRequestRequest(ContractModel):
    """``POST /v1/supplies/requests``: becomes ``supply.requested``.

    The request id is derived from the client id, and the area from the site (the
    region pack's, or the registered generator's): neither is the client's to say.
    """

    model_config = ConfigDict(json_schema_extra=_server_filled(
        "requested_by", how="(the token's subject as team)"))

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
        "registered_by", "area_id",
        how="(the token's subject; the area from the site, when it names one)"))

    client_id: ClientId
    """The client's id of the registration."""
    occurred_at: UtcDatetime | None = None
    """When it was registered; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic."""


class GeneratorStatusRequest(GeneratorStatusReportedPayload):
    """``POST /v1/generators/{id}/status``: becomes ``generator.status_reported``."""

    model_config = ConfigDict(json_schema_extra=_server_filled(
        "generator_id", "reported_by", how="(the token's subject as team, or the URL's "
                                            "generator id)"))

    client_id: ClientId
    """The client's id of the report."""
    occurred_at: UtcDatetime | None = None
    """When the state was observed; default: when intake received it."""
    exercise: StrictBool = False
    """True for drill traffic."""
