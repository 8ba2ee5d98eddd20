"""JMA message + the region's JMA code table → hazard signals (pure: no I/O, no clock).

:func:`map_message` turns a :class:`~schemas.jma.model.JmaMessage` into
:class:`JmaSignals`: ``hazard.warning`` payloads
(:class:`~schemas.hazards.HazardWarningPayload`), at most one
``hazard.seismic_intensity`` payload, ids a 取消 withdraws, or the reason the
message concerns nothing of the region. The caller (intake, a poller) wraps
payloads in envelopes, with ``exercise`` set from :attr:`JmaSignals.exercise`.

Rules (docs/jma.md has the table per data type):

- **Areas** come only from the table (:mod:`schemas.jma.areas`); a code not in it
  is not about the region. No area of the region → ``ignored`` with the reason.
- **Kind, hazard, level** come from ``kinds.toml`` (:class:`KindTable`).
- **Ids**: one warning per (JMA area, kind family), so an upgrade (注意報 → 警報)
  updates the same warning and a 解除 ends it: ``jma:<area code>:<family>``
  (VPWW), ``jma:landslide:<area code>`` (VXWW50), ``jma:river:<forecast area>``
  (VXKO), ``jma:record-rain:<area>:<EventID>`` (VPOA50),
  ``jma:tsunami:<EventID>:<region>`` (VTSE41); quakes ``jma:quake:<EventID>``.
- **Actions**: Kind/Status 発表 → issued, 継続 → updated, 解除 → cancelled;
  ``Head/InfoType`` 訂正 → every warning updated and ``correction``; 取消 → every
  warning cancelled; a 取消 with nothing to read lists the ids it withdraws in
  ``cancelled_ids`` (the quake; each tsunami region of the table).
- **Status** 訓練 / 試験 → ``exercise`` / ``test``; the payloads are the same, so a
  drill shows exactly what a real message would have done.
- **Times**: ``issued_at`` is ``Head/ReportDateTime`` (UTC). Staleness (an older
  ReportDateTime for the same warning) is the consumer's to judge, by event time.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Slug
from schemas.envelope import derive_id
from schemas.hazards import (
    AreaIntensity,
    Hazard,
    HazardWarningPayload,
    SeismicIntensityPayload,
    Shindo,
    WarningAction,
    WarningOrigin,
    WarningSource,
)
from schemas.jma.areas import JmaAreaTable
from schemas.jma.model import (
    AreaKinds,
    DataType,
    InfoType,
    JmaMessage,
    LandslideBody,
    RecordRainBody,
    RiverFloodBody,
    SeismicBody,
    TsunamiBody,
    WarningBody,
    WarningKind,
)

__all__ = [
    "JmaSignals",
    "KindRule",
    "KindTable",
    "cancellation_warnings",
    "default_kinds",
    "map_message",
    "message_id",
    "origin_of",
    "quake_withdrawals",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KindRule(_Frozen):
    """One row of ``kinds.toml``."""

    names: Annotated[tuple[str, ...], Field(min_length=1)]
    codes: tuple[str, ...] = ()
    kind: Slug
    family: Slug
    hazard: Hazard | None = None
    level: Annotated[int, Field(ge=1, le=5)]
    official: bool = True
    """False: the level is ours, not on JMA's 警戒レベル correspondence."""


class KindTable(_Frozen):
    """``kinds.toml``: the kind rules per data type family."""

    warning: tuple[KindRule, ...]
    river: tuple[KindRule, ...]
    landslide: tuple[KindRule, ...]
    record_rain: tuple[KindRule, ...]
    tsunami: tuple[KindRule, ...]

    def by_name(self, rules: Sequence[KindRule], name: str | None) -> KindRule | None:
        """The rule naming ``name`` exactly."""
        return next((r for r in rules if name in r.names), None)

    def by_prefix(self, rules: Sequence[KindRule], name: str | None) -> KindRule | None:
        """The rule with the longest name that ``name`` starts with."""
        if not name:
            return None
        found = [(len(n), r) for r in rules for n in r.names if name.startswith(n)]
        return max(found, key=lambda pair: pair[0])[1] if found else None

    def by_code(self, rules: Sequence[KindRule], code: str) -> KindRule | None:
        """The rule listing ``code``."""
        return next((r for r in rules if code in r.codes), None)


@cache
def default_kinds() -> KindTable:
    """The kind table shipped in ``schemas/jma/kinds.toml`` (read once)."""
    text = resources.files("schemas.jma").joinpath("kinds.toml").read_text("utf-8")
    return KindTable.model_validate(tomllib.loads(text))


class JmaSignals(_Frozen):
    """What one JMA message means for the region."""

    message_id: str
    """Identity of the message (:func:`message_id`): the idempotency key for intake/poller."""
    data_type: DataType
    info_type: InfoType
    title: str
    """``Head/Title``, e.g. 東京都気象警報・注意報."""
    report_date_time: datetime
    editorial_office: str
    publishing_office: str
    event_id: str
    exercise: bool
    """``Control/Status`` 訓練: record and show, never act on in the live namespace."""
    test: bool
    """``Control/Status`` 試験: a test of JMA's distribution; same handling as exercise."""
    correction: bool
    """``Head/InfoType`` 訂正: the payloads correct what the same ids said before."""
    warnings: tuple[HazardWarningPayload, ...] = ()
    seismic: SeismicIntensityPayload | None = None
    cancelled_ids: tuple[str, ...] = ()
    """Warning or quake ids a 取消 withdraws when its body names nothing itself."""
    headline: str = ""
    """``Head/Headline/Text`` (for VPOA50: where and how much rain was observed)."""
    ignored: str | None = None
    """Why nothing of the message concerns the region (None when something does)."""
    notes: tuple[str, ...] = ()
    """Parts skipped, each with its reason (unknown kind, no intensity value, …)."""


_ID_CHARS = re.compile(r"[^A-Za-z0-9._:@/+-]+")


def _id(*parts: str) -> str:
    # ExternalId allows [A-Za-z0-9._:@/+-]; JMA's EventIDs can hold "_" or Japanese.
    text = ":".join(_ID_CHARS.sub("-", p).strip("-") or "x" for p in parts)
    return text[:200]


def message_id(message: JmaMessage) -> str:
    """A stable identity of one JMA message: ``jma:<uuid5>`` of office, type, event, time, serial.

    The same message fetched twice, or pushed and polled, gets the same id.
    """
    head = message.head
    uuid = derive_id("jma-message", message.control.editorial_office, message.data_type.value,
                     head.title, head.event_id, head.report_date_time.isoformat(),
                     head.serial, head.info_type.value)
    return f"jma:{uuid}"


def origin_of(message: JmaMessage) -> WarningOrigin:
    """The message as a warning's evidence: title, report time, editorial office."""
    return WarningOrigin(title=message.head.title[:200],
                         reported_at=message.head.report_date_time,
                         office=message.control.editorial_office[:200])


def map_message(
    message: JmaMessage, table: JmaAreaTable, kinds: KindTable | None = None
) -> JmaSignals:
    """Map a JMA message to the region's hazard signals (pure)."""
    kinds = kinds or default_kinds()
    ctx = _Context(message, table, kinds)
    body = message.body
    if isinstance(body, WarningBody):
        ctx.area_warnings(body.areas, kinds.warning, family_ids=True)
    elif isinstance(body, LandslideBody):
        ctx.area_warnings(body.areas, kinds.landslide, family_ids=False,
                          overrides=table.landslide_municipalities)
    elif isinstance(body, RiverFloodBody):
        ctx.river(body)
    elif isinstance(body, RecordRainBody):
        ctx.record_rain(body)
    elif isinstance(body, SeismicBody):
        ctx.seismic(body)
    elif isinstance(body, TsunamiBody):
        ctx.tsunami(body)
    elif message.head.info_type is InfoType.CANCELLED:
        ctx.cancel_without_body()
    return ctx.result()


_ISSUED_STATUSES: Final = frozenset({"発表"})
_CONTINUED_STATUSES: Final = frozenset({"継続"})
_ENDED_STATUSES: Final = frozenset({"解除"})


class _Context:
    """Accumulates one message's signals; the per-data-type steps fill it."""

    def __init__(self, message: JmaMessage, table: JmaAreaTable, kinds: KindTable) -> None:
        self.m = message
        self.table = table
        self.kinds = kinds
        self.warnings: list[HazardWarningPayload] = []
        self.seismic_payload: SeismicIntensityPayload | None = None
        self.cancelled: list[str] = []
        self.notes: list[str] = []
        self.ignored: str | None = None

    # --- shared ------------------------------------------------------------

    def _action(self, status: str) -> WarningAction | None:
        info = self.m.head.info_type
        if info is InfoType.CANCELLED:
            return WarningAction.CANCELLED
        if status in _ENDED_STATUSES:
            return WarningAction.CANCELLED
        if info is InfoType.CORRECTED or status in _CONTINUED_STATUSES:
            return WarningAction.UPDATED
        if status in _ISSUED_STATUSES:
            return WarningAction.ISSUED
        return None

    def _payload(self, warning_id: str, action: WarningAction, rule: KindRule, name: str,
                 districts: Iterable[str]) -> HazardWarningPayload:
        return HazardWarningPayload(
            warning_id=warning_id, action=action, kind=rule.kind, name=name[:200],
            hazard=rule.hazard, alert_level_equivalent=rule.level,
            area_ids=tuple(sorted(districts)), issued_at=self.m.head.report_date_time,
            source=WarningSource.JMA, origin=origin_of(self.m),
        )

    # --- VPWW54, VPWW55–61, VXWW50 -------------------------------------------

    def area_warnings(self, items: Sequence[AreaKinds], rules: Sequence[KindRule], *,
                      family_ids: bool,
                      overrides: Mapping[str, tuple[str, ...]] | None = None) -> None:
        # ``overrides``: the districts a data type concerns within a municipality
        # (土砂災害警戒情報: those with 土砂災害警戒区域), else the municipality's.
        areas = {**self.table.municipalities, **(overrides or {})}
        ours = [i for i in items if i.area.code in areas]
        if not ours:
            self.ignored = _no_area(items, "municipalities")
            return
        for item in ours:
            districts = areas[item.area.code]
            chosen: dict[str, tuple[WarningAction, KindRule, WarningKind]] = {}
            for kind in item.kinds:
                name = kind.name
                if family_ids is False and kind.name == "解除":
                    # VXWW50 writes the end as Kind/Name 解除: it ends the 警戒.
                    name, kind = "警戒", kind.model_copy(update={"status": "解除"})
                if name is None or kind.status in ("発表警報・注意報はなし", "なし"):
                    continue
                rule = self.kinds.by_name(rules, name)
                if rule is None:
                    self.notes.append(f"{item.area.code} {item.area.name}: kind {name!r} "
                                      "is not in kinds.toml; skipped")
                    continue
                action = self._action(kind.status)
                if action is None:
                    self.notes.append(f"{item.area.code}: status {kind.status!r} of {name} "
                                      "is not read; skipped")
                    continue
                old = chosen.get(rule.family)
                # One warning per family and area: a kind in force beats one that ended
                # (an upgrade lists the new kind 発表 while the old one is gone).
                if old is None or (old[0] is WarningAction.CANCELLED
                                   and action is not WarningAction.CANCELLED):
                    chosen[rule.family] = (action, rule, kind)
            for family, (action, rule, kind) in chosen.items():
                warning_id = (_id("jma", item.area.code, family) if family_ids
                              else _id("jma", "landslide", item.area.code))
                # VXWW50's kind is just 警戒: the warning's name is the information's own.
                name = (kind.name or rule.names[0]) if family_ids else "土砂災害警戒情報"
                self.warnings.append(self._payload(warning_id, action, rule, name, districts))
        if not self.warnings:
            self.ignored = ("no warning is in force or ended in the region's areas "
                            f"({', '.join(sorted({i.area.code for i in ours}))})")

    # --- VXKO ------------------------------------------------------------------

    def river(self, body: RiverFloodBody) -> None:
        codes = tuple(r.code for r in body.rivers)
        districts = self.table.districts(self.table.rivers, codes)
        area_code = body.forecast_area.code if body.forecast_area else ""
        districts |= self.table.districts(self.table.flood_forecast_areas, (area_code,))
        if not districts:
            listed = ", ".join((area_code, *codes)) if area_code else ", ".join(codes)
            self.ignored = f"no river or forecast area of the region ({listed})"
            return
        name = body.kind.name or ""
        rule = self.kinds.by_prefix(self.kinds.river, name)
        ended = "解除" in name
        if rule is None and not ended:
            self.ignored = f"river forecast kind {name!r} is not in kinds.toml"
            return
        if rule is None:  # a 解除 naming no level: end it at the lowest river level
            rule = min(self.kinds.river, key=lambda r: r.level)
        action = self._action("解除" if ended else "発表")
        assert action is not None
        warning_id = _id("jma", "river", area_code or self.m.head.event_id)
        self.warnings.append(self._payload(warning_id, action, rule, name or rule.names[0],
                                           districts))

    # --- VPOA50 ----------------------------------------------------------------

    def record_rain(self, body: RecordRainBody) -> None:
        ours = [i for i in body.areas if i.area.code in self.table.forecast_regions]
        if not ours:
            self.ignored = _no_area(body.areas, "forecast_regions")
            return
        rule = self.kinds.record_rain[0]
        for item in ours:
            action = self._action("発表")
            assert action is not None
            self.warnings.append(self._payload(
                _id("jma", "record-rain", item.area.code, self.m.head.event_id), action, rule,
                rule.names[0], self.table.forecast_regions[item.area.code]))

    # --- VXSE51 / VXSE53 ---------------------------------------------------------

    def seismic(self, body: SeismicBody) -> None:
        quake_id = _id("jma", "quake", self.m.head.event_id or "unknown")
        if self.m.head.info_type is InfoType.CANCELLED:
            self.cancelled.append(quake_id)
            return
        best: dict[str, Shindo] = {}
        for entry in body.intensities:
            table = (self.table.seismic_areas if entry.level == "area"
                     else self.table.municipalities)
            if entry.code not in table:
                continue
            shindo = _shindo(entry.max_int)
            if shindo is None:
                self.notes.append(f"{entry.code} {entry.name}: intensity {entry.max_int!r} "
                                  "is not a 震度 value; skipped")
                continue
            for district in table[entry.code]:
                if district not in best or shindo.rank > best[district].rank:
                    best[district] = shindo
        if not best:
            self.ignored = ("no intensity is reported for an area of the region"
                            if body.intensities else "the message reports no intensity")
            return
        quake = body.earthquake
        self.seismic_payload = SeismicIntensityPayload(
            quake_id=quake_id,
            magnitude=quake.magnitude if quake and quake.magnitude is not None
            and 0 <= quake.magnitude <= 10 else None,
            epicentre=quake.hypocentre.name[:200] if quake and quake.hypocentre else None,
            intensities=tuple(AreaIntensity(area_id=d, shindo=s) for d, s in sorted(best.items())),
        )

    # --- VTSE41 ----------------------------------------------------------------

    def tsunami(self, body: TsunamiBody) -> None:
        ours = [r for r in body.regions if r.area.code in self.table.tsunami_regions]
        if not ours:
            codes = ", ".join(sorted({r.area.code for r in body.regions})[:20])
            self.ignored = f"no tsunami forecast region of the region ({codes})"
            return
        for region in ours:
            code = region.kind_code
            ended = code in ("50", "60")
            rule = self.kinds.by_code(self.kinds.tsunami, code)
            if ended:
                last = self.kinds.by_name(self.kinds.tsunami, region.last_kind_name)
                rule = last or min(self.kinds.tsunami, key=lambda r: r.level)
            if rule is None:
                self.notes.append(f"{region.area.code} {region.area.name}: {region.kind_name} "
                                  f"(code {code}) carries no warning; skipped")
                continue
            # A region whose last kind was a warning or advisory continues (or changes) it.
            continued = not ended and self.kinds.by_name(
                self.kinds.tsunami, region.last_kind_name) is not None
            action = self._action("解除" if ended else "継続" if continued else "発表")
            assert action is not None
            self.warnings.append(self._payload(
                _id("jma", "tsunami", self.m.head.event_id, region.area.code), action, rule,
                region.kind_name, self.table.tsunami_regions[region.area.code]))
        if not self.warnings:
            self.ignored = "no tsunami warning or advisory for a region of the region"

    # --- 取消 with nothing to read ---------------------------------------------------

    def cancel_without_body(self) -> None:
        event = self.m.head.event_id
        if self.m.data_type in (DataType.VXSE51, DataType.VXSE53):
            self.cancelled.append(_id("jma", "quake", event or "unknown"))
        elif self.m.data_type is DataType.VTSE41:
            self.cancelled.extend(_id("jma", "tsunami", event, code)
                                  for code in sorted(self.table.tsunami_regions))
        if not self.cancelled:
            self.ignored = "a 取消 that names nothing of the region"

    def result(self) -> JmaSignals:
        m = self.m
        something = self.warnings or self.seismic_payload or self.cancelled
        ignored = None if something else (self.ignored or "nothing in the message to map")
        return JmaSignals(
            message_id=message_id(m), data_type=m.data_type, info_type=m.head.info_type,
            title=m.head.title, report_date_time=m.head.report_date_time,
            editorial_office=m.control.editorial_office,
            publishing_office=m.control.publishing_office, event_id=m.head.event_id,
            exercise=m.exercise, test=m.test,
            correction=m.head.info_type is InfoType.CORRECTED,
            warnings=tuple(self.warnings), seismic=self.seismic_payload,
            cancelled_ids=tuple(self.cancelled), headline=m.head.headline,
            ignored=ignored, notes=tuple(self.notes),
        )


_TSUNAMI_ID = re.compile(r"^jma:tsunami:.+:([0-9]{1,20})$")


def cancellation_warnings(signals: JmaSignals, table: JmaAreaTable,
                          kinds: KindTable | None = None) -> tuple[HazardWarningPayload, ...]:
    """The ``cancelled`` warnings for the ids a bodiless 取消 lists (tsunami regions).

    A quake id has no warning to cancel: :func:`quake_withdrawals` withdraws it.
    """
    rule = min((kinds or default_kinds()).tsunami, key=lambda r: r.level)
    origin = WarningOrigin(title=signals.title[:200], reported_at=signals.report_date_time,
                           office=signals.editorial_office[:200])
    out = []
    for warning_id in signals.cancelled_ids:
        match = _TSUNAMI_ID.match(warning_id)
        districts = table.tsunami_regions.get(match.group(1), ()) if match else ()
        if districts:
            out.append(HazardWarningPayload(
                warning_id=warning_id, action=WarningAction.CANCELLED, kind=rule.kind,
                name=f"{rule.names[0]}（取消）"[:200], hazard=rule.hazard,
                alert_level_equivalent=rule.level, area_ids=tuple(sorted(districts)),
                issued_at=signals.report_date_time, source=WarningSource.JMA, origin=origin))
    return tuple(out)


def quake_withdrawals(signals: JmaSignals) -> tuple[SeismicIntensityPayload, ...]:
    """A withdrawal (``withdrawn``, no intensities) for each quake a 取消 withdraws."""
    return tuple(SeismicIntensityPayload(quake_id=quake_id, withdrawn=True, intensities=())
                 for quake_id in signals.cancelled_ids if quake_id.startswith("jma:quake:"))


_SHINDO_BY_TEXT: Final[Mapping[str, Shindo]] = MappingProxyType({s.value: s for s in Shindo})


def _shindo(text: str | None) -> Shindo | None:
    return _SHINDO_BY_TEXT.get((text or "").strip())


def _no_area(items: Sequence[AreaKinds], table_name: str) -> str:
    codes = sorted({i.area.code for i in items})
    shown = ", ".join(codes[:20]) + (" …" if len(codes) > 20 else "")
    return f"no area of the region: none of the message's areas is in {table_name} ({shown})"
