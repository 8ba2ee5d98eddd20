"""Field damage reports: submitted by field teams, then accepted or rejected by intake.

Flow: intake durably records what a team sent as ``report.submitted`` (the
acknowledged input, never lost), validates and enriches it, then emits either
``report.accepted`` (with the area resolved from the position and an
``outside_region`` flag) or ``report.rejected`` (with reasons naming fields).

Schema history of ``report.submitted``: version 1 (the first field-app build)
carried a flat ``lat``/``lon`` pair in the payload; version 2 groups them into
``location: {lat, lon}``. See :mod:`schemas.upcasting`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, Strict, StrictBool, StringConstraints, ValidationInfo, field_validator

from schemas.common import (
    INT_ONLY,
    AreaId,
    ContractModel,
    Count,
    GeoPoint,
    LongText,
    Problem,
    Reporter,
)
from schemas.envelope import Envelope

__all__ = [
    "Casualties",
    "ClientReportId",
    "ReportAccepted",
    "ReportAcceptedPayload",
    "ReportCategory",
    "ReportRejected",
    "ReportRejectedPayload",
    "ReportSubmitted",
    "ReportSubmittedPayload",
    "Severity",
]


class ReportCategory(StrEnum):
    """What kind of damage a field report describes."""

    FIRE = "fire"
    BUILDING_COLLAPSE = "building_collapse"
    FLOODING = "flooding"
    LANDSLIDE = "landslide"
    ROAD_BLOCKED = "road_blocked"
    CASUALTIES = "casualties"
    POWER_OUTAGE = "power_outage"
    WATER_OUTAGE = "water_outage"
    GAS_LEAK = "gas_leak"
    OTHER = "other"


# The field app generates this id before sending so that a retry over a flaky
# connection is recognisable as the same report. A UUID string matches too.
ClientReportId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", max_length=64),
    Field(examples=["0b6c4f2e-6a51-4d0e-9a57-2f1f1c9a7e10"]),
]

Severity = Annotated[int, Strict(), Field(ge=1, le=5)]
"""1 (minor) .. 5 (life-threatening, needs immediate response)."""


class Casualties(ContractModel):
    """People affected at the reported place; all zero when none were seen."""

    injured: Count = 0
    """Injured people."""
    dead: Count = 0
    """Dead people."""
    missing: Count = 0
    """Missing people."""
    trapped: Count = 0
    """People trapped (e.g. under debris or in a flooded building)."""


class ReportSubmittedPayload(ContractModel):
    """A damage report exactly as a field team sent it (schema version 2)."""

    client_report_id: ClientReportId
    """Id generated on the device; a resend with the same id is the same report."""
    category: ReportCategory
    """Kind of damage."""
    severity: Severity
    """1 (minor) .. 5 (life-threatening)."""
    location: GeoPoint | None = None
    """Where, if the device knows its position."""
    area_id: AreaId | None = Field(default=None, validate_default=True)
    """The area (district) the team chose; at least one of location and area_id is required."""
    casualties: Casualties = Casualties()
    """People affected."""
    description: LongText = ""
    """Free text, up to 2000 characters."""
    reporter: Reporter
    """The team (and optionally person) reporting."""

    @field_validator("area_id")
    @classmethod
    def _located(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Checked on area_id (declared after location) so the error names a field.
        # If location itself was invalid it is absent from info.data: one error is enough.
        if value is None and "location" in info.data and info.data["location"] is None:
            raise ValueError("either location or area_id is required")
        return value


class ReportSubmitted(Envelope):
    """A field team submitted a damage report (recorded before it is acknowledged)."""

    type: Literal["report.submitted"]
    schema_version: Annotated[Literal[2], INT_ONLY]
    payload: ReportSubmittedPayload


class ReportAcceptedPayload(ContractModel):
    """A validated report, enriched with the area it belongs to."""

    report_id: UUID
    """Sonae's id for the report (derived from the reporter team and client_report_id)."""
    submitted_event_id: UUID
    """The ``report.submitted`` event this acceptance refers to."""
    report: ReportSubmittedPayload
    """The report as submitted (after upcasting)."""
    outside_region: StrictBool
    """True when the position lies outside every area of the region pack."""
    area_id: AreaId | None = Field(default=None, validate_default=True)
    """Resolved area: the one given, else the one containing the location.

    Null only when outside_region is true."""

    @field_validator("area_id")
    @classmethod
    def _resolved(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("outside_region") is False:
            raise ValueError("area_id is required unless outside_region is true")
        return value


class ReportAccepted(Envelope):
    """Intake accepted a report; downstream rules count it for its area."""

    type: Literal["report.accepted"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: ReportAcceptedPayload


class ReportRejectedPayload(ContractModel):
    """Why a report was refused; sent back to the reporting team."""

    client_report_id: ClientReportId | None = None
    """The device's id, when the input had a readable one."""
    submitted_event_id: UUID | None = None
    """The ``report.submitted`` event, when the input got that far."""
    reasons: Annotated[tuple[Problem, ...], Field(min_length=1, max_length=100)]
    """One entry per problem, each naming the field at fault where there is one."""


class ReportRejected(Envelope):
    """Intake refused a report, with reasons."""

    type: Literal["report.rejected"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: ReportRejectedPayload
