"""The topic catalogue: names, keys, cleanup, namespaces and routing."""

from __future__ import annotations

import re

import pytest

from schemas.deadletter import DeadLetter
from schemas.errors import InvalidNamespace, UnknownEventType, UnknownTopic, WrongTopic
from schemas.events import EVENT_CLASSES, decode_event
from schemas.examples import EXAMPLES, example
from schemas.topics import (
    CATALOGUE,
    LIVE,
    check_carries,
    key_for,
    qualified,
    route,
    split_qualified,
    topic_for_type,
    topics_in,
    validate_namespace,
)

KAFKA_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def test_every_event_type_is_carried_by_exactly_one_topic() -> None:
    """Each type of the union appears on one topic, and topics carry only known types."""
    carried = [t for spec in CATALOGUE.values() for t in spec.event_types]
    assert sorted(carried) == sorted(EVENT_CLASSES)
    for event_type in EVENT_CLASSES:
        assert event_type in topic_for_type(event_type).event_types


def test_topic_names_are_valid_kafka_names_without_underscores() -> None:
    """Names are legal Kafka names and avoid '_' (Kafka confuses '.' and '_' in metrics)."""
    for name, spec in CATALOGUE.items():
        assert name == spec.name
        assert KAFKA_NAME.fullmatch(name) and "_" not in name


def test_state_topics_are_compacted_and_others_delete() -> None:
    """shelters.state, shelters.areas and evacuation.orders are compacted; the rest delete."""
    compacted = {name for name, spec in CATALOGUE.items() if spec.cleanup == "compact"}
    assert compacted == {"shelters.state", "shelters.areas", "evacuation.orders"}
    for spec in CATALOGUE.values():
        assert spec.configs["cleanup.policy"] == spec.cleanup
        assert ("retention.ms" in spec.configs) == (spec.cleanup == "delete")
        assert 1 <= spec.partitions <= 16


def test_dead_letter_topic_declares_its_record_model() -> None:
    """deadletter carries no events but DeadLetter records; intake.raw carries raw JSON."""
    assert CATALOGUE["deadletter"].record_model is DeadLetter
    assert CATALOGUE["deadletter"].event_types == frozenset()
    assert CATALOGUE["intake.raw"].event_types == frozenset()


def test_unknown_type_has_no_topic() -> None:
    """topic_for_type raises UnknownEventType for a type outside the union."""
    with pytest.raises(UnknownEventType):
        topic_for_type("report.deleted")


@pytest.mark.parametrize("event_type", list(EVENT_CLASSES))
def test_every_example_has_a_nonempty_key(event_type: str) -> None:
    """key_for yields UTF-8 bytes for every example."""
    key = key_for(example(event_type))
    assert key and key.decode("utf-8")


def test_key_is_the_aggregate() -> None:
    """Shelter events key by shelter, orders by order id, gauges by gauge id."""
    assert key_for(example("shelter.opened")) == b"e1310100006201"
    assert key_for(example("shelter.status_changed")) == b"e1310100006201"
    order = example("evacuation.order_lifted")
    assert key_for(order) == str(order.payload.order_id).encode()  # type: ignore[union-attr]
    assert key_for(example("hazard.gauge_reading")) == b"kandagawa-ochanomizu"


def test_report_key_falls_back_from_area_to_report_id() -> None:
    """A report keys by area when it has one, else by its client id."""
    event = example("report.submitted")
    assert key_for(event) == b"kanda-koen"
    without_area = event.model_copy(
        update={"payload": event.payload.model_copy(update={"area_id": None})}
    )
    assert key_for(without_area) == event.payload.client_report_id.encode()  # type: ignore[union-attr]


def test_manual_issue_command_keys_by_its_own_event_id() -> None:
    """A command with neither recommendation nor order keys by its event id."""
    event = example("evacuation.command")
    document = event.model_dump(mode="json")
    document["payload"] = {
        "action": "issue", "operator": "hq", "area_ids": ["fujimi"], "level": 3,
        "hazard": "landslide",
    }
    manual = decode_event(document)
    assert key_for(manual) == str(manual.event_id).encode()


def test_qualified_names_live_and_namespaced() -> None:
    """The live namespace uses plain names; others prefix them with a dot."""
    assert qualified("reports") == "reports"
    assert qualified("reports", LIVE) == "reports"
    assert qualified("shelters.state", "t3fa9c0d1e2b4") == "t3fa9c0d1e2b4.shelters.state"
    assert qualified("reports", "drill.2025-08-21") == "drill.2025-08-21.reports"
    for name, _ in topics_in("drill.x"):
        assert KAFKA_NAME.fullmatch(name) and name.startswith("drill.x.")


@pytest.mark.parametrize(
    "namespace",
    ["Drill", "1drill", "drill_1", "drill..x", "drill.", "a.b.c.d", "x" * 42, "reports",
     "evacuation.x", "dr ill"],
)
def test_invalid_namespaces_are_refused(namespace: str) -> None:
    """Bad prefixes, and prefixes that look like live topics, raise InvalidNamespace."""
    with pytest.raises(InvalidNamespace) as excinfo:
        qualified("reports", namespace)
    assert repr(namespace) in str(excinfo.value)


def test_valid_namespaces() -> None:
    """Test and drill prefixes from the harness and the drill runner are accepted."""
    for namespace in ("t0123456789ab", "drill.42", "drill.2025-08-21", "a", "exercise.a.b"):
        assert validate_namespace(namespace) == namespace


def test_unknown_topic() -> None:
    """A name outside the catalogue raises UnknownTopic."""
    with pytest.raises(UnknownTopic):
        qualified("orders")
    with pytest.raises(UnknownTopic):
        split_qualified("t1.orders")


def test_split_qualified_inverts_qualified() -> None:
    """split_qualified recovers the namespace and the spec, longest name first."""
    for namespace in (LIVE, "t1", "drill.2025-08-21"):
        for name in CATALOGUE:
            assert split_qualified(qualified(name, namespace)) == (namespace, CATALOGUE[name])


def test_check_carries_names_both_topic_and_type() -> None:
    """Producing an event to a topic that does not carry it raises WrongTopic."""
    event = example("report.submitted")
    assert check_carries("reports", event) is CATALOGUE["reports"]
    assert check_carries("t1.reports", event) is CATALOGUE["reports"]
    with pytest.raises(WrongTopic) as excinfo:
        check_carries("t1.shelters.state", event)
    message = str(excinfo.value)
    assert "t1.shelters.state" in message and "report.submitted" in message
    assert "'reports'" in message
    with pytest.raises(WrongTopic):
        check_carries("deadletter", event)


def test_route_gives_topic_key_and_value() -> None:
    """route() picks the qualified topic, the aggregate key and the encoded event."""
    for event_type, event in EXAMPLES.items():
        routed = route(event, "t1")
        _, spec = split_qualified(routed.topic)
        assert event_type in spec.event_types
        assert routed.key == key_for(event)
        assert decode_event(routed.value) == event
