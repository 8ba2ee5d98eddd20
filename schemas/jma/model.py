"""Typed, frozen models of the parts of a JMA message that Sonae reads.

Element names follow JMA's schemas (``jmx.xsd``, ``jmx_ib.xsd``,
``jmx_mete.xsd``, ``jmx_seis.xsd``); :mod:`schemas.jma.read` fills them from a
validated document. Codes stay strings (they have leading zeros: ``011000``),
JMA's Japanese vocabularies stay as JMA writes them (``発表``, ``継続``, ``解除``),
and times keep their offsets as published.

One body model per data type family, a discriminated union on ``type``:

- :class:`WarningBody` — VPWW54 and VPWW55–61 (気象警報・注意報), per municipality;
- :class:`RiverFloodBody` — VXKO 指定河川洪水予報;
- :class:`LandslideBody` — VXWW50 土砂災害警戒情報, per municipality;
- :class:`RecordRainBody` — VPOA50 記録的短時間大雨情報;
- :class:`SeismicBody` — VXSE51 震度速報 and VXSE53 震源・震度に関する情報;
- :class:`TsunamiBody` — VTSE41 津波警報・注意報・予報.

A 取消 usually carries only a text body: then ``body`` is ``None``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "AreaKinds",
    "CodeName",
    "Control",
    "DataType",
    "Earthquake",
    "Head",
    "InfoType",
    "IntensityArea",
    "JmaBody",
    "JmaMessage",
    "JmaStatus",
    "LandslideBody",
    "RecordRainBody",
    "RiverFloodBody",
    "SeismicBody",
    "TsunamiBody",
    "TsunamiRegion",
    "WarningBody",
    "WarningKind",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataType(StrEnum):
    """The data types Sonae reads, by JMA's data type code."""

    VPWW54 = "VPWW54"
    """気象警報・注意報（Ｈ２７）."""
    VPWW55_61 = "VPWW55-61"
    """気象警報・注意報（Ｒ０６）（大雨/土砂災害/高潮/暴風/波浪/大雪/その他注意報）."""
    VXKO = "VXKO"
    """指定河川洪水予報."""
    VXWW50 = "VXWW50"
    """土砂災害警戒情報."""
    VPOA50 = "VPOA50"
    """記録的短時間大雨情報."""
    VXSE51 = "VXSE51"
    """震度速報."""
    VXSE53 = "VXSE53"
    """震源・震度に関する情報."""
    VTSE41 = "VTSE41"
    """津波警報・注意報・予報."""


class JmaStatus(StrEnum):
    """``Control/Status``: whether the message is real, a drill, or a test."""

    NORMAL = "通常"
    EXERCISE = "訓練"
    TEST = "試験"


class InfoType(StrEnum):
    """``Head/InfoType``: what the message does to what its EventID said before."""

    ISSUED = "発表"
    CORRECTED = "訂正"
    CANCELLED = "取消"
    DELAYED = "遅延"


class Control(_Frozen):
    """``Report/Control``: the envelope JMA's distribution system fills in."""

    title: str
    """The message's type name, e.g. 気象警報・注意報（Ｈ２７）."""
    date_time: AwareDatetime
    """When the message was sent (UTC)."""
    status: JmaStatus
    editorial_office: str
    publishing_office: str


class Head(_Frozen):
    """``Report/Head`` (informationBasis1)."""

    title: str
    report_date_time: AwareDatetime
    """When JMA issued the information (the time people refer to)."""
    target_date_time: AwareDatetime | None = None
    event_id: str
    """Identifies the event the message is about; ``""`` when the data type has none."""
    info_type: InfoType
    serial: str
    info_kind: str
    info_kind_version: str
    headline: str
    """``Headline/Text``, whitespace kept as published (line breaks carry meaning)."""


class CodeName(_Frozen):
    """A coded area, river or region: JMA's code and name."""

    code: str
    name: str


class WarningKind(_Frozen):
    """One ``Kind`` of a warning item: a warning or advisory and its status in the area."""

    name: str | None = None
    """E.g. 大雨警報, レベル４大雨危険警報; absent for 発表警報・注意報はなし."""
    code: str | None = None
    status: str
    """発表, 継続, 解除, 発表警報・注意報はなし (warnings); 発表, 継続, 解除, なし (VXWW50)."""
    condition: str | None = None
    """E.g. 土砂災害, 浸水害 for 大雨警報."""
    last_kind_name: str | None = None
    """The kind this one replaced (``LastKind/Name``), when given."""


class AreaKinds(_Frozen):
    """One ``Item`` of a warning: an area and every kind in force (or ended) there."""

    area: CodeName
    kinds: tuple[WarningKind, ...]


class WarningBody(_Frozen):
    """VPWW54/VPWW55–61: the municipality-level ``Warning`` (``…（市町村等）``)."""

    type: Literal["warnings"] = "warnings"
    prefecture: CodeName | None = None
    """The first area of ``Warning type=…（府県予報区等）``: the message's forecast region."""
    areas: tuple[AreaKinds, ...]


class RiverFloodBody(_Frozen):
    """VXKO 指定河川洪水予報, from ``Head/Headline`` (the kind and its coded areas)."""

    type: Literal["river_flood"] = "river_flood"
    kind: WarningKind
    """E.g. 氾濫危険情報 (code 40/41); status is ``発表`` unless the kind is a 解除."""
    forecast_area: CodeName | None
    """The 指定河川洪水予報（予報区域）, e.g. ○○川上流."""
    rivers: tuple[CodeName, ...]
    """The 河川 the forecast covers."""


class LandslideBody(_Frozen):
    """VXWW50 土砂災害警戒情報: per municipality, 警戒 / 解除 / なし."""

    type: Literal["landslide"] = "landslide"
    target_area: CodeName | None
    areas: tuple[AreaKinds, ...]


class RecordRainBody(_Frozen):
    """VPOA50 記録的短時間大雨情報: the areas it is issued for, and what was observed."""

    type: Literal["record_rain"] = "record_rain"
    areas: tuple[AreaKinds, ...]
    observation: str
    """The headline text: where and how much (e.g. 大阪市中央区で１３０ミリ)."""


class Earthquake(_Frozen):
    """``Body/Earthquake``: origin, hypocentre and magnitude, as published."""

    origin_time: datetime | None = None
    hypocentre: CodeName | None = None
    magnitude: float | None = None
    """``jmx_eb:Magnitude``; ``None`` when JMA gives none (NaN, 不明)."""
    magnitude_description: str | None = None


class IntensityArea(_Frozen):
    """An area (地震情報／細分区域) or a city (市町村等) and its maximum intensity."""

    level: Literal["area", "city"]
    code: str
    name: str
    max_int: str | None
    """JMA's value (``1``…``4``, ``5-``, ``5+``, ``6-``, ``6+``, ``7``); ``None`` when not given."""


class SeismicBody(_Frozen):
    """VXSE51/VXSE53: the earthquake (VXSE53) and the intensity per area and city."""

    type: Literal["seismic"] = "seismic"
    earthquake: Earthquake | None = None
    max_int: str | None = None
    intensities: tuple[IntensityArea, ...] = ()


class TsunamiRegion(_Frozen):
    """One ``Tsunami/Forecast/Item``: a 津波予報区 and its kind."""

    area: CodeName
    kind_name: str
    kind_code: str
    last_kind_name: str | None = None


class TsunamiBody(_Frozen):
    """VTSE41: the kind per forecast region."""

    type: Literal["tsunami"] = "tsunami"
    regions: tuple[TsunamiRegion, ...]


JmaBody = Annotated[
    WarningBody | RiverFloodBody | LandslideBody | RecordRainBody | SeismicBody | TsunamiBody,
    Field(discriminator="type"),
]


class JmaMessage(_Frozen):
    """A validated JMA message of a data type Sonae reads."""

    data_type: DataType
    control: Control
    head: Head
    body: JmaBody | None = None
    """``None`` when the body carries nothing to read (a 取消's text, say)."""

    @property
    def exercise(self) -> bool:
        """``Control/Status`` 訓練: a drill message."""
        return self.control.status is JmaStatus.EXERCISE

    @property
    def test(self) -> bool:
        """``Control/Status`` 試験: a test of the distribution system."""
        return self.control.status is JmaStatus.TEST
