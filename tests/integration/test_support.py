"""The test helpers produce and consume typed events through the real broker."""

from __future__ import annotations

from infra.settings import load_settings
from infra.topics import ensure_topics
from schemas.examples import example
from tests.support import consume_events, produce_events, wait_for


async def test_typed_round_trip_through_the_broker(kafka_bootstrap: str, namespace: str) -> None:
    """Events produced to their catalogue topic are read back equal, in the namespace."""
    await ensure_topics(load_settings(kafka_bootstrap=kafka_bootstrap), namespace)
    sent = [example("report.submitted"), example("report.accepted")]
    assert await produce_events(kafka_bootstrap, namespace, sent) == 2
    got = await consume_events(kafka_bootstrap, namespace, "reports", count=2)
    assert sorted(e.event_id for e in got) == sorted(e.event_id for e in sent)
    assert {e.event_id: e for e in got} == {e.event_id: e for e in sent}


async def test_wait_for_fails_with_what_it_waited_for() -> None:
    """wait_for raises naming the condition when the deadline passes."""
    try:
        await wait_for(lambda: False, timeout=0.1, what="the impossible")
    except AssertionError as exc:
        assert "the impossible" in str(exc)
    else:
        raise AssertionError("wait_for returned for a condition that never held")
