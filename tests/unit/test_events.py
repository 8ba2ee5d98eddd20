"""The envelope, the event models and the union's decoder/encoder."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.common import Reporter
from schemas.deadletter import DeadLetter, Encoding
from schemas.envelope import SONAE_ID_NAMESPACE, derive_id, new_event
from schemas.errors import (
    InvalidEvent,
    MalformedEvent,
    SchemaError,
    UnknownEventType,
    UnsupportedSchemaVersion,
)
from schemas.evacuation import EvacuationCommandPayload, OrderUpdatedPayload
from schemas.events import CURRENT_VERSIONS, EVENT_CLASSES, decode_event, encode_event
from schemas.examples import DEADLETTER_EXAMPLE, EXAMPLES, example
from schemas.hazards import HazardWarningPayload, SeismicIntensityPayload, Shindo
from schemas.reports import ReportSubmitted, ReportSubmittedPayload
from schemas.shelters import Power, ShelterCapacityAlertPayload, ShelterNeedsReportedPayload

JST = timezone(timedelta(hours=9))
T = datetime(2025, 8, 21, 14, 0, tzinfo=JST)


def doc(event_type: str) -> dict[str, Any]:
    """The example of ``event_type`` as a plain JSON document."""
    loaded: dict[str, Any] = json.loads(encode_event(example(event_type)))
    return loaded


def fields_of(excinfo: pytest.ExceptionInfo[InvalidEvent]) -> tuple[str, ...]:
    return excinfo.value.fields


REPORT = {
    "client_report_id": "r-1",
    "category": "fire",
    "severity": 3,
    "area_id": "kanda-koen",
    "reporter": {"team": "神田公園地区 防災会"},
}


# --- the union and its examples -----------------------------------------------


def test_every_event_type_has_an_example_of_its_class() -> None:
    """examples.py provides one instance of each class of the union, keyed by its type."""
    assert set(EXAMPLES) == set(EVENT_CLASSES)
    for event_type, event in EXAMPLES.items():
        assert type(event) is EVENT_CLASSES[event_type]
        assert event.type == event_type
        assert event.schema_version == CURRENT_VERSIONS[event_type]


def test_event_type_names_are_dotted_lowercase_and_unique() -> None:
    """Type strings look like ``area.past_tense`` and no two classes share one."""
    assert len({cls.EVENT_TYPE for cls in EVENT_CLASSES.values()}) == len(EVENT_CLASSES)
    for event_type in EVENT_CLASSES:
        aggregate, _, name = event_type.partition(".")
        assert aggregate.isalpha() and aggregate.islower()
        assert name and name.replace("_", "").isalpha() and name.islower()


@pytest.mark.parametrize("event_type", list(EVENT_CLASSES))
def test_example_round_trips_through_bytes_str_and_mapping(event_type: str) -> None:
    """decode_event(encode_event(e)) == e whether fed bytes, text or a parsed mapping."""
    event = example(event_type)
    raw = encode_event(event)
    assert decode_event(raw) == event
    assert decode_event(raw.decode("utf-8")) == event
    assert decode_event(json.loads(raw)) == event
    assert encode_event(decode_event(raw)) == raw


def test_encoding_is_compact_utf8_with_utc_times() -> None:
    """encode_event writes compact JSON, keeps Japanese as UTF-8 and times with Z."""
    raw = encode_event(example("report.submitted"))
    text = raw.decode("utf-8")
    assert "神田" in text and "\\u" not in text
    assert ", " not in text and ": " not in text.replace("T", "")
    assert '"occurred_at":"2025-08-21T05:03:00Z"' in text


def test_encode_refuses_a_non_event() -> None:
    """Only instances of the union's classes are encodable."""
    with pytest.raises(TypeError):
        encode_event(Reporter(team="x"))  # type: ignore[arg-type]


def test_events_are_frozen() -> None:
    """An event cannot be changed after creation."""
    event = example("report.submitted")
    with pytest.raises(ValidationError):
        event.source = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        event.payload.severity = 1  # type: ignore[union-attr,misc]


# --- decoding failures name the field -------------------------------------------


def test_malformed_json_is_a_malformed_event() -> None:
    """Bytes that are not a JSON object raise MalformedEvent (an InvalidEvent)."""
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe", b'{"a": NaN}'):
        with pytest.raises(MalformedEvent) as excinfo:
            decode_event(raw)
        assert isinstance(excinfo.value, InvalidEvent)
        assert isinstance(excinfo.value, SchemaError)


def test_unknown_type_names_type() -> None:
    """An unknown or missing type is reported against the field ``type``."""
    document = doc("report.submitted")
    document["type"] = "report.deleted"
    with pytest.raises(UnknownEventType) as excinfo:
        decode_event(document)
    assert fields_of(excinfo) == ("type",)
    del document["type"]
    with pytest.raises(InvalidEvent) as missing:
        decode_event(document)
    assert fields_of(missing) == ("type",)


def test_newer_schema_version_is_unsupported() -> None:
    """A version newer than the code's is refused with a message naming schema_version."""
    document = doc("report.accepted")
    document["schema_version"] = 2
    with pytest.raises(UnsupportedSchemaVersion) as excinfo:
        decode_event(document)
    assert fields_of(excinfo) == ("schema_version",)
    assert "newer" in str(excinfo.value)


def test_schema_version_must_be_an_integer() -> None:
    """schema_version true, "1" or 1.0 is refused rather than coerced."""
    for bad in (True, "1", 1.0):
        document = doc("report.accepted")
        document["schema_version"] = bad
        with pytest.raises(InvalidEvent) as excinfo:
            decode_event(document)
        assert fields_of(excinfo) == ("schema_version",)


def test_unknown_fields_are_rejected_by_name() -> None:
    """An extra field in the envelope or the payload is an error at its own path."""
    document = doc("report.submitted")
    document["payload"]["photo"] = "x.jpg"
    document["priority"] = "high"
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(document)
    assert set(fields_of(excinfo)) == {"payload.photo", "priority"}


def test_errors_are_reported_at_the_nested_field() -> None:
    """Out-of-range coordinates and counts are reported at their dotted path."""
    document = doc("report.submitted")
    document["payload"]["location"]["lat"] = 91.0
    document["payload"]["casualties"]["trapped"] = -1
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(document)
    assert set(fields_of(excinfo)) == {
        "payload.location.lat",
        "payload.casualties.trapped",
    }


def test_naive_times_are_rejected() -> None:
    """A time without an offset is refused, naming the field."""
    document = doc("hazard.gauge_reading")
    document["payload"]["observed_at"] = "2025-08-21T14:00:00"
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(document)
    assert fields_of(excinfo) == ("payload.observed_at",)


def test_epoch_numbers_are_not_times() -> None:
    """A unix timestamp is refused: times are ISO 8601 with an offset."""
    document = doc("hazard.gauge_reading")
    document["occurred_at"] = 1755752400
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(document)
    assert fields_of(excinfo) == ("occurred_at",)


def test_times_are_normalised_to_utc() -> None:
    """An offset time decodes to the same instant in UTC."""
    document = doc("hazard.gauge_reading")
    document["payload"]["observed_at"] = "2025-08-21T14:00:00+09:00"
    event = decode_event(document)
    observed = event.payload.observed_at  # type: ignore[union-attr]
    assert observed.utcoffset() == timedelta(0)
    assert observed == datetime(2025, 8, 21, 5, 0, tzinfo=UTC)


def test_numbers_and_booleans_are_strict() -> None:
    """A string severity, a float count or a 0/1 flag is refused rather than coerced."""
    cases = [
        (("payload", "severity"), "4"),
        (("payload", "severity"), 4.0),
        (("payload", "casualties", "injured"), True),
        (("exercise",), 0),
    ]
    for path, bad in cases:
        document = doc("report.submitted")
        target = document
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = bad
        with pytest.raises(InvalidEvent) as excinfo:
            decode_event(document)
        assert fields_of(excinfo) == (".".join(path),)


def test_non_finite_numbers_are_refused() -> None:
    """NaN cannot reach a number field even from a Python mapping."""
    document = doc("hazard.gauge_reading")
    document["payload"]["level_m"] = float("nan")
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(document)
    assert fields_of(excinfo) == ("payload.level_m",)


def test_control_characters_are_refused_in_text() -> None:
    """A NUL in a description is refused (PostgreSQL jsonb cannot store it)."""
    document = doc("report.submitted")
    document["payload"]["description"] = "ok\x00"
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(document)
    assert fields_of(excinfo) == ("payload.description",)


def test_ids_must_be_slugs() -> None:
    """Area ids are lowercase slugs; a Japanese name or spaces are refused."""
    for bad in ("神田公園", "Kanda Koen", "", "-leading", "a" * 65):
        document = doc("report.submitted")
        document["payload"]["area_id"] = bad
        with pytest.raises(InvalidEvent) as excinfo:
            decode_event(document)
        assert fields_of(excinfo) == ("payload.area_id",)


# --- cross-field rules -------------------------------------------------------------


def test_report_needs_a_location_or_an_area() -> None:
    """A report with neither location nor area_id is refused at payload.area_id."""
    ReportSubmittedPayload.model_validate(REPORT)
    ReportSubmittedPayload.model_validate(
        {**REPORT, "area_id": None, "location": {"lat": 35.69, "lon": 139.76}}
    )
    with pytest.raises(ValidationError) as excinfo:
        ReportSubmittedPayload.model_validate({**REPORT, "area_id": None})
    assert [e["loc"] for e in excinfo.value.errors()] == [("area_id",)]
    assert "location" in excinfo.value.errors()[0]["msg"]


def test_an_invalid_location_is_reported_once() -> None:
    """A bad location yields its own error, not a second 'location or area' error."""
    with pytest.raises(ValidationError) as excinfo:
        ReportSubmittedPayload.model_validate(
            {**REPORT, "area_id": None, "location": {"lat": 35.0, "lon": 200.0}}
        )
    assert [e["loc"] for e in excinfo.value.errors()] == [("location", "lon")]


def test_accepted_report_needs_area_unless_outside_region() -> None:
    """report.accepted may omit area_id only with outside_region true."""
    document = doc("report.accepted")
    document["payload"]["area_id"] = None
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(document)
    assert fields_of(excinfo) == ("payload.area_id",)
    document["payload"]["outside_region"] = True
    assert decode_event(document).payload.area_id is None  # type: ignore[union-attr]


def test_power_fuel_hours_iff_generator() -> None:
    """fuel_hours_left is required with a generator and refused otherwise."""
    assert Power(kind="generator", fuel_hours_left=3).fuel_hours_left == 3  # type: ignore[arg-type]
    for data in ({"kind": "generator"}, {"kind": "grid", "fuel_hours_left": 2.0}):
        with pytest.raises(ValidationError) as excinfo:
            Power.model_validate(data)
        assert [e["loc"] for e in excinfo.value.errors()] == [("fuel_hours_left",)]


def test_needs_report_must_report_something() -> None:
    """A needs report with no supply level and no power is refused."""
    base = {"shelter_id": "e1310100006201", "reported_by": {"team": "班"}}
    ShelterNeedsReportedPayload.model_validate({**base, "needs": {"water": "low"}})
    ShelterNeedsReportedPayload.model_validate({**base, "power": {"kind": "grid"}})
    with pytest.raises(ValidationError) as excinfo:
        ShelterNeedsReportedPayload.model_validate(base)
    assert [e["loc"] for e in excinfo.value.errors()] == [("power",)]


def test_capacity_alert_rules() -> None:
    """cleared names the ended alert; occupancy thresholds are shares of capacity."""
    base = {"shelter_id": "s1", "threshold": 0.8, "occupancy": 10}
    ShelterCapacityAlertPayload.model_validate({**base, "kind": "cleared", "cleared_kind": "full"})
    bad = [
        ({**base, "kind": "cleared"}, ("cleared_kind",)),
        ({**base, "kind": "full", "cleared_kind": "full"}, ("cleared_kind",)),
        ({**base, "kind": "crowded", "threshold": 80}, ("threshold",)),
    ]
    for data, loc in bad:
        with pytest.raises(ValidationError) as excinfo:
            ShelterCapacityAlertPayload.model_validate(data)
        assert [e["loc"] for e in excinfo.value.errors()] == [loc]
    fuel = ShelterCapacityAlertPayload.model_validate(
        {**base, "kind": "fuel_low", "threshold": 6, "fuel_hours_left": 5.5}
    )
    assert fuel.threshold == 6


def test_warning_expiry_after_issue() -> None:
    """A warning cannot expire before it was issued."""
    data = doc("hazard.warning")["payload"]
    data["expires_at"] = data["issued_at"]
    with pytest.raises(ValidationError) as excinfo:
        HazardWarningPayload.model_validate(data)
    assert [e["loc"] for e in excinfo.value.errors()] == [("expires_at",)]


def test_seismic_intensity_lists_each_area_once() -> None:
    """Two intensities for one area are refused."""
    data = doc("hazard.seismic_intensity")["payload"]
    data["intensities"].append({"area_id": "kojimachi", "shindo": "1"})
    with pytest.raises(ValidationError) as excinfo:
        SeismicIntensityPayload.model_validate(data)
    assert [e["loc"] for e in excinfo.value.errors()] == [("intensities",)]


def test_a_withdrawal_lists_no_intensities_and_a_report_at_least_one() -> None:
    """withdrawn ⇔ no intensities: each mismatch is refused at /intensities."""
    data = doc("hazard.seismic_intensity")["payload"]
    assert SeismicIntensityPayload.model_validate({**data, "intensities": [],
                                                   "withdrawn": True}).withdrawn
    for wrong in ({**data, "withdrawn": True}, {**data, "intensities": []}):
        with pytest.raises(ValidationError) as excinfo:
            SeismicIntensityPayload.model_validate(wrong)
        assert [e["loc"] for e in excinfo.value.errors()] == [("intensities",)]


def test_shindo_ranks_follow_the_scale_not_the_text() -> None:
    """5+ ranks above 5- although it sorts before it as text."""
    assert Shindo("5+").rank > Shindo("5-").rank
    assert [s.rank for s in Shindo] == list(range(10))
    with pytest.raises(ValueError):
        Shindo("5")


def test_area_lists_refuse_duplicates() -> None:
    """The same area twice in an order is refused at area_ids."""
    document = doc("evacuation.order_issued")
    document["payload"]["area_ids"] = ["kanda-koen", "kanda-koen"]
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(document)
    assert fields_of(excinfo) == ("payload.area_ids",)


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"action": "approve"}, "recommendation_id"),
        ({"action": "reject", "recommendation_id": str(uuid.uuid4())}, "reason"),
        ({"action": "lift", "order_id": str(uuid.uuid4())}, "reason"),
        ({"action": "lift", "reason": "下降"}, "order_id"),
        ({"action": "issue", "area_ids": ["fujimi"], "hazard": "flood"}, "level"),
        (
            {"action": "approve", "recommendation_id": str(uuid.uuid4()), "level": 4},
            "level",
        ),
        (
            {"action": "lift", "order_id": str(uuid.uuid4()), "reason": "x", "hazard": "flood"},
            "hazard",
        ),
    ],
)
def test_command_fields_depend_on_the_action(data: dict[str, Any], loc: str) -> None:
    """Each action's missing or foreign field is reported by name."""
    with pytest.raises(ValidationError) as excinfo:
        EvacuationCommandPayload.model_validate({"operator": "hq-duty-officer", **data})
    assert [e["loc"] for e in excinfo.value.errors()] == [(loc,)]
    assert data["action"] in excinfo.value.errors()[0]["msg"]


def test_command_actions_accept_their_own_fields() -> None:
    """Each action validates with exactly the fields it needs."""
    op = {"operator": "hq-duty-officer"}
    rec, order = str(uuid.uuid4()), str(uuid.uuid4())
    for data in (
        {"action": "approve", "recommendation_id": rec},
        {"action": "reject", "recommendation_id": rec, "reason": "現地確認中"},
        {"action": "issue", "area_ids": ["fujimi"], "level": 3, "hazard": "landslide"},
        {"action": "issue", "area_ids": ["fujimi"], "level": 4, "hazard": "flood",
         "order_id": order, "designated_shelter_ids": []},
        {"action": "lift", "order_id": order, "reason": "水位低下"},
    ):
        EvacuationCommandPayload.model_validate({**op, **data})


def test_order_levels_are_3_to_5_and_strict() -> None:
    """An order at level 2, 6, "4" or 4.0 is refused."""
    for bad in (2, 6, "4", 4.0, True):
        document = doc("evacuation.order_issued")
        document["payload"]["level"] = bad
        with pytest.raises(InvalidEvent) as excinfo:
            decode_event(document)
        assert fields_of(excinfo) == ("payload.level",)


def test_order_versions() -> None:
    """Issued is version 1; an update supersedes a lower version."""
    issued = doc("evacuation.order_issued")
    issued["payload"]["version"] = 2
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(issued)
    assert fields_of(excinfo) == ("payload.version",)
    updated = doc("evacuation.order_updated")["payload"]
    with pytest.raises(ValidationError) as excinfo2:
        OrderUpdatedPayload.model_validate({**updated, "supersedes_version": 2})
    assert [e["loc"] for e in excinfo2.value.errors()] == [("supersedes_version",)]


def test_broadcast_subject_matches_kind() -> None:
    """An order broadcast names its order; a shelter broadcast names its shelter."""
    document = doc("broadcast.requested")
    document["payload"]["shelter_id"] = "e1310100006201"
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(document)
    assert fields_of(excinfo) == ("payload.shelter_id",)
    document["payload"]["kind"] = "shelter_opened"
    document["payload"]["order_id"] = None
    assert decode_event(document).payload.shelter_id == "e1310100006201"  # type: ignore[union-attr]


# --- new_event ------------------------------------------------------------------------


def test_new_event_fills_the_envelope() -> None:
    """new_event sets type, version, a fresh id, recorded_at now and a self correlation."""
    before = datetime.now(UTC)
    event = new_event(ReportSubmitted, REPORT, occurred_at=T, source="intake")
    assert event.type == "report.submitted" and event.schema_version == 2
    assert event.event_id.version == 4
    assert event.correlation_id == event.event_id and event.causation_id is None
    assert event.occurred_at == T and event.occurred_at.tzinfo is UTC
    assert before <= event.recorded_at <= datetime.now(UTC)
    assert event.exercise is False


def test_new_event_chains_from_its_cause() -> None:
    """A caused event records the cause, joins its correlation and inherits exercise."""
    root = new_event(ReportSubmitted, REPORT, occurred_at=T, source="intake", exercise=True)
    child = new_event(ReportSubmitted, REPORT, occurred_at=T, source="intake", cause=root)
    grandchild = new_event(ReportSubmitted, REPORT, occurred_at=T, source="x", cause=child)
    assert child.causation_id == root.event_id
    assert grandchild.causation_id == child.event_id
    assert grandchild.correlation_id == root.event_id
    assert grandchild.exercise is True


def test_drill_traffic_cannot_become_live() -> None:
    """Asking for exercise=False under a drill cause is an error."""
    root = new_event(ReportSubmitted, REPORT, occurred_at=T, source="intake", exercise=True)
    with pytest.raises(ValueError, match="exercise"):
        new_event(ReportSubmitted, REPORT, occurred_at=T, source="x", cause=root, exercise=False)


def test_new_event_requires_aware_occurred_at() -> None:
    """A naive occurred_at is refused."""
    with pytest.raises(ValidationError) as excinfo:
        new_event(ReportSubmitted, REPORT, occurred_at=datetime(2025, 8, 21), source="intake")
    assert [e["loc"] for e in excinfo.value.errors()] == [("occurred_at",)]


def test_new_event_refuses_a_payload_of_another_type() -> None:
    """Passing a shelter payload to a report event is a validation error at payload."""
    shelter_payload = example("shelter.opened").payload
    with pytest.raises(ValidationError) as excinfo:
        new_event(ReportSubmitted, shelter_payload, occurred_at=T, source="intake")
    assert excinfo.value.errors()[0]["loc"][0] == "payload"


def test_derived_ids_are_deterministic() -> None:
    """derive_id gives the same UUIDv5 for the same parts and differs when parts shift."""
    a = derive_id("recommendation", "rule-1", "kanda-koen")
    assert a == derive_id("recommendation", "rule-1", "kanda-koen")
    assert a.version == 5
    assert a == uuid.uuid5(SONAE_ID_NAMESPACE, "recommendation\x1frule-1\x1fkanda-koen")
    assert derive_id("a-b", "c") != derive_id("a", "b-c")
    event = new_event(
        ReportSubmitted, REPORT, occurred_at=T, source="intake", event_id=a, recorded_at=T
    )
    again = new_event(
        ReportSubmitted, REPORT, occurred_at=T, source="intake", event_id=a, recorded_at=T
    )
    assert encode_event(event) == encode_event(again)


# --- dead letters ---------------------------------------------------------------------------


def test_dead_letter_keeps_every_byte() -> None:
    """Text stays readable, binary goes to base64, and both come back byte for byte."""
    assert DEADLETTER_EXAMPLE.original_encoding is Encoding.UTF8
    for value in (b'{"a": 1}', b"\xff\x00binary", "神田".encode(), b"nul\x00in text"):
        letter = DeadLetter.from_record(
            topic="t1.reports", partition=0, offset=7, key=b"\x80k", value=value,
            error="InvalidEvent: x", service="intake", failed_at=T,
        )
        again = DeadLetter.model_validate_json(letter.model_dump_json())
        assert again.original_bytes() == value
        assert again.key_bytes() == b"\x80k"
        assert again.key_encoding is Encoding.BASE64
