"""Raw-topic ingest: valid records become events, bad ones are dead-lettered, nothing stops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka.structs import TopicPartition

from infra.kafka import clients
from infra.settings import Settings
from infra.topics import ensure_topics
from schemas.deadletter import DeadLetter
from schemas.topics import qualified
from services.common.auth import Role, issue_token
from services.common.deadletter import TOKEN_REMOVED
from services.intake.ingest import Ingest
from services.intake.metrics import IntakeMetrics
from services.intake.relay import Relay
from services.intake.service import Intake
from services.intake.store import Store
from tests.support import (
    REGION,
    SECRET,
    make_settings,
    prepare_schema,
    read_topic,
    report_body,
    token,
    wait_for,
)

pytestmark = pytest.mark.integration


def raw(kind: str, data: Any, **extra: Any) -> bytes:
    """A raw envelope."""
    return json.dumps({"kind": kind, "source": "test-bridge", "data": data, **extra},
                      ensure_ascii=False).encode()


@pytest.fixture
async def settings(kafka_bootstrap: str, database_url: str, namespace: str,
                   db_pool: asyncpg.Pool) -> AsyncIterator[Settings]:
    """A migrated schema and the namespace's topics."""
    the_settings = make_settings(kafka_bootstrap, database_url, namespace)
    await prepare_schema(db_pool)
    await ensure_topics(the_settings, namespace)
    yield the_settings


async def _run(intake: Intake, settings: Settings, group_id: str,
               stop: asyncio.Event) -> asyncio.Task[None]:
    return asyncio.create_task(Ingest(intake, settings, group_id=group_id).run(stop))


async def test_raw_records_become_events_or_dead_letters(settings: Settings,
                                                         db_pool: asyncpg.Pool) -> None:
    """Valid records reach their topics once; garbage, bad JSON, bad fields and bad tokens
    are dead-lettered with the error and the original bytes (a token removed), and the
    consumer carries on."""
    gauge = REGION.gauges[0].id
    expired = issue_token(SECRET, Role.SENSOR, "feed", timedelta(seconds=5),
                          now=datetime.now(UTC) - timedelta(hours=1))
    good = [
        raw("report", report_body("raw-1")),
        raw("gauge_reading", {"gauge_id": gauge, "level_m": 3.1,
                              "observed_at": "2025-08-21T05:00:00Z"}, id="reading-1"),
    ]
    bad = {
        "garbage": b"\xff\x00\x01 not json",
        "bad json": b'{"kind": "report", ',
        "bad field": raw("gauge_reading", {"gauge_id": gauge, "level_m": "4.3m",
                                           "observed_at": "2025-08-21T05:00:00Z"}),
        "bad envelope": json.dumps({"kind": "teleport", "data": {}}).encode(),
        "forbidden": raw("warning", {"warning_id": "w1"}, token=token(Role.FIELD, "field-1")),
        "expired": raw("report", report_body("raw-x"), token=expired),
    }
    # What the letters keep: the records as sent, but never a bearer token.
    kept = {name: value for name, value in bad.items() if name not in ("forbidden", "expired")}
    kept["forbidden"] = raw("warning", {"warning_id": "w1"}, token=TOKEN_REMOVED)
    kept["expired"] = raw("report", report_body("raw-x"), token=TOKEN_REMOVED)
    last = raw("report", report_body("raw-2", severity=2), token=token(Role.FIELD, "field-1"))
    producer = clients.producer(settings)
    await producer.start()
    topic = qualified("intake.raw", settings.namespace)
    try:
        for value in [good[0], *bad.values(), good[1], last]:
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()

    metrics = IntakeMetrics()
    store = Store(db_pool, settings.namespace)
    intake = Intake(store, REGION, metrics=metrics)
    relay = Relay(store, lambda: clients.producer(settings), metrics=metrics, poll_interval=0.2)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stop)),
             await _run(intake, settings, "ingest-test-1", stop)]
    try:
        async def reports() -> list[dict[str, Any]]:
            records = await read_topic(settings, qualified("reports", settings.namespace))
            return [json.loads(r.value) for r in records if r.value]

        async def dead() -> list[DeadLetter]:
            records = await read_topic(settings, qualified("deadletter", settings.namespace))
            return [DeadLetter.model_validate_json(r.value) for r in records if r.value]

        await wait_for(lambda: _count(reports, 4), timeout=20, what="4 report events")
        letters = await wait_for(lambda: _at_least(dead, len(bad)), timeout=20,
                                 what="dead letters")
        assert len(letters) == len(bad)
        originals = {letter.original_bytes(): letter for letter in letters}
        assert set(originals) == set(kept.values())  # the exact bytes, binary included
        assert originals[kept["garbage"]].error.startswith("MalformedInput")
        assert originals[kept["bad field"]].problems[0].field == "data.level_m"
        assert "may not" in originals[kept["forbidden"]].error
        assert originals[kept["expired"]].error.startswith("TokenExpired")
        assert not any(b"eyJ" in r.value for r in await read_topic(
            settings, qualified("deadletter", settings.namespace)) if r.value)
        assert all(letter.service == "intake" and letter.topic == topic for letter in letters)

        events = await reports()
        by_type = sorted(e["type"] for e in events)
        assert by_type == ["report.accepted"] * 2 + ["report.submitted"] * 2
        teams = {e["payload"]["reporter"]["team"] for e in events if e["type"] ==
                 "report.submitted"}
        assert teams == {"raw:test-bridge", "field-1"}
        hazards = await read_topic(settings, qualified("hazards.observations",
                                                       settings.namespace))
        assert len(hazards) == 1

        # Offsets are committed once every record is recorded or dead-lettered.
        checker = clients.consumer(settings, group_id="ingest-test-1")
        await checker.start()
        try:
            async def committed_total() -> int:
                offsets = [await checker.committed(TopicPartition(topic, p)) for p in range(4)]
                return sum(o or 0 for o in offsets)

            await wait_for(lambda: _equals(committed_total, 2 + len(bad) + 1),
                           what="offsets committed")
        finally:
            await checker.stop()

        # Reading everything again (a new group) writes no second event.
        tasks.append(await _run(intake, settings, "ingest-test-2", stop))
        await wait_for(lambda: _at_least(dead, 2 * len(bad)), timeout=20,
                       what="the second pass to finish")
        await wait_for(lambda: _equals(store.backlog, 0), what="outbox drained")
        assert len(await reports()) == 4
        assert metrics.registry.get_sample_value(
            "intake_raw_records_total", {"outcome": "duplicate"}) == 3
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)


async def _count(read: Any, n: int) -> bool:
    return len(await read()) >= n


async def _at_least(read: Any, n: int) -> Any:
    items = await read()
    return items if len(items) >= n else None


async def _equals(read: Any, n: int) -> bool:
    return bool(await read() == n)
