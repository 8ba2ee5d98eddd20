"""One realistic, valid, deterministic example of every event type.

The story is the demo scenario: heavy rain over Chiyoda on an (invented)
afternoon, 神田川 rising at the お茶の水橋 gauge, a recommendation, HQ approval,
an order and its broadcast. Ids are the region pack's (``kanda-koen``,
``e1310100005201``); event ids are derived, times fixed, so docs/events.md is
reproducible. Tests and services reuse these (``example("report.submitted")``)
instead of inventing fixtures; use ``model_copy(update=...)`` or
:func:`schemas.envelope.new_event` to vary them.

Why one file over ~500 lines: the examples are one story whose events name each
other (causation, correlation, the recommendation an approval answers, the order a
broadcast is for), so they are built in one function, in story order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, cast

from schemas.broadcasts import (
    BroadcastDelivered,
    BroadcastFailed,
    BroadcastPublished,
    BroadcastRequested,
)
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope, derive_id, new_event
from schemas.evacuation import (
    CommandRejected,
    EvacuationCommand,
    EvacuationRecommended,
    OrderIssued,
    OrderLifted,
    OrderUpdated,
    RecommendationClosed,
)
from schemas.events import EVENT_CLASSES, Event
from schemas.hazards import GaugeReading, HazardDataQuality, HazardWarning, SeismicIntensity
from schemas.people import AtHomeReported, HouseholdCheckedIn, HouseholdCheckedOut, WelfareChecked
from schemas.reports import ReportAccepted, ReportRejected, ReportSubmitted
from schemas.shelters import (
    ShelterAreaSummary,
    ShelterCapacityAlert,
    ShelterClosed,
    ShelterNeedsReported,
    ShelterOccupancyReported,
    ShelterOpened,
    ShelterStatusChanged,
)
from schemas.supplies import (
    GeneratorRegistered,
    GeneratorStatusReported,
    SupplyAssigned,
    SupplyCancelled,
    SupplyDispatched,
    SupplyReceived,
    SupplyRequested,
)

__all__ = ["DEADLETTER_EXAMPLE", "EXAMPLES", "example"]

JST = timezone(timedelta(hours=9), "JST")
_T0 = datetime(2025, 8, 21, 14, 0, tzinfo=JST)


def _at(minutes: float) -> datetime:
    return _T0 + timedelta(minutes=minutes)


def _make(
    cls: type[Envelope],
    payload: Mapping[str, Any],
    minutes: float,
    source: str,
    cause: Envelope | None = None,
) -> Envelope:
    # Recorded a few seconds after it happened, as a healthy pipeline would.
    return new_event(
        cls,
        payload,
        occurred_at=_at(minutes),
        recorded_at=_at(minutes) + timedelta(seconds=2),
        source=source,
        cause=cause,
        event_id=derive_id("example", cls.EVENT_TYPE),
    )


_TEAM = {"team": "神田公園地区 防災会", "name": "佐藤 花子"}
_SHELTER_TEAM = {"team": "区立スポーツセンター 避難所運営班"}
_CLIENT_REPORT_ID = "0b6c4f2e-6a51-4d0e-9a57-2f1f1c9a7e10"
_SHELTER = "e1310100006201"  # 区立スポーツセンター, kanda-koen
_ORDER_ID = derive_id("example", "order", "kanda-koen", "flood")
_RECOMMENDATION_ID = derive_id("example", "recommendation", "kandagawa-ochanomizu")
_MESSAGE_ID = derive_id("example", "message", _ORDER_ID)


def _build() -> dict[str, Envelope]:
    out: dict[str, Envelope] = {}

    def add(event: Envelope) -> Envelope:
        out[event.type] = event
        return event

    gauge = add(
        _make(
            GaugeReading,
            {"gauge_id": "kandagawa-ochanomizu", "level_m": 4.31, "observed_at": _at(0)},
            0,
            "gauge-feed",
        )
    )
    warning = add(
        _make(
            HazardWarning,
            {
                "warning_id": "jma-20250821-130000-vpww53-flood-kandagawa",
                "action": "issued",
                "kind": "flood_warning",
                "name": "神田川氾濫警戒情報",
                "hazard": "flood",
                "alert_level_equivalent": 3,
                "area_ids": ["manseibashi", "izumibashi", "kanda-koen"],
                "issued_at": _at(-5),
                "expires_at": _at(6 * 60),
                "source": "cap",
                "cap_identifier": "urn:oid:2.49.0.1.392.0.2025.08.21.0500",
            },
            -5,
            "jma-feed",
        )
    )
    add(
        _make(
            HazardDataQuality,
            {
                "gauge_id": "nihonbashigawa-manaitabashi",
                "status": "stale",
                "last_observed_at": _at(-20),
                "last_reading_event_id": derive_id("example", "reading", "manaitabashi"),
                "silent_seconds": 1260,
                "expected_period_seconds": 1200,
                "area_ids": ["fujimi", "jimbocho", "kanda-koen", "kojimachi"],
                "message": "日本橋川（俎橋）の水位が21分間届いていません"
                "（報告間隔10分の2倍を超過）。最終観測値は判断に使いません。",
            },
            1,
            "evacuation-decision",
            cause=gauge,
        )
    )
    add(
        _make(
            SeismicIntensity,
            {
                "quake_id": "20250821143512",
                "magnitude": 4.6,
                "epicentre": "東京湾",
                "intensities": [
                    {"area_id": "kojimachi", "shindo": "3"},
                    {"area_id": "kanda-koen", "shindo": "4"},
                    {"area_id": "izumibashi", "shindo": "5-"},
                ],
            },
            35,
            "jma-feed",
        )
    )

    submitted = add(
        _make(
            ReportSubmitted,
            {
                "client_report_id": _CLIENT_REPORT_ID,
                "category": "flooding",
                "severity": 4,
                "location": {"lat": 35.69286, "lon": 139.76795},
                "area_id": "kanda-koen",
                "casualties": {"injured": 1, "dead": 0, "missing": 0, "trapped": 2},
                "description": "神田司町二丁目の地下駐車場が冠水。車内に2名が取り残されている。",
                "reporter": _TEAM,
            },
            3,
            "intake",
        )
    )
    add(
        _make(
            ReportAccepted,
            {
                "report_id": derive_id("report", _TEAM["team"], _CLIENT_REPORT_ID),
                "submitted_event_id": submitted.event_id,
                "report": submitted.payload,
                "outside_region": False,
                "area_id": "kanda-koen",
            },
            3.05,
            "intake",
            cause=submitted,
        )
    )
    add(
        _make(
            ReportRejected,
            {
                "client_report_id": "field-app-7f3a-0042",
                "submitted_event_id": derive_id("example", "rejected-submission"),
                "reasons": [
                    {
                        "code": "invalid",
                        "field": "payload.location.lat",
                        "message": "Input should be less than or equal to 90",
                    }
                ],
            },
            4,
            "intake",
        )
    )

    add(
        _make(
            ShelterOpened,
            {
                "shelter_id": _SHELTER,
                "stage": "open",
                "capacity": 650,
                "reported_by": _SHELTER_TEAM,
                "note": "体育館のみ開放。アリーナは使用不可。",
            },
            10,
            "intake",
        )
    )
    add(
        _make(
            ShelterClosed,
            {
                "shelter_id": "e1310100007201",
                "stage": "closing",
                "reason": "建物一階が浸水のため、区立スポーツセンターへ移送中。",
                "reported_by": {"team": "神田さくら館 避難所運営班"},
            },
            50,
            "intake",
        )
    )
    occupancy = add(
        _make(
            ShelterOccupancyReported,
            {
                "shelter_id": _SHELTER,
                "occupancy": 540,
                "households": 212,
                "special_care": 31,
                "capacity": 650,
                "reported_by": _SHELTER_TEAM,
            },
            55,
            "intake",
        )
    )
    add(
        _make(
            ShelterNeedsReported,
            {
                "shelter_id": _SHELTER,
                "needs": {"water": "ok", "food": "low", "medical": "ok", "sanitation": "low"},
                "power": {"kind": "generator", "fuel_hours_left": 5.5},
                "reported_by": _SHELTER_TEAM,
                "note": "停電中。非常用発電機で運転。簡易トイレが不足。",
            },
            56,
            "intake",
        )
    )
    add(
        _make(
            ShelterStatusChanged,
            {
                "shelter_id": _SHELTER,
                "version": 4,
                "status": "crowded",
                "previous_status": "open",
                "name": "区立スポーツセンター",
                "occupancy": 540,
                "households": 212,
                "special_care": 31,
                "capacity": 650,
                "needs": {"water": "ok", "food": "low", "medical": "ok", "sanitation": "low"},
                "power": {"kind": "generator", "fuel_hours_left": 5.5},
                "hazards": ["flood", "storm_surge", "earthquake", "inland_flood"],
                "last_reported_by": _SHELTER_TEAM,
                "last_reported_at": _at(55),
            },
            55,
            "shelter-tracker",
            cause=occupancy,
        )
    )
    status_changed = out["shelter.status_changed"]
    add(
        _make(
            ShelterAreaSummary,
            {
                "area_id": "kanda-koen",
                "version": 7,
                "shelters": {"closed": 1, "crowded": 1, "closing": 1},
                "shelters_open": 1,
                "capacity": 650,
                "occupancy": 562,
                "free_capacity": 110,
                "by_hazard": [
                    {"hazard": "flood", "shelters_open": 1, "free_capacity": 110},
                    {"hazard": "storm_surge", "shelters_open": 1, "free_capacity": 110},
                    {"hazard": "earthquake", "shelters_open": 1, "free_capacity": 110},
                    {"hazard": "inland_flood", "shelters_open": 1, "free_capacity": 110},
                ],
            },
            55,
            "shelter-tracker",
            cause=status_changed,
        )
    )
    add(
        _make(
            ShelterCapacityAlert,
            {
                "shelter_id": _SHELTER,
                "kind": "crowded",
                "threshold": 0.8,
                "occupancy": 540,
                "capacity": 650,
            },
            55,
            "shelter-tracker",
            cause=occupancy,
        )
    )

    recommended = add(
        _make(
            EvacuationRecommended,
            {
                "recommendation_id": _RECOMMENDATION_ID,
                "kind": "issue",
                "area_ids": ["kanda-koen", "manseibashi"],
                "level": 4,
                "hazard": "flood",
                "rationale": (
                    "神田川（お茶の水橋）の水位 4.31 m が避難判断水位 4.2 m を超過。"
                    "氾濫警戒情報発表中。神田公園地区で浸水の被害報告あり。"
                ),
                "evidence_event_ids": [gauge.event_id, warning.event_id, submitted.event_id],
                "suggested_shelter_ids": [_SHELTER],
                "shelters_to_open": ["e1310100005201"],
                "rule_id": "river-evacuation-judgement",
            },
            1,
            "evacuation-decision",
            cause=gauge,
        )
    )
    command = add(
        _make(
            EvacuationCommand,
            {
                "action": "approve",
                "operator": "hq-duty-officer",
                "operator_role": "hq",
                "recommendation_id": _RECOMMENDATION_ID,
                "reason": "現地の浸水報告と一致。承認する。",
            },
            8,
            "gateway",
            cause=recommended,
        )
    )
    add(
        _make(
            RecommendationClosed,
            {
                "recommendation_id": derive_id("example", "recommendation", "fujimi"),
                "kind": "issue",
                "area_ids": ["fujimi"],
                "level": 3,
                "hazard": "flood",
                "outcome": "rejected",
                "reason": "富士見地区は高台で浸水想定区域外。現地確認のうえ見送る。",
                "operator": "hq-duty-officer",
                "command_event_id": derive_id("example", "command", "reject-fujimi"),
            },
            9,
            "evacuation-decision",
        )
    )
    add(
        _make(
            CommandRejected,
            {
                "command_event_id": derive_id("example", "command", "field-approve"),
                "action": "approve",
                "operator": "kanda-koen-team-3",
                "operator_role": "field",
                "recommendation_id": _RECOMMENDATION_ID,
                "code": "forbidden_role",
                "reason": "役割 field の利用者は避難の判断を指示できません（本部 hq のみ）。",
            },
            8.5,
            "evacuation-decision",
        )
    )
    issued = add(
        _make(
            OrderIssued,
            {
                "order_id": _ORDER_ID,
                "version": 1,
                "area_ids": ["kanda-koen", "manseibashi"],
                "level": 4,
                "hazard": "flood",
                "designated_shelter_ids": [_SHELTER, "e1310100005201"],
                "issued_by": "hq-duty-officer",
                "approved_at": _at(8),
                "automatic": False,
                "recommendation_id": _RECOMMENDATION_ID,
            },
            8,
            "evacuation-decision",
            cause=command,
        )
    )
    add(
        _make(
            OrderUpdated,
            {
                "order_id": _ORDER_ID,
                "version": 2,
                "supersedes_version": 1,
                "area_ids": ["kanda-koen", "manseibashi", "izumibashi"],
                "level": 5,
                "hazard": "flood",
                "designated_shelter_ids": [_SHELTER, "e1310100005201"],
                "issued_by": "hq-duty-officer",
                "approved_at": _at(70),
                "automatic": False,
                "recommendation_id": derive_id("example", "recommendation", "raise"),
            },
            70,
            "evacuation-decision",
        )
    )
    add(
        _make(
            OrderLifted,
            {
                "order_id": _ORDER_ID,
                "version": 3,
                "supersedes_version": 2,
                "area_ids": ["kanda-koen", "manseibashi", "izumibashi"],
                "level": 5,
                "hazard": "flood",
                "designated_shelter_ids": [_SHELTER, "e1310100005201"],
                "issued_by": "hq-duty-officer",
                "approved_at": _at(70),
                "automatic": False,
                "recommendation_id": derive_id("example", "recommendation", "raise"),
                "lifted_by": "hq-duty-officer",
                "reason": "神田川の水位が氾濫注意水位を下回り、3時間以上低下傾向が続いたため。",
            },
            9 * 60,
            "evacuation-decision",
        )
    )

    requested = add(
        _make(
            BroadcastRequested,
            {
                "message_id": _MESSAGE_ID,
                "version": 1,
                "kind": "order_issued",
                "order_id": _ORDER_ID,
                "languages": ["ja", "en", "zh", "ko"],
                "channels": ["public-feed", "webhook"],
            },
            8.1,
            "broadcaster",
            cause=issued,
        )
    )
    add(
        _make(
            BroadcastDelivered,
            {
                "message_id": _MESSAGE_ID,
                "version": 1,
                "language": "ja",
                "channel": "public-feed",
                "attempt": 1,
                "delivered_at": _at(8.12),
                "receipt": "feed-seq-1042",
            },
            8.12,
            "broadcaster",
            cause=requested,
        )
    )
    add(
        _make(
            BroadcastFailed,
            {
                "message_id": _MESSAGE_ID,
                "version": 1,
                "language": "en",
                "channel": "webhook",
                "attempt": 2,
                "error": "HTTP 503 from subscriber endpoint",
                "will_retry": True,
                "next_attempt_at": _at(8.5),
            },
            8.2,
            "broadcaster",
            cause=requested,
        )
    )
    add(
        _make(
            BroadcastPublished,
            {
                "message_id": _MESSAGE_ID,
                "version": 1,
                "kind": "order_issued",
                "order_id": _ORDER_ID,
                "language": "ja",
                "headline": "警戒レベル4 避難指示（洪水）神田公園地区、万世橋地区",
                "push": "千代田区：神田公園地区、万世橋地区に警戒レベル4 避難指示（洪水）。"
                "危険な場所から全員避難してください。",
                "sms": "警戒レベル4 避難指示（洪水）神田公園地区、万世橋地区。"
                "危険な場所から全員避難",
                "full": "千代田区は神田公園地区、万世橋地区に警戒レベル4 避難指示を発令しました"
                "（洪水）。\n危険な場所から全員避難してください。\n避難先：区立スポーツセンター、"
                "神田一橋中学校\n避難所への移動が危険なときは、近くの安全な場所や"
                "建物の上の階に避難してください。\n千代田区災害対策本部",
                "area_ids": ["kanda-koen", "manseibashi"],
                "level": 4,
                "hazard": "flood",
                "cap_identifier": f"sonae-chiyoda-{_ORDER_ID}-v1",
            },
            8.1,
            "broadcaster",
            cause=issued,
        )
    )
    _people(add)
    return out


def _people(add: Callable[[Envelope], Envelope]) -> None:
    """Households, residents at home, supplies and generators, in the same story."""
    add(_make(HouseholdCheckedIn, {
        "shelter_id": _SHELTER, "household_code": "7K3M9QXD", "size": 3,
        "needs": ["infant", "language"], "language": "en",
        "name": "Smith", "contact": "090-0000-0000",
        "reported_by": _SHELTER_TEAM,
    }, 40, "intake"))
    add(_make(HouseholdCheckedOut, {
        "shelter_id": "e1310100007201", "household_code": "2P8WQ4RT",
        "transferred_to": _SHELTER, "reported_by": {"team": "神田さくら館 避難所運営班"},
    }, 51, "intake"))
    household_id = derive_id("example", "at-home")
    at_home = add(_make(AtHomeReported, {
        "household_id": household_id, "area_id": "kanda-koen", "size": 2,
        "needs": ["water", "medical_power", "welfare_check"],
        "contact": "03-0000-0000", "address": "神田司町二丁目",
        "note": "在宅酸素療法中。停電で酸素濃縮器の予備電池が残り4時間。", "via": "public",
    }, 45, "intake"))
    add(_make(WelfareChecked, {
        "household_id": household_id, "area_id": "kanda-koen",
        "outcome": "needs_help", "note": "予備電池を届け、発電機のある区立スポーツセンターを案内。",
        "checked_by": "field-kanda-1",
    }, 70, "intake", cause=at_home))
    request_id = derive_id("example", "supply-request")
    requested = add(_make(SupplyRequested, {
        "request_id": request_id, "requester_kind": "shelter", "site_id": _SHELTER,
        "area_id": "kanda-koen",
        "lines": [{"item": "water", "quantity": 600, "note": "2 L ペットボトル"},
                  {"item": "hygiene", "quantity": 40, "note": "簡易トイレ"}],
        "urgency": "urgent", "requested_by": _SHELTER_TEAM,
    }, 57, "intake"))
    for cls, minutes, step in (
        (SupplyAssigned, 60, {"assignee": "区役所 備蓄倉庫班", "note": "2 t トラック1台"}),
        (SupplyDispatched, 75, {"note": "備蓄倉庫を出発"}),
        (SupplyReceived, 110, {"note": "受領。簡易トイレは30個のみ"}),
    ):
        add(_make(cls, {"request_id": request_id, "by": "hq-duty-officer", **step},
                  minutes, "intake", cause=requested))
    add(_make(SupplyCancelled, {
        "request_id": derive_id("example", "supply-request-cancelled"),
        "by": "shelter-sports-center", "note": "近隣の町会から毛布が届いたため",
    }, 95, "intake"))
    add(_make(GeneratorRegistered, {
        "generator_id": "kanda-tsukasa-gen-1", "owner": "神田司町二丁目町会",
        "area_id": "kanda-koen", "location": {"lat": 35.6930, "lon": 139.7680},
        "fuel": "gas_cartridge", "rated_kva": 0.9, "runtime_full_hours": 2.2,
        "registered_by": "hq-duty-officer",
    }, -600, "intake"))
    add(_make(GeneratorStatusReported, {
        "generator_id": "kanda-tsukasa-gen-1", "state": "fuel_low", "fuel_hours_left": 0.5,
        "reported_by": {"team": "神田司町二丁目町会"}, "note": "カセットボンベ残り2本",
    }, 80, "intake"))


def _ordered(built: dict[str, Envelope]) -> Mapping[str, Event]:
    missing = set(EVENT_CLASSES) - set(built)
    if missing:
        raise RuntimeError(f"examples missing for {sorted(missing)}")
    # Envelope → Event: every built instance is one of the union's classes.
    return MappingProxyType({name: cast(Event, built[name]) for name in EVENT_CLASSES})


EXAMPLES: Mapping[str, Event] = _ordered(_build())
"""Event type → a valid example instance, in catalogue order."""


def example(event_type: str) -> Event:
    """The example instance of ``event_type`` (KeyError if there is none)."""
    return EXAMPLES[event_type]


DEADLETTER_EXAMPLE = DeadLetter.from_record(
    topic="intake.raw",
    partition=2,
    offset=18734,
    key=b"kandagawa-ochanomizu",
    value=b'{"gauge": "kandagawa-ochanomizu", "level": "4.3m"}',
    error="InvalidEvent: payload.level_m: Field required",
    service="intake",
    failed_at=_at(0.1),
)
"""An example dead-letter record (a gauge feed message intake could not read)."""
