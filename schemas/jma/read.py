"""Read a validated JMA document into :class:`~schemas.jma.model.JmaMessage`.

The data type is told by ``Control/Title`` (JMA's name of the message type,
the same for every office): see :data:`DATA_TYPES_BY_TITLE`. Any other title is
refused with :class:`~schemas.jma.errors.JmaUnsupported`, after validation, so
a sender learns that the message was valid but is not read.

What is read from each body (element names from ``jmx_mete.xsd`` / ``jmx_seis.xsd``):

- VPWW54, VPWW55–61: ``Body/Warning[@type='気象警報・注意報（市町村等）']/Item``
  → area (``Area/Code``) and each ``Kind`` (``Name``, ``Code``, ``Status``,
  ``Condition``, ``LastKind/Name``); the first area of the ``…（府県予報区等）``
  warning as the message's forecast region;
- VXKO: ``Head/Headline/Information`` of type ``指定河川洪水予報（予報区域）`` (the
  kind and the forecast area) and ``指定河川洪水予報（河川）`` (the rivers);
- VXWW50: ``Body/TargetArea`` and ``Body/Warning[@type='土砂災害警戒情報']/Item``;
- VPOA50: ``Body/Warning/Item`` areas, and ``Head/Headline/Text`` as the observation;
- VXSE51/53: ``Body/Earthquake`` (``OriginTime``, ``Hypocenter/Area``,
  ``jmx_eb:Magnitude``) and ``Body/Intensity/Observation/Pref/Area`` (and ``City``);
- VTSE41: ``Body/Tsunami/Forecast/Item`` (``Area``, ``Category/Kind``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeVar

from schemas.jma.errors import JmaProblem, JmaSchemaInvalid, JmaUnsupported
from schemas.jma.model import (
    AreaKinds,
    CodeName,
    Control,
    DataType,
    Earthquake,
    Head,
    InfoType,
    IntensityArea,
    JmaBody,
    JmaMessage,
    JmaStatus,
    LandslideBody,
    RecordRainBody,
    RiverFloodBody,
    SeismicBody,
    TsunamiBody,
    TsunamiRegion,
    WarningBody,
    WarningKind,
)
from schemas.jma.parse import DEFAULT_MAX_BYTES, DEFAULT_MAX_ELEMENTS, parse_jma

__all__ = ["DATA_TYPES_BY_TITLE", "NS", "data_type_of", "read_jma", "read_report"]

NS: Final = MappingProxyType({
    "jmx": "http://xml.kishou.go.jp/jmaxml1/",
    "ib": "http://xml.kishou.go.jp/jmaxml1/informationBasis1/",
    "mete": "http://xml.kishou.go.jp/jmaxml1/body/meteorology1/",
    "seis": "http://xml.kishou.go.jp/jmaxml1/body/seismology1/",
    "eb": "http://xml.kishou.go.jp/jmaxml1/elementBasis1/",
})
"""The namespaces of JMA's schemas, by the prefixes used here."""

DATA_TYPES_BY_TITLE: Final[Mapping[str, DataType]] = MappingProxyType({
    "気象警報・注意報（Ｈ２７）": DataType.VPWW54,
    "指定河川洪水予報": DataType.VXKO,
    "土砂災害警戒情報": DataType.VXWW50,
    "記録的短時間大雨情報": DataType.VPOA50,
    "震度速報": DataType.VXSE51,
    "震源・震度に関する情報": DataType.VXSE53,
})
"""``Control/Title`` → data type (exact match)."""

# Titles that carry a suffix: the seven R06 warnings (（大雨）, （土砂災害）, …) and
# the tsunami message, whose title JMA publishes with a trailing "a".
_TITLE_PREFIXES: Final = (
    ("気象警報・注意報（Ｒ０６）", DataType.VPWW55_61),
    ("津波警報・注意報・予報", DataType.VTSE41),
)

_NS = dict(NS)
_E = TypeVar("_E", bound=StrEnum)


def data_type_of(control_title: str) -> DataType | None:
    """The data type of a message by its ``Control/Title``, or None if Sonae does not read it."""
    title = control_title.strip()
    if title in DATA_TYPES_BY_TITLE:
        return DATA_TYPES_BY_TITLE[title]
    for prefix, data_type in _TITLE_PREFIXES:
        if title.startswith(prefix):
            return data_type
    return None


def read_jma(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> JmaMessage:
    """Parse, validate and read a JMA message (bytes) into a :class:`JmaMessage`.

    Raises a :class:`~schemas.jma.errors.JmaError` subclass when it is refused.
    """
    return read_report(parse_jma(data, max_bytes=max_bytes, max_elements=max_elements))


def read_report(root: Any) -> JmaMessage:
    """Read an already validated ``Report`` element (from :func:`parse_jma`)."""
    control = Control(
        title=_text(root, "jmx:Control/jmx:Title"),
        date_time=_time(_text(root, "jmx:Control/jmx:DateTime")),
        status=_vocabulary(JmaStatus, _text(root, "jmx:Control/jmx:Status"),
                           "/Report/Control/Status"),
        editorial_office=_text(root, "jmx:Control/jmx:EditorialOffice"),
        publishing_office=_text(root, "jmx:Control/jmx:PublishingOffice"),
    )
    head_el = root.find("ib:Head", _NS)
    target = _text(head_el, "ib:TargetDateTime")
    head = Head(
        title=_text(head_el, "ib:Title"),
        report_date_time=_time(_text(head_el, "ib:ReportDateTime")),
        target_date_time=_time(target) if target else None,
        event_id=_text(head_el, "ib:EventID"),
        info_type=_vocabulary(InfoType, _text(head_el, "ib:InfoType"), "/Report/Head/InfoType"),
        serial=_text(head_el, "ib:Serial"),
        info_kind=_text(head_el, "ib:InfoKind"),
        info_kind_version=_text(head_el, "ib:InfoKindVersion"),
        headline=str(head_el.findtext("ib:Headline/ib:Text", "", _NS)).strip(),
    )
    data_type = data_type_of(control.title)
    if data_type is None:
        raise JmaUnsupported(head.info_kind, control.title)
    body_el = root[2]  # the schema requires Control, Head, then exactly one body
    return JmaMessage(data_type=data_type, control=control, head=head,
                      body=_READERS[data_type](body_el, head_el))


# --- helpers ------------------------------------------------------------------


def _vocabulary(cls: type[_E], text: str, pointer: str) -> _E:
    # The schemas type these as plain strings; JMA's documentation fixes the words.
    try:
        return cls(text)
    except ValueError:
        allowed = "、".join(m.value for m in cls)
        message = f"{text!r} is not one of JMA's values ({allowed})"
        raise JmaSchemaInvalid(f"{pointer}: {message}",
                               (JmaProblem(pointer, message, None, "jma_vocabulary"),)) from None


def _text(element: Any, path: str) -> str:
    if element is None:
        return ""
    return " ".join(str(element.findtext(path, "", _NS)).split())


def _own(element: Any, name: str) -> str | None:
    value = element.findtext(name, None, _NS)
    return None if value is None else " ".join(str(value).split())


def _time(text: str) -> datetime:
    # xs:dateTime; JMA writes "Z" or "+09:00", both read by fromisoformat on 3.11.
    return datetime.fromisoformat(text)


def _code_name(element: Any, prefix: str) -> CodeName | None:
    if element is None:
        return None
    return CodeName(code=_text(element, f"{prefix}:Code"), name=_text(element, f"{prefix}:Name"))


def _kind(element: Any, prefix: str) -> WarningKind:
    return WarningKind(
        name=_own(element, f"{prefix}:Name"),
        code=_own(element, f"{prefix}:Code"),
        status=_own(element, f"{prefix}:Status") or "",
        condition=_own(element, f"{prefix}:Condition"),
        last_kind_name=_own(element, f"{prefix}:LastKind/{prefix}:Name"),
    )


def _area_items(warning: Any) -> tuple[AreaKinds, ...]:
    items = []
    for item in warning.findall("mete:Item", _NS):
        area = _code_name(item.find("mete:Area", _NS), "mete")
        if area is None:
            continue
        kinds = tuple(_kind(k, "mete") for k in item.findall("mete:Kind", _NS))
        items.append(AreaKinds(area=area, kinds=kinds))
    return tuple(items)


def _warning_of_type(body: Any, suffix: str) -> Any:
    for warning in body.findall("mete:Warning", _NS):
        if str(warning.get("type", "")).endswith(suffix):
            return warning
    return None


# --- per data type --------------------------------------------------------------


def _warnings(body: Any, head: Any) -> JmaBody | None:
    municipal = _warning_of_type(body, "（市町村等）")
    if municipal is None:
        return None
    region = _warning_of_type(body, "（府県予報区等）")
    prefecture = None
    if region is not None:
        prefecture = _code_name(region.find("mete:Item/mete:Area", _NS), "mete")
    return WarningBody(prefecture=prefecture, areas=_area_items(municipal))


def _headline_information(head: Any, kind: str) -> Any:
    for info in head.findall("ib:Headline/ib:Information", _NS):
        if info.get("type") == kind:
            return info
    return None


def _river_flood(body: Any, head: Any) -> JmaBody | None:
    areas_info = _headline_information(head, "指定河川洪水予報（予報区域）")
    rivers_info = _headline_information(head, "指定河川洪水予報（河川）")
    source = areas_info if areas_info is not None else rivers_info
    if source is None:
        return None
    kind_el = source.find("ib:Item/ib:Kind", _NS)
    kind = WarningKind(
        name=_own(kind_el, "ib:Name"), code=_own(kind_el, "ib:Code"),
        status="発表", condition=_own(kind_el, "ib:Condition"),
    )
    forecast_area = None
    if areas_info is not None:
        forecast_area = _code_name(areas_info.find("ib:Item/ib:Areas/ib:Area", _NS), "ib")
    rivers: tuple[CodeName, ...] = ()
    if rivers_info is not None:
        rivers = tuple(
            CodeName(code=_text(a, "ib:Code"), name=_text(a, "ib:Name"))
            for a in rivers_info.findall("ib:Item/ib:Areas/ib:Area", _NS)
        )
    return RiverFloodBody(kind=kind, forecast_area=forecast_area, rivers=rivers)


def _landslide(body: Any, head: Any) -> JmaBody | None:
    warning = _warning_of_type(body, "土砂災害警戒情報")
    if warning is None:
        return None
    return LandslideBody(target_area=_code_name(body.find("mete:TargetArea", _NS), "mete"),
                         areas=_area_items(warning))


def _record_rain(body: Any, head: Any) -> JmaBody | None:
    warning = body.find("mete:Warning", _NS)
    if warning is None:
        return None
    observation = str(head.findtext("ib:Headline/ib:Text", "", _NS)).strip()
    return RecordRainBody(areas=_area_items(warning), observation=observation)


def _magnitude(element: Any) -> tuple[float | None, str | None]:
    if element is None:
        return None, None
    try:
        value: float | None = float(str(element.text or "").strip())
    except ValueError:
        value = None
    if value is not None and not math.isfinite(value):
        value = None  # JMA writes NaN with condition="不明"
    return value, element.get("description")


def _seismic(body: Any, head: Any) -> JmaBody | None:
    quake_el = body.find("seis:Earthquake", _NS)
    earthquake = None
    if quake_el is not None:
        origin = _text(quake_el, "seis:OriginTime")
        magnitude, description = _magnitude(quake_el.find("eb:Magnitude", _NS))
        earthquake = Earthquake(
            origin_time=_time(origin) if origin else None,
            hypocentre=_code_name(quake_el.find("seis:Hypocenter/seis:Area", _NS), "seis"),
            magnitude=magnitude,
            magnitude_description=description,
        )
    observation = body.find("seis:Intensity/seis:Observation", _NS)
    intensities: list[IntensityArea] = []
    max_int = None
    if observation is not None:
        max_int = _own(observation, "seis:MaxInt")
        for area in observation.findall("seis:Pref/seis:Area", _NS):
            intensities.append(IntensityArea(
                level="area", code=_text(area, "seis:Code"), name=_text(area, "seis:Name"),
                max_int=_own(area, "seis:MaxInt")))
            for city in area.findall("seis:City", _NS):
                intensities.append(IntensityArea(
                    level="city", code=_text(city, "seis:Code"), name=_text(city, "seis:Name"),
                    max_int=_own(city, "seis:MaxInt")))
    if earthquake is None and observation is None:
        return None
    return SeismicBody(earthquake=earthquake, max_int=max_int, intensities=tuple(intensities))


def _tsunami(body: Any, head: Any) -> JmaBody | None:
    forecast = body.find("seis:Tsunami/seis:Forecast", _NS)
    if forecast is None:
        return None
    regions = []
    for item in forecast.findall("seis:Item", _NS):
        area = _code_name(item.find("seis:Area", _NS), "seis")
        kind = item.find("seis:Category/seis:Kind", _NS)
        if area is None or kind is None:
            continue
        regions.append(TsunamiRegion(
            area=area, kind_name=_text(kind, "seis:Name"), kind_code=_text(kind, "seis:Code"),
            last_kind_name=_own(item, "seis:Category/seis:LastKind/seis:Name")))
    return TsunamiBody(regions=tuple(regions))


_READERS: Final = MappingProxyType({
    DataType.VPWW54: _warnings,
    DataType.VPWW55_61: _warnings,
    DataType.VXKO: _river_flood,
    DataType.VXWW50: _landslide,
    DataType.VPOA50: _record_rain,
    DataType.VXSE51: _seismic,
    DataType.VXSE53: _seismic,
    DataType.VTSE41: _tsunami,
})
