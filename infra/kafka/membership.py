"""Is a consumer in its group and consuming: what a consumer service's health beacon says.

aiokafka exposes the assignment but not whether the group coordinator still
knows the member; after the broker goes away the old assignment stays until the
next rejoin. So a member counts as consuming only when its coordinator is known
and it has a member id and partitions assigned. The coordinator fields are
aiokafka's own (``GroupCoordinator.coordinator_id`` / ``member_id``, 0.14), read
here and nowhere else.
"""

from __future__ import annotations

from typing import Any

__all__ = ["faust_membership", "group_membership"]


def group_membership(consumer: Any) -> tuple[bool, str]:
    """``(serving, detail)`` for an aiokafka consumer subscribed with a ``group_id``."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None:
        return False, "consumer not started"
    group = getattr(coordinator, "group_id", "?")
    if getattr(coordinator, "coordinator_id", None) is None:
        return False, f"group {group}: no coordinator (broker unreachable or restarting)"
    if not getattr(coordinator, "member_id", ""):
        return False, f"group {group}: not a member (joining)"
    assigned = consumer.assignment()
    if not assigned:
        return False, f"group {group}: no partitions assigned"
    return True, f"group {group}: member, {len(assigned)} partitions"


def faust_membership(app: Any) -> tuple[bool, str]:
    """``(serving, detail)`` for a faust app's worker consumer."""
    if getattr(app, "rebalancing", False):
        return False, f"group {app.conf.id}: rebalancing"
    consumer = getattr(app.consumer, "_thread", None)
    inner = getattr(consumer, "_consumer", None)
    if inner is None:
        return False, f"group {app.conf.id}: consumer not started"
    return group_membership(inner)
