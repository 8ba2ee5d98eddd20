"""People and supplies through the real broker: HQ and a site's staff see them, the public not."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from services.common.auth import Role, issue_token
from tests.support import produce_events
from tests.support.gateway import SECRET, fresh, gateway, gateway_settings, peer, token

pytestmark = pytest.mark.integration

SPORTS_CENTER = "e1310100006201"  # a kanda-koen shelter of the Chiyoda pack
SAKURA = "e1310100007201"         # another kanda-koen site


def kinds(state: dict[str, Any]) -> set[str]:
    """The kinds a mirrored picture holds entities of."""
    return {kind for kind, entities in state.items() if entities}


async def test_new_topics_reach_hq_and_the_sites_staff_but_never_the_public(
        kafka_bootstrap: str, namespace: str) -> None:
    """At-home, supply and generator events reach HQ (and a site's own requests its staff)."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    household = str(uuid.uuid4())
    ours, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    events = [
        fresh("people.at_home_reported", household_id=household, address="神田司町二丁目 9-9"),
        fresh("supply.requested", request_id=ours, site_id=SPORTS_CENTER),
        fresh("supply.requested", request_id=theirs, site_id=SAKURA),
        fresh("supply.assigned", request_id=ours),
        fresh("generator.registered"),
        fresh("generator.status_reported"),
    ]
    staff_token = issue_token(SECRET, Role.SHELTER_STAFF, "sports-center-staff",
                              timedelta(hours=1), areas=("kanda-koen",),
                              shelters=(SPORTS_CENTER,))
    async with gateway(settings) as gw, peer(gw, token=token(Role.HQ)) as hq, \
            peer(gw) as public, peer(gw, token=staff_token) as staff:
        for client in (hq, public, staff):
            await client.until(lambda m: m["type"] == "snapshot")
        assert (await _welcome(staff))["role"] == "shelter_staff"
        await produce_events(kafka_bootstrap, namespace, events)

        def hq_has_all(_: Any) -> bool:
            supply = hq.state.get("supply_request", {})
            return ({"at_home", "welfare_check", "generator"} <= kinds(hq.state)
                    and supply.get(ours, {}).get("status") == "assigned" and theirs in supply)

        await hq.until(hq_has_all)
        assert hq.state["welfare_check"][household]["address"] == "神田司町二丁目 9-9"
        assert hq.state["generator"]["kanda-tsukasa-gen-1"]["state"] == "fuel_low"
        await staff.until(lambda _: staff.state.get("supply_request", {}).get(
            ours, {}).get("status") == "assigned")

        # Everything above is folded; a public order after it flushes the public's queue.
        order = fresh("evacuation.order_issued", order_id=str(uuid.uuid4()))
        await produce_events(kafka_bootstrap, namespace, [order])
        order_id = str(order.payload.order_id)  # type: ignore[attr-defined]
        await public.until(lambda _: order_id in public.state.get("order", {}))
        await staff.until(lambda _: order_id in staff.state.get("order", {}))
        people_kinds = {"at_home", "welfare_check", "supply_request", "generator"}
        assert not people_kinds & kinds(public.state)
        assert not [c for m in public.messages if m["type"] == "delta"
                    for c in m["changes"] if c["kind"] in people_kinds]
        assert "神田司町二丁目" not in str(public.messages)
        assert set(staff.state["supply_request"]) == {ours}
        assert not {"at_home", "welfare_check"} & kinds(staff.state)


async def _welcome(client: Any) -> dict[str, Any]:
    welcome: dict[str, Any] = next(m for m in client.messages if m["type"] == "welcome")
    return welcome
