"""The decision rules as data: the model of a region pack's ``rules.toml``.

Every rule names the alert level (警戒レベル 3, 4 or 5) and the hazard it
recommends, and how long its conditions must stay clear before a lift is
recommended (hysteresis). Gauge thresholds are not repeated here: they come
from the pack's gauges (``pack.toml``); the rules only say which threshold means
which level. See docs/evacuation-decision.md for the format with an example.

:func:`load_rules` validates the file with the pack loader (errors name the file
and the field) and then checks what spans the file and the pack (gauge ids,
bank-full levels above the danger level), naming the field the same way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.common import Slug
from schemas.evacuation import OrderLevel
from schemas.hazards import Hazard, Shindo
from schemas.region import (
    THRESHOLD_LEVELS,
    InvalidField,
    Region,
    load_pack_section,
    packs_root,
)
from schemas.reports import ReportCategory, Severity

__all__ = [
    "RULES_FILE",
    "ClusterRule",
    "DataQuality",
    "FloodingObserved",
    "Overtopping",
    "RiverRule",
    "RiverStage",
    "RulesFile",
    "SeismicRule",
    "ShelterChoice",
    "StateRetention",
    "ThresholdName",
    "WarningKindRule",
    "WarningRules",
    "load_rules",
]

RULES_FILE = "rules.toml"
"""The decision rules' file name inside a region pack."""

ThresholdName = Literal["standby", "flood_watch", "evacuation_judgement", "flood_danger"]
"""A gauge threshold of the region pack (``Thresholds`` fields)."""

Minutes = Annotated[int, Field(gt=0, le=30 * 24 * 60)]
"""A duration in minutes, up to 30 days."""


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _auto_only_at_level_5(level: int, auto: bool) -> None:
    if auto and level != 5:
        raise ValueError("auto_issue_level_5 is only allowed on a rule whose level is 5")


class RiverStage(_Rule):
    """A gauge threshold and the level it recommends when the water reaches it."""

    rule_id: Slug
    threshold: ThresholdName
    level: OrderLevel


class Overtopping(_Rule):
    """Level 5 when a gauge reaches the level at which its river overtops (堤防天端高等)."""

    rule_id: Slug = "river-overtopping"
    level: Literal[5] = 5
    #: Gauge id -> level in metres (same datum as the gauge's thresholds).
    bank_full_m: dict[Slug, Annotated[float, Field(allow_inf_nan=False)]] = {}
    auto_issue_level_5: bool = False


class FloodingObserved(_Rule):
    """Level 5 when flooding is reported along a river that is at a high stage."""

    rule_id: Slug = "river-flooding-observed"
    level: Literal[5] = 5
    category: ReportCategory = ReportCategory.FLOODING
    min_severity: Severity = 4
    count: Annotated[int, Field(ge=1, le=1000)] = 1
    window_minutes: Minutes = 60
    #: The gauge must be at or above this threshold for reports to count as river flooding.
    min_threshold: ThresholdName = "flood_danger"
    auto_issue_level_5: bool = False


class RiverRule(_Rule):
    """River gauges: thresholds to levels, for the areas each gauge's flooding affects."""

    hazard: Hazard = Hazard.FLOOD
    stages: Annotated[tuple[RiverStage, ...], Field(min_length=1)]
    #: Lifting needs every affecting gauge below this threshold for lift_after_minutes.
    lift_below: ThresholdName = "flood_watch"
    lift_after_minutes: Minutes = 120
    overtopping: Overtopping | None = None
    flooding_observed: FloodingObserved | None = None

    @model_validator(mode="after")
    def _stages_in_order(self) -> Self:
        seen: set[str] = set()
        previous: RiverStage | None = None
        for stage in sorted(self.stages, key=lambda s: THRESHOLD_LEVELS.index(s.threshold)):
            if stage.threshold in seen:
                raise ValueError(f"threshold {stage.threshold!r} has two stages")
            seen.add(stage.threshold)
            if previous is not None and stage.level <= previous.level:
                raise ValueError(
                    f"stage {stage.rule_id!r} ({stage.threshold}) must recommend a higher level "
                    f"than stage {previous.rule_id!r} ({previous.threshold})"
                )
            previous = stage
        lowest = min(THRESHOLD_LEVELS.index(s.threshold) for s in self.stages)
        if THRESHOLD_LEVELS.index(self.lift_below) >= lowest:
            raise ValueError(
                f"lift_below ({self.lift_below}) must be a lower threshold than every stage's "
                "(hysteresis: an order is lifted only well below the level that triggered it)"
            )
        return self


class WarningKindRule(_Rule):
    """A warning kind (as intake names it) and the level it recommends."""

    kind: Slug
    #: Official name, for people reading the file (the warning event carries its own).
    name: str = ""
    level: OrderLevel
    #: Used when the warning itself names no hazard.
    hazard: Hazard
    rule_id: Slug | None = None
    lift_after_minutes: Minutes | None = None
    auto_issue_level_5: bool = False

    @model_validator(mode="after")
    def _auto(self) -> Self:
        _auto_only_at_level_5(self.level, self.auto_issue_level_5)
        return self

    @property
    def effective_rule_id(self) -> str:
        """The rule id: given, else ``warning-<kind>``."""
        return self.rule_id or f"warning-{self.kind}"[:64]


class WarningRules(_Rule):
    """Warnings (JMA, ingested CAP alerts, manual entry alike) and their level equivalents."""

    kinds: tuple[WarningKindRule, ...] = ()
    #: For a kind not listed: use the warning's own alert_level_equivalent (when it names
    #: a hazard), or ignore it.
    unknown_kinds: Literal["use_equivalent", "ignore"] = "use_equivalent"
    lift_after_minutes: Minutes = 60

    @model_validator(mode="after")
    def _unique_kinds(self) -> Self:
        kinds = [k.kind for k in self.kinds]
        for kind in kinds:
            if kinds.count(kind) > 1:
                raise ValueError(f"kind {kind!r} is listed twice")
        return self


class SeismicRule(_Rule):
    """Seismic intensity in an area at or above ``min_shindo`` recommends a level."""

    rule_id: Slug
    min_shindo: Shindo
    level: OrderLevel
    hazard: Hazard = Hazard.EARTHQUAKE
    #: How long after the quake its intensity counts as a current condition.
    hold_minutes: Minutes = 60
    lift_after_minutes: Minutes = 720
    auto_issue_level_5: bool = False

    @model_validator(mode="after")
    def _auto(self) -> Self:
        _auto_only_at_level_5(self.level, self.auto_issue_level_5)
        return self


class ClusterRule(_Rule):
    """``count`` accepted reports of a category with severity >= ``min_severity`` in one
    area within ``window_minutes`` (event time) recommend a level for a hazard."""

    rule_id: Slug
    category: ReportCategory
    min_severity: Severity
    count: Annotated[int, Field(ge=1, le=1000)]
    window_minutes: Minutes
    level: OrderLevel
    hazard: Hazard
    lift_after_minutes: Minutes = 180
    auto_issue_level_5: bool = False

    @model_validator(mode="after")
    def _auto(self) -> Self:
        _auto_only_at_level_5(self.level, self.auto_issue_level_5)
        return self


class ShelterChoice(_Rule):
    """How shelters are chosen for a recommendation."""

    #: Sites within this distance of an area's boundary count as "near" it.
    near_metres: Annotated[float, Field(ge=0, le=20_000)] = 1000.0
    #: At most this many suggested (or to-open) sites per recommendation.
    max_suggestions: Annotated[int, Field(ge=1, le=50)] = 5


class DataQuality(_Rule):
    """When a source counts as silent."""

    #: A gauge is stale when silent for longer than this many reporting periods.
    stale_factor: Annotated[float, Field(ge=1.0, le=100.0)] = 2.0


class StateRetention(_Rule):
    """How long closed things stay in the decision state (duplicates, late commands)."""

    keep_closed_hours: Annotated[int, Field(ge=1, le=24 * 90)] = 72


class RulesFile(_Rule):
    """A region pack's ``rules.toml``."""

    format_version: Literal[1] = 1
    river: RiverRule | None = None
    warnings: WarningRules = WarningRules()
    seismic: tuple[SeismicRule, ...] = ()
    report_clusters: tuple[ClusterRule, ...] = ()
    shelters: ShelterChoice = ShelterChoice()
    data_quality: DataQuality = DataQuality()
    state: StateRetention = StateRetention()

    @model_validator(mode="after")
    def _unique_rule_ids(self) -> Self:
        ids: list[str] = []
        if self.river is not None:
            ids += [s.rule_id for s in self.river.stages]
            if self.river.overtopping is not None:
                ids.append(self.river.overtopping.rule_id)
            if self.river.flooding_observed is not None:
                ids.append(self.river.flooding_observed.rule_id)
        ids += [k.effective_rule_id for k in self.warnings.kinds]
        ids += [s.rule_id for s in self.seismic]
        ids += [c.rule_id for c in self.report_clusters]
        for rule_id in ids:
            if ids.count(rule_id) > 1:
                raise ValueError(f"rule id {rule_id!r} is used twice; rule ids name a rule")
        shindos = [s.min_shindo for s in self.seismic]
        for shindo in shindos:
            if shindos.count(shindo) > 1:
                raise ValueError(f"two seismic rules for min_shindo {shindo.value!r}")
        return self


_PACK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def _file_label(region_setting: str | Path) -> str:
    # The same label the pack loader puts in its errors, so every error about this
    # file names it alike.
    if isinstance(region_setting, str) and _PACK_NAME.fullmatch(region_setting):
        return str(packs_root().joinpath(region_setting).joinpath(RULES_FILE))
    return str(Path(region_setting) / RULES_FILE)


def load_rules(region_setting: str | Path, region: Region) -> RulesFile:
    """Load and check ``rules.toml`` of the pack ``region_setting`` against ``region``.

    Raises a :class:`~schemas.region.RegionPackError` naming the file and field.
    """
    rules = load_pack_section(region_setting, RULES_FILE, RulesFile)
    file = _file_label(region_setting)
    river = rules.river
    if river is not None:
        used: list[tuple[str, str]] = [(f"river.stages[{i}].threshold", s.threshold)
                                       for i, s in enumerate(river.stages)]
        used.append(("river.lift_below", river.lift_below))
        if river.flooding_observed is not None:
            used.append(("river.flooding_observed.min_threshold",
                         river.flooding_observed.min_threshold))
        for gauge in region.gauges:
            for field, threshold in used:
                if getattr(gauge.thresholds, threshold) is None:
                    raise InvalidField(
                        f"gauge {gauge.id!r} has no {threshold} threshold in pack.toml",
                        file=file, field=field)
    if river is not None and river.overtopping is not None:
        gauges = {g.id: g for g in region.gauges}
        for gauge_id, metres in river.overtopping.bank_full_m.items():
            field = f"river.overtopping.bank_full_m.{gauge_id}"
            named = gauges.get(gauge_id)
            if named is None:
                known = ", ".join(gauges) or "none"
                raise InvalidField(f"unknown gauge {gauge_id!r} (known: {known})",
                                   file=file, field=field)
            if metres <= named.thresholds.flood_danger:
                raise InvalidField(
                    f"bank-full level {metres} m must be above the gauge's flood_danger "
                    f"({named.thresholds.flood_danger} m)", file=file, field=field)
    return rules
