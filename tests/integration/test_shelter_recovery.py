"""Shelter tracker recovery with real processes on the real broker: SIGKILL, restart, failover.

Both tests wait, before killing a worker, until the group has committed every
input offset. Then nothing is redelivered after the kill, so whatever the next
worker knows it restored from the tables' changelogs, and a state whose version
continues from the old one proves the table came back exactly.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from infra.kafka import clients, compat
from infra.settings import Settings, load_settings
from infra.topics import ensure_topics
from schemas.envelope import Envelope, new_event
from schemas.region import load_region
from schemas.shelters import (
    ShelterAreaSummary,
    ShelterCapacityAlert,
    ShelterNeedsReported,
    ShelterOccupancyReported,
    ShelterOpened,
    ShelterState,
    ShelterStatusChanged,
)
from schemas.topics import CATALOGUE, qualified
from services.shelter_tracker.app import app_id
from services.shelter_tracker.domain import shelter_sites
from tests.integration.faust_apps.shelter_worker import (
    TopicReader,
    TrackerWorker,
    readers,
    workers,
)
from tests.support import produce_events, wait_for

pytestmark = pytest.mark.integration

T0 = datetime(2025, 8, 21, 5, 0, tzinfo=UTC)
TEAM = {"team": "避難所運営班"}
READY_TIMEOUT = 60.0


@pytest.fixture
async def settings(kafka_bootstrap: str, namespace: str) -> Settings:
    """Chiyoda (15 shelters over 4 partitions) in the test's namespace, topics created."""
    settings = load_settings(kafka_bootstrap=kafka_bootstrap, namespace=namespace,
                             region="chiyoda", log_level="INFO")
    await ensure_topics(settings)
    return settings


SITES = shelter_sites(load_region("chiyoda"))
SHELTERS_PER_AREA = Counter(site.area_id for site in SITES.values())


def update(cls: type[Any], minute: float, **payload: Any) -> Envelope:
    result: Envelope = new_event(cls, {"reported_by": TEAM, **payload},
                                 occurred_at=T0 + timedelta(minutes=minute), source="intake")
    return result


def before_the_kill() -> list[Envelope]:
    """Open every shelter, make every other one crowded, put some on a low generator."""
    events: list[Envelope] = []
    for i, site in enumerate(SITES.values()):
        capacity = site.planned_capacity or 100
        share = 0.85 if i % 2 == 0 else 0.40
        events += [update(ShelterOpened, 0, shelter_id=site.shelter_id),
                   update(ShelterOccupancyReported, 1, shelter_id=site.shelter_id,
                          occupancy=int(capacity * share), households=i)]
        if i % 3 == 0:
            events.append(update(ShelterNeedsReported, 2, shelter_id=site.shelter_id,
                                 needs={"food": "low"},
                                 power={"kind": "generator", "fuel_hours_left": 4.0}))
    return events


def after_the_kill(minute: float) -> list[Envelope]:
    """One count per shelter that keeps it in its band (78 % stays crowded by hysteresis)."""
    events: list[Envelope] = []
    for i, site in enumerate(SITES.values()):
        capacity = site.planned_capacity or 100
        share = 0.78 if i % 2 == 0 else 0.42
        events.append(update(ShelterOccupancyReported, minute, shelter_id=site.shelter_id,
                             occupancy=int(capacity * share), households=i))
    return events


def latest_states(reader: TopicReader) -> dict[str, ShelterState]:
    out: dict[str, ShelterState] = {}
    for event in reader.events:
        if isinstance(event, ShelterStatusChanged):
            known = out.get(event.payload.shelter_id)
            if known is None or event.payload.version > known.version:
                out[event.payload.shelter_id] = event.payload
    return out


def versions(reader: TopicReader) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for event in reader.events:
        if isinstance(event, ShelterStatusChanged):
            out.setdefault(event.payload.shelter_id, []).append(event.payload.version)
    return {k: sorted(v) for k, v in out.items()}


def expected_versions(events: Sequence[Envelope]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        shelter = event.payload.shelter_id  # type: ignore[attr-defined]
        counts[shelter] = counts.get(shelter, 0) + 1
    return counts


def area_versions(reader: TopicReader) -> dict[str, int]:
    out: dict[str, int] = {}
    for event in reader.events:
        if isinstance(event, ShelterAreaSummary):
            out[event.payload.area_id] = max(out.get(event.payload.area_id, 0),
                                             event.payload.version)
    return out


def next_area_versions(before: dict[str, int]) -> dict[str, int]:
    """Every shelter's count moves its area's figures: one summary version per shelter."""
    return {area: version + SHELTERS_PER_AREA[area] for area, version in before.items()}


def alert_count(reader: TopicReader) -> int:
    return sum(isinstance(e, ShelterCapacityAlert) for e in reader.events)


async def all_input_committed(settings: Settings) -> None:
    """Wait until the tracker's group has committed the end of both of its inputs."""
    group = app_id(settings.namespace)
    tps = [TopicPartition(qualified("shelters.updates", settings.namespace), p)
           for p in range(CATALOGUE["shelters.updates"].partitions)]
    tps += [TopicPartition(f"{group}-area-changes", p)
            for p in range(CATALOGUE["shelters.areas"].partitions)]
    reader, admin = clients.consumer(settings), clients.admin(settings)
    await reader.start()
    await admin.start()
    try:
        async def committed() -> bool:
            ends = await compat.end_offsets(reader, tps)
            offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
            # -1: nothing committed, which is right for a partition that stayed empty.
            got = {tp: max(offsets[tp].offset, 0) if offsets.get(tp) else 0 for tp in tps}
            return all(got[tp] == ends[tp] for tp in tps)

        await wait_for(committed, timeout=30, interval=0.2, what="committed input offsets")
    finally:
        await reader.stop()
        await admin.close()


def check_restored(before: dict[str, ShelterState], after: dict[str, ShelterState]) -> None:
    """Each new state continues the old one: next version, everything but the count kept."""
    assert set(after) == set(before)
    for shelter, old in before.items():
        new = after[shelter]
        assert new.version == old.version + 1, shelter
        assert new.previous_status == old.status, shelter
        assert new.status == old.status, shelter  # hysteresis latches restored too
        kept = {"version", "previous_status", "occupancy", "last_reported_at"}
        assert new.model_dump(exclude=kept) == old.model_dump(exclude=kept), shelter


async def test_a_killed_worker_restores_its_table_from_the_changelog(
    settings: Settings, tmp_path: Path
) -> None:
    """After SIGKILL and restart, each shelter's next state continues exactly from the old one."""
    first = before_the_kill()
    async with workers(settings, tmp_path) as start, \
            readers(settings, "shelters.state", "shelters.alerts", "shelters.areas") as (
                states, alerts, areas):
        worker = start("first")
        await produce_events(settings.kafka_bootstrap, settings.namespace, first)
        wanted = expected_versions(first)
        await states.until(lambda r: {k: len(v) for k, v in versions(r).items()} == wanted,
                           timeout=READY_TIMEOUT, what="every state before the kill",
                           worker=worker)
        await all_input_committed(settings)
        await alerts.read_to_end()
        await areas.read_to_end()
        before, alerts_before = latest_states(states), alert_count(alerts)
        areas_before = area_versions(areas)
        assert set(areas_before) == set(SHELTERS_PER_AREA) and alerts_before > 0
        worker.kill()

        restarted = start("restarted")  # a fresh data directory too: nothing local survives
        second = after_the_kill(3)
        await produce_events(settings.kafka_bootstrap, settings.namespace, second)
        await states.until(
            lambda r: all(len(v) == wanted[k] + 1 for k, v in versions(r).items()),
            timeout=READY_TIMEOUT, what="every state after the restart", worker=restarted)
        # Exactly one new version per shelter: no replays, no gaps.
        assert versions(states) == {k: list(range(1, n + 2)) for k, n in wanted.items()}
        check_restored(before, latest_states(states))
        # Once the restarted worker has committed its input, everything it produced is
        # on the topics. The latches came back with the table: 78 % keeps a crowded
        # shelter crowded without a second alert, and the area versions continue.
        await all_input_committed(settings)
        await alerts.read_to_end()
        await areas.read_to_end()
        assert alert_count(alerts) == alerts_before
        assert area_versions(areas) == next_area_versions(areas_before)


ASSIGNED = re.compile(r"assigned shelters\.updates partitions \[([0-9, ]*)\]")


def owned_partitions(worker: TrackerWorker) -> set[int] | None:
    """The shelters.updates partitions a worker last said it owns (None before any)."""
    found = ASSIGNED.findall(worker.log_path.read_text(errors="replace"))
    if not found:
        return None
    return {int(p) for p in found[-1].split(",") if p.strip()}


async def test_two_workers_split_the_shelters_and_one_takes_over_when_the_other_dies(
    settings: Settings, tmp_path: Path
) -> None:
    """Two workers split the partitions; after one is SIGKILLed the other continues its states."""
    first = before_the_kill()
    partitions = set(range(CATALOGUE["shelters.updates"].partitions))
    async with workers(settings, tmp_path) as start, \
            readers(settings, "shelters.state", "shelters.areas") as (states, areas):
        a, b = start("a"), start("b")

        def split() -> bool:
            a.check_alive()
            b.check_alive()
            mine, theirs = owned_partitions(a), owned_partitions(b)
            return bool(mine and theirs and not mine & theirs and mine | theirs == partitions)

        await wait_for(split, timeout=READY_TIMEOUT, interval=0.1, what="a split assignment")
        await produce_events(settings.kafka_bootstrap, settings.namespace, first)
        wanted = expected_versions(first)
        await states.until(lambda r: {k: len(v) for k, v in versions(r).items()} == wanted,
                           timeout=READY_TIMEOUT, what="every state before the kill", worker=a)
        await all_input_committed(settings)
        await areas.read_to_end()
        before, areas_before = latest_states(states), area_versions(areas)
        owned_by_a = owned_partitions(a) or set()
        partitioner = DefaultPartitioner()
        a_shelters = {s for s in SITES if partitioner(s.encode(), sorted(partitions),
                                                      sorted(partitions)) in owned_by_a}
        assert a_shelters  # the dying worker did own some shelters
        a.kill()
        # Updates arrive while b is still waiting for a's session to expire: b must
        # take them from where a's committed offsets left off, none skipped.
        second = after_the_kill(3)
        await produce_events(settings.kafka_bootstrap, settings.namespace, second)
        def b_owns_all() -> bool:
            b.check_alive()
            return owned_partitions(b) == partitions

        await wait_for(b_owns_all, timeout=READY_TIMEOUT, interval=0.1,
                       what="b to own every partition")
        await states.until(
            lambda r: all(len(v) == wanted[k] + 1 for k, v in versions(r).items()),
            timeout=READY_TIMEOUT, what="every state after the failover", worker=b)
        assert versions(states) == {k: list(range(1, n + 2)) for k, n in wanted.items()}
        check_restored(before, latest_states(states))
        await all_input_committed(settings)
        await areas.read_to_end()
        assert area_versions(areas) == next_area_versions(areas_before)
