"""Hazard observations: river gauges, official warnings, seismic intensity.

Also home of :class:`Hazard`, the designated-hazard vocabulary shared with the
region pack (which shelter is designated for which hazard) and the evacuation
events (which hazard an order is for).

These events are produced by intake from machine sources (gauge feeds, JMA,
ingested CAP alerts) and from manual entry, and consumed by the evacuation
decision rules. The decision service adds ``hazard.data_quality`` when a gauge
falls silent for longer than its reporting period allows (and when it reports
again), so a silent gauge never silently holds its last level.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    Field,
    Strict,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from schemas.common import (
    INT_ONLY,
    ActorId,
    AreaId,
    AreaIds,
    ContractModel,
    ExternalId,
    GaugeId,
    LongText,
    ShortText,
    Slug,
    UtcDatetime,
)
from schemas.envelope import Envelope

__all__ = [
    "HAZARD_LABELS_JA",
    "SENDER_PATTERN",
    "AreaIntensity",
    "DataQualityStatus",
    "GaugeReading",
    "GaugeReadingPayload",
    "Hazard",
    "HazardDataQuality",
    "HazardDataQualityPayload",
    "HazardWarning",
    "HazardWarningPayload",
    "SeismicIntensity",
    "SeismicIntensityPayload",
    "SenderId",
    "Shindo",
    "WarningAction",
    "WarningOrigin",
    "WarningSource",
    "sender_key",
]


def sender_key(sender: str | None, ident: str) -> str:
    """The key of a sender's warning or quake (the bare id for one without sender).

    Decisions and the picture both key by it, so another sender's update or
    cancellation of the same id is a different warning, not this one.
    """
    # A space occurs in neither a sender nor an id, so keys cannot collide.
    return ident if sender is None else f"{sender} {ident}"


class Hazard(StrEnum):
    """The hazards a shelter or an evacuation order can be designated for.

    These are the seven hazard columns of the national designated-shelter data
    (指定緊急避難場所); the region pack maps each shelter to a subset.
    """

    FLOOD = "flood"
    LANDSLIDE = "landslide"
    STORM_SURGE = "storm_surge"
    EARTHQUAKE = "earthquake"
    TSUNAMI = "tsunami"
    LARGE_FIRE = "large_fire"
    INLAND_FLOOD = "inland_flood"


HAZARD_LABELS_JA: dict[Hazard, str] = {
    Hazard.FLOOD: "洪水",
    Hazard.LANDSLIDE: "崖崩れ、土石流及び地滑り",
    Hazard.STORM_SURGE: "高潮",
    Hazard.EARTHQUAKE: "地震",
    Hazard.TSUNAMI: "津波",
    Hazard.LARGE_FIRE: "大規模な火事",
    Hazard.INLAND_FLOOD: "内水氾濫",
}
"""Official Japanese names of each hazard, as in the designated-shelter data."""


# --- senders -------------------------------------------------------------------

SENDER_PATTERN = r"^[a-z]+:[^\s\x00-\x1f\x7f]{1,200}$"
"""``<kind>:<name>``; the name is any printable text without spaces (JMA's
editorial offices are Japanese names, CAP senders addresses or domains)."""

SenderId = Annotated[
    str,
    StringConstraints(pattern=SENDER_PATTERN, max_length=210),
    Field(examples=["token:gauge-feed", "cap:jma.go.jp", "jma:気象庁本庁"]),
]
"""Who issued a warning or an observation, as intake bound it to the authenticated token:
``token:<subject>`` (a feed or HQ speaking for itself), ``cap:<CAP sender>``,
``jma:<editorial office>``. A warning's or a quake's id is unique per sender."""


# --- river gauges ----------------------------------------------------------


class GaugeReadingPayload(ContractModel):
    """One water-level observation from a river gauge."""

    gauge_id: GaugeId
    """The gauge, as defined in the region pack."""
    # Bounded generously around real river stages (datum-relative levels can be
    # negative) so a unit error (mm sent as m) is refused.
    level_m: Annotated[float, Strict(), Field(ge=-50.0, le=100.0, allow_inf_nan=False)]
    """Water level in metres above the gauge datum."""
    observed_at: UtcDatetime
    """When the gauge measured it (also the envelope's occurred_at)."""


class GaugeReading(Envelope):
    """A river gauge reported a water level."""

    type: Literal["hazard.gauge_reading"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: GaugeReadingPayload


# --- warnings --------------------------------------------------------------


class WarningSource(StrEnum):
    """Where a warning came from."""

    JMA = "jma"
    """Japan Meteorological Agency feed."""
    CAP = "cap"
    """An ingested CAP 1.2 alert from another authority."""
    MANUAL = "manual"
    """Entered by HQ staff."""


class WarningAction(StrEnum):
    """Whether a warning message issues, updates or cancels a warning (CAP msgType)."""

    ISSUED = "issued"
    UPDATED = "updated"
    CANCELLED = "cancelled"


class WarningOrigin(ContractModel):
    """The authority's message a warning was read from, as evidence a person can look up.

    For JMA: ``Head/Title``, ``Head/ReportDateTime`` and ``Control/EditorialOffice``.
    """

    title: ShortText
    """The message's title, e.g. 東京都気象警報・注意報."""
    reported_at: UtcDatetime
    """When the authority reported it (JMA's ReportDateTime)."""
    office: ShortText
    """Who wrote it, e.g. 気象庁本庁."""


class HazardWarningPayload(ContractModel):
    """An official warning or advisory in force for some areas."""

    warning_id: ExternalId
    """Stable id of the warning across its updates (the JMA or CAP id, or a generated one)."""
    action: WarningAction = WarningAction.ISSUED
    """Issue, update or cancellation of the warning."""
    kind: Slug
    """Warning kind, e.g. ``heavy_rain_emergency``, ``landslide_alert``, ``flood_warning``."""
    name: ShortText
    """Official name as issued, e.g. 大雨特別警報 or 土砂災害警戒情報."""
    hazard: Hazard | None = None
    """The designated hazard this warning concerns, when there is one."""
    alert_level_equivalent: Annotated[int, Strict(), Field(ge=1, le=5)]
    """The 5-level alert scale (警戒レベル) equivalent of this warning."""
    area_ids: AreaIds
    """The region-pack areas the warning covers."""
    issued_at: UtcDatetime
    """When the issuing authority issued it."""
    expires_at: UtcDatetime | None = Field(default=None, validate_default=True)
    """When it lapses, if the issuer said."""
    source: WarningSource
    """Where the warning came from."""
    cap_identifier: ExternalId | None = None
    """The CAP ``identifier`` of the message this was ingested from."""
    sender: SenderId | None = None
    """Whose warning this is (intake binds it to the token, see :data:`SenderId`): an
    update or cancellation applies only to the same sender's warning of that id. Null in
    warnings recorded before senders were bound."""
    overridden_by: ActorId | None = None
    """The HQ subject that issued, updated or cancelled this warning for another sender
    (an audited override); null when the sender spoke for itself."""
    origin: WarningOrigin | None = None
    """The message this version was read from (JMA messages); absent for CAP and manual."""

    @field_validator("expires_at")
    @classmethod
    def _expires_after_issue(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        issued = info.data.get("issued_at")
        if value is not None and issued is not None and value <= issued:
            raise ValueError("expires_at must be later than issued_at")
        return value


class HazardWarning(Envelope):
    """A warning was issued, updated or cancelled (JMA, an ingested CAP alert, or manual)."""

    type: Literal["hazard.warning"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: HazardWarningPayload


# --- seismic intensity -----------------------------------------------------


class Shindo(StrEnum):
    """JMA seismic intensity (震度) on its ten-step scale.

    The values are the strings JMA prints; compare with :attr:`rank`, never with
    string order ("5+" sorts before "5-" as text).
    """

    S0 = "0"
    S1 = "1"
    S2 = "2"
    S3 = "3"
    S4 = "4"
    S5_LOWER = "5-"
    S5_UPPER = "5+"
    S6_LOWER = "6-"
    S6_UPPER = "6+"
    S7 = "7"

    @property
    def rank(self) -> int:
        """Position on the scale, 0 (震度0) .. 9 (震度7)."""
        return _SHINDO_ORDER.index(self)


_SHINDO_ORDER: tuple[Shindo, ...] = tuple(Shindo)


class AreaIntensity(ContractModel):
    """The intensity observed or estimated for one area."""

    area_id: AreaId
    """The area."""
    shindo: Shindo
    """Seismic intensity (震度)."""


class SeismicIntensityPayload(ContractModel):
    """Seismic intensity per area for one earthquake."""

    quake_id: ExternalId
    """The earthquake's id (JMA event id); intensity updates for one quake share it."""
    magnitude: Annotated[float, Strict(), Field(ge=0.0, le=10.0, allow_inf_nan=False)] | None = None
    """Magnitude, when known."""
    epicentre: ShortText | None = None
    """Name of the epicentral region as published, e.g. 東京湾."""
    withdrawn: StrictBool = False
    """True when the issuer withdrew what it said of this quake (a JMA 取消): the quake
    and every intensity reported for it no longer count, and ``intensities`` is empty."""
    intensities: Annotated[tuple[AreaIntensity, ...], Field(max_length=500)]
    """Intensity per area; each area at most once; at least one unless withdrawn."""
    sender: SenderId | None = None
    """Who reported it (intake binds it to the token, see :data:`SenderId`): a quake id
    is unique per sender. Null in reports recorded before senders were bound."""
    overridden_by: ActorId | None = None
    """The HQ subject that reported this for another sender (an audited override)."""

    @field_validator("intensities")
    @classmethod
    def _one_per_area(cls, value: tuple[AreaIntensity, ...],
                      info: ValidationInfo) -> tuple[AreaIntensity, ...]:
        withdrawn = info.data.get("withdrawn") is True
        if withdrawn and value:
            raise ValueError("a withdrawal lists no intensities")
        if not withdrawn and not value:
            raise ValueError("at least one intensity is required (unless withdrawn)")
        seen: set[str] = set()
        for item in value:
            if item.area_id in seen:
                raise ValueError(f"area {item.area_id!r} is listed twice")
            seen.add(item.area_id)
        return value


class SeismicIntensity(Envelope):
    """Seismic intensities were reported for an earthquake."""

    type: Literal["hazard.seismic_intensity"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: SeismicIntensityPayload


# --- data quality ----------------------------------------------------------


class DataQualityStatus(StrEnum):
    """Whether a source's data can be relied on."""

    STALE = "stale"
    """Silent for longer than its reporting period allows: its last value is not current."""
    RESTORED = "restored"
    """Reporting again after being stale."""


class HazardDataQualityPayload(ContractModel):
    """A gauge went silent (or came back), judged in event time."""

    gauge_id: GaugeId
    """The gauge, as defined in the region pack."""
    status: DataQualityStatus
    """Stale, or restored."""
    last_observed_at: UtcDatetime
    """When the gauge last measured (for restored: the measurement before the gap)."""
    last_reading_event_id: UUID
    """The ``hazard.gauge_reading`` with that measurement."""
    silent_seconds: Annotated[int, Strict(), Field(ge=0, le=10_000_000)]
    """How long it had been silent, in event time, when this was judged."""
    expected_period_seconds: Annotated[int, Strict(), Field(gt=0, le=10_000_000)]
    """The longest silence the rules allow (reporting period × stale factor)."""
    area_ids: AreaIds
    """The areas whose decisions rely on the gauge."""
    message: Annotated[LongText, Field(min_length=1)]
    """What HQ should know, in words (Japanese)."""


class HazardDataQuality(Envelope):
    """A gauge's data became stale, or was restored (decision service, event time)."""

    type: Literal["hazard.data_quality"]
    schema_version: Annotated[Literal[1], INT_ONLY]
    payload: HazardDataQualityPayload
