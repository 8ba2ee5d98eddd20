"""The words of rationales and messages (Japanese, as HQ reads them).

Pure formatting: every function takes values and returns text, so a rationale
is the same on every replay. Times are shown in the region's time zone.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from schemas.evacuation import ALERT_LEVEL_LABELS_JA, AlertLevel
from schemas.hazards import HAZARD_LABELS_JA, Hazard, WarningSource
from schemas.reports import ReportCategory

__all__ = [
    "CATEGORY_LABELS_JA",
    "SOURCE_LABELS_JA",
    "THRESHOLD_LABELS_JA",
    "clip",
    "duration",
    "hazard",
    "level",
    "metres",
    "when",
]

THRESHOLD_LABELS_JA: dict[str, str] = {
    "standby": "水防団待機水位",
    "flood_watch": "氾濫注意水位",
    "evacuation_judgement": "避難判断水位",
    "flood_danger": "氾濫危険水位",
    "bank_full": "越水の目安水位",
}

CATEGORY_LABELS_JA: dict[ReportCategory, str] = {
    ReportCategory.FIRE: "火災",
    ReportCategory.BUILDING_COLLAPSE: "建物倒壊",
    ReportCategory.FLOODING: "浸水",
    ReportCategory.LANDSLIDE: "土砂災害",
    ReportCategory.ROAD_BLOCKED: "道路閉塞",
    ReportCategory.CASUALTIES: "人的被害",
    ReportCategory.POWER_OUTAGE: "停電",
    ReportCategory.WATER_OUTAGE: "断水",
    ReportCategory.GAS_LEAK: "ガス漏れ",
    ReportCategory.OTHER: "その他の被害",
}

SOURCE_LABELS_JA: dict[WarningSource, str] = {
    WarningSource.JMA: "気象庁",
    WarningSource.CAP: "CAP受信",
    WarningSource.MANUAL: "本部入力",
}


def when(moment: datetime, tz: ZoneInfo) -> str:
    """A moment as 8月21日14:30 in the region's time zone."""
    local = moment.astimezone(tz)
    return f"{local.month}月{local.day}日{local:%H:%M}"


def duration(span: timedelta) -> str:
    """A duration as 2時間30分 / 45分."""
    minutes = int(span.total_seconds() // 60)
    hours, rest = divmod(minutes, 60)
    if hours and rest:
        return f"{hours}時間{rest}分"
    return f"{hours}時間" if hours else f"{rest}分"


def metres(value: float) -> str:
    """A water level, two decimals."""
    return f"{value:.2f} m"


def level(value: int) -> str:
    """警戒レベル4「避難指示」."""
    return f"警戒レベル{value}「{ALERT_LEVEL_LABELS_JA[AlertLevel(value)]}」"


def hazard(value: Hazard) -> str:
    """The hazard's official name."""
    return HAZARD_LABELS_JA[value]


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (marked with …) so it fits its field."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
