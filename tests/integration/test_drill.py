"""Drills on the real broker and PostgreSQL: record, isolated replay, services, report, verify.

The decision services (shelter tracker, evacuation, broadcaster) are the
registered ones (sonae/registry.py), started for each drill namespace by the
drill runner itself and stopped by it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from infra.db.migrate import migrate
from infra.kafka import clients
from infra.kafka.compat import end_offsets
from infra.settings import Settings, load_settings
from infra.topics import ensure_topics
from schemas.evacuation import EvacuationCommand, EvacuationRecommended
from schemas.events import Event, encode_event
from schemas.topics import CATALOGUE, LIVE, key_for, qualified, route
from services.drill.errors import DrillError, NotIsolated
from services.drill.logformat import DrillLog, read_log
from services.drill.record import record
from services.drill.replay import IdMap
from services.drill.report.collect import collect, collect_from_store
from services.drill.report.model import build_report
from services.drill.runner import ReplayOptions, replay
from services.drill.verify import verify
from sonae.drill_services import running_services
from sonae.registry import SERVICES
from sonae.tools.build_heavy_rain import OUTPUT as HEAVY_RAIN
from tests.support import produce_events

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def dsn(database_url: str, db_schema: str) -> str:
    """A DSN whose search_path is the test's own, migrated schema."""
    url = f"{database_url}?search_path={db_schema}"
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


@pytest.fixture
def settings(kafka_bootstrap: str, dsn: str, tmp_path: Path) -> Settings:
    """Settings against the session's broker and the test's schema."""
    return load_settings(kafka_bootstrap=kafka_bootstrap, database_url=dsn,
                         data_dir=tmp_path / "data", region="chiyoda", log_level="INFO")


@pytest.fixture(scope="module")
def scenario() -> DrillLog:
    """The shipped heavy-rain scenario."""
    return read_log(HEAVY_RAIN)


async def store(dsn: str, events: list[Event], namespace: str = LIVE) -> None:
    """Append events to the event store as the recorder would (one row per event)."""
    conn = await asyncpg.connect(dsn)
    try:
        for offset, e in enumerate(events):
            await conn.execute(
                "insert into events (event_id, type, schema_version, topic, partition, "
                '"offset", key, occurred_at, recorded_at, exercise, namespace, envelope) '
                "values ($1, $2, $3, $4, 0, $5, $6, $7, $8, $9, $10, $11::jsonb)",
                e.event_id, e.type, e.schema_version, route(e, namespace).topic, offset,
                key_for(e).decode(), e.occurred_at, e.recorded_at, e.exercise, namespace,
                encode_event(e).decode())
    finally:
        await conn.close()


async def ends(settings: Settings, namespace: str) -> dict[TopicPartition, int]:
    """End offsets of every catalogue topic of ``namespace`` (exact, via the compat layer)."""
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(qualified(name, namespace), p)
               for name, spec in CATALOGUE.items() for p in range(spec.partitions)]
        return await end_offsets(consumer, tps, profile=settings.kafka_profile)
    finally:
        await consumer.stop()


async def read_all(settings: Settings, namespace: str) -> list[Event]:
    """Every event on the namespace's topics."""
    return [o.event for o in await collect(settings, namespace)]


# --- record ---------------------------------------------------------------------------


async def test_record_exports_a_window_of_inputs_and_the_decisions_they_led_to(
        dsn: str, scenario: DrillLog, tmp_path: Path) -> None:
    """`sonae drill record` writes a window's inputs, in order, with referenced decisions."""
    since = datetime(2025, 8, 21, 5, 5, tzinfo=UTC)  # 14:05 JST: after the first recommendations
    until = datetime(2025, 8, 21, 6, 0, tzinfo=UTC)  # 15:00 JST
    await store(dsn, [*scenario.inputs, *scenario.references])
    # The same events in another namespace must not leak into a live recording.
    other = [e.model_copy(update={"event_id": uuid.uuid4()}) for e in scenario.inputs[:5]]
    await store(dsn, other, namespace="drill.elsewhere")
    out = tmp_path / "window.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sonae.cli", "drill", "record", "--since", "2025-08-21T14:05+09:00",
        "--until", "2025-08-21T15:00+09:00", "-o", str(out), "--database-url", dsn,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    log = read_log(out)
    expected = [e for e in scenario.inputs if since <= e.occurred_at < until]
    assert [e.event_id for e in log.inputs] == [e.event_id for e in expected]
    assert log.header.recorded_from.kind == "event-store"
    assert log.header.recorded_from.database is not None
    assert "postgres@" not in out.read_text(encoding="utf-8")  # never the credentials
    # Every command in the window can be matched: the recommendations it names are there,
    # including those made before the window.
    named = {e.payload.recommendation_id for e in log.inputs
             if isinstance(e, EvacuationCommand)}
    recommended = {e.payload.recommendation_id for e in log.references
                   if isinstance(e, EvacuationRecommended)}
    assert named and named <= recommended
    assert any(r.occurred_at < since for r in log.references)
    assert f"recorded {len(expected)} inputs" in stderr.decode()
    # The report reads the event store too (the recorder's copy of a namespace).
    stored = await collect_from_store(dsn, LIVE)
    report = build_report(stored, namespace=LIVE, region="chiyoda")
    assert len(report.chains) == 20 and all(o.wall is not None for o in stored)
    # Recording into an empty window is a clear error, not an empty file.
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(DrillError, match="window is empty"):
            await record(conn, since=until, until=since, region="chiyoda", database="x")
    finally:
        await conn.close()


# --- isolation ------------------------------------------------------------------------


async def test_a_max_speed_replay_leaves_live_topics_and_channels_untouched(
        settings: Settings, scenario: DrillLog, namespace: str) -> None:
    """Every replayed event lands in the drill's topics, flagged exercise; live sees nothing."""
    live = settings.model_copy(update={"namespace": LIVE})
    await ensure_topics(live)
    await produce_events(settings.kafka_bootstrap, LIVE, scenario.inputs[:12])
    # A live consumer group, positioned at the end of every live topic.
    group = f"live-{namespace}"
    consumer = clients.consumer(live, *(qualified(n, LIVE) for n in CATALOGUE), group_id=group)
    await consumer.start()
    try:
        before = await ends(live, LIVE)
        await asyncio.wait_for(_consume_to(consumer, before), 60)
        await consumer.commit()
        committed = {tp: await consumer.committed(tp) for tp in before}

        drill_ns = f"drill.{namespace}"
        result = await replay(settings, scenario, drill_ns, ReplayOptions(speed=None),
                              services=(False, False))
        assert result.sent == result.total == len(scenario.inputs)
        assert result.commands_unresolved == sum(e.type == "evacuation.command"
                                                for e in scenario.inputs)
        replayed = await read_all(settings, drill_ns)
        ids = IdMap(drill_ns)
        assert sorted(str(e.event_id) for e in replayed) \
            == sorted(str(ids(e.event_id)) for e in scenario.inputs)
        assert all(e.exercise for e in replayed)
        # Batched by the replayer, each key still lands where a plain send() puts it.
        assert await _partitions_as_send_would(settings, drill_ns)
        assert await ends(live, LIVE) == before  # live topics (public feed included) unchanged
        assert {tp: await consumer.committed(tp) for tp in before} == committed
        assert not await consumer.getmany(timeout_ms=500)  # nothing new for live consumers
    finally:
        await consumer.stop()
    with pytest.raises(NotIsolated):
        await replay(settings, scenario, LIVE, ReplayOptions(speed=None))


async def _partitions_as_send_would(settings: Settings, namespace: str) -> bool:
    partitioner = DefaultPartitioner()
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [tp for tp, end in (await ends(settings, namespace)).items() if end > 0]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        checked = 0
        for records in (await consumer.getmany(*tps, timeout_ms=2000)).values():
            for r in records:
                assert r.key is not None
                everyone = sorted(consumer.partitions_for_topic(r.topic) or ())
                assert r.partition == partitioner(r.key, everyone, everyone), r
                checked += 1
        return checked > 0
    finally:
        await consumer.stop()


async def _consume_to(consumer: object, targets: dict[TopicPartition, int]) -> None:
    from aiokafka import AIOKafkaConsumer

    assert isinstance(consumer, AIOKafkaConsumer)
    while True:
        await consumer.getmany(timeout_ms=200)
        positions = {tp: await consumer.position(tp) for tp in consumer.assignment()}
        if positions and all(positions.get(tp, 0) >= end for tp, end in targets.items()
                             if tp in positions) and len(positions) == len(targets):
            return


# --- with the services ----------------------------------------------------------------


# Two runs, each starting three services: ~45 s alone, more beside other test workers.
@pytest.mark.timeout(300)
async def test_with_the_decision_services_the_report_has_latencies_and_verify_agrees(
        settings: Settings, scenario: DrillLog) -> None:
    """Two max-speed replays with the services decide the same; the report times each area."""
    registered = {s.name for s in SERVICES}
    assert "evacuation" in registered and "broadcaster" in registered
    live = settings.model_copy(update={"namespace": LIVE})
    await ensure_topics(live)
    live_before = await ends(live, LIVE)
    outcome = await verify(settings, scenario, prefix=f"v{uuid.uuid4().hex[:8]}",
                           launcher=running_services)
    assert outcome.identical, "\n".join(outcome.differences[:40])
    first = outcome.runs[0]
    assert first.result is not None and not first.result.skipped
    assert first.result.commands_replayed == sum(e.type == "evacuation.command"
                                                 for e in scenario.inputs)
    summary = first.summary()
    assert summary["evacuation.recommended"] == 20 and summary["evacuation.order_issued"] == 6
    assert summary.get("broadcast.published", 0) > 0

    observed = await collect(settings, first.namespace)
    assert all(o.event.exercise for o in observed)
    report = build_report(observed, namespace=first.namespace, region="chiyoda", log=scenario,
                          run=first.result.manifest())
    groups = report.per_area()
    assert ("manseibashi", "flood") in groups and ("fujimi", "landslide") in groups
    approved = [c for c in report.chains if c.outcome == "approved"]
    assert approved and all(c.latencies()["event"]["order"] is not None for c in approved)
    assert all(c.latencies()["wall"]["approval"] is not None for c in approved)
    # The replay decided at the same event times as the scenario's reference run.
    assert report.comparison is not None and report.unmatched_original == 0
    assert all(d in (None, 0.0) for c in report.comparison
               for k, d in c.delta.items() if not k.startswith("message_"))
    if "shelter-tracker" in registered:
        # Shelter updates went through the tracker, in step with the decision service.
        assert first.result.shelter_tracker
        curve = report.shelters["e1310100005201"]  # 神田一橋中学校 fills to capacity
        assert curve["peak"] == 500 and "crowded" in curve["first"]
    messages = [c for c in approved if c.messages]
    assert messages and all(set(c.messages) <= {"ja", "en", "zh", "ko"} for c in messages)
    # Live operations saw none of it: no live topic (public feed included) moved.
    assert await ends(live, LIVE) == live_before
