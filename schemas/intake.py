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
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, RootModel, StrictBool

from schemas.common import UtcDatetime
from schemas.hazards import GaugeReadingPayload, HazardWarningPayload, SeismicIntensityPayload
from schemas.people import AtHomeReportedPayload, WelfareCheckedPayload
from schemas.reports import ClientReportId, ReportSubmittedPayload
from schemas.shelters import (
    ShelterClosedPayload,
    ShelterNeedsReportedPayload,
    ShelterOccupancyReportedPayload,
    ShelterOpenedPayload,
)

__all__ = [
    "AtHomeRequest",
    "GaugeReadingRequest",
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
    "WelfareCheckRequest",
]


def _server_filled(*names: str) -> Any:
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
                    prop.get("description", "") + " Not in a request: filled by intake "
                    "(the token's subject, the URL's shelter id, or derived from the "
                    "client id)."
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
