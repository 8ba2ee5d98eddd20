"""A consumer's health says "serving" only while it is in its group with partitions."""

from __future__ import annotations

import pytest
from aiokafka.admin import NewTopic

from infra.kafka import clients
from infra.kafka.membership import group_membership
from infra.settings import load_settings
from tests.support import wait_for

pytestmark = pytest.mark.integration


async def test_membership_needs_partitions_assigned_in_the_group(kafka_bootstrap: str,
                                                                 namespace: str) -> None:
    """One member of a one-partition topic serves; a second member that gets no partition
    does not, though its process is as alive as the first."""
    settings = load_settings(kafka_bootstrap=kafka_bootstrap, development=True)
    topic = f"{namespace}.membership"
    group = f"{namespace}-group"
    admin = clients.admin(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    first = clients.consumer(settings, topic, group_id=group)
    second = clients.consumer(settings, topic, group_id=group)
    assert group_membership(first) == (False, "consumer not started")
    await first.start()
    try:
        await wait_for(lambda: group_membership(first)[0], timeout=30,
                       what="the first consumer to join its group")
        assert group_membership(first)[1] == f"group {group}: member, 1 partitions"
        await second.start()
        try:
            # Both poll so the rebalance completes; then exactly one holds the partition.
            async def settled() -> bool:
                await first.getmany(timeout_ms=50)
                await second.getmany(timeout_ms=50)
                states = [group_membership(c) for c in (first, second)]
                return sorted(s for s, _ in states) == [False, True] and all(
                    "member" in d or "no partitions" in d for _, d in states)
            await wait_for(settled, timeout=30, what="one member with the partition, one without")
            idle = first if not group_membership(first)[0] else second
            assert group_membership(idle)[1] == f"group {group}: no partitions assigned"
        finally:
            await second.stop()
    finally:
        await first.stop()
