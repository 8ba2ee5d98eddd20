"""The public picture over plain HTTP on a real gateway: ETags, 304s, caching, what it holds."""

from __future__ import annotations

import json
import uuid

import aiohttp
import pytest
from aiohttp import web

from infra.embedded.processes import free_port
from schemas.region import load_region
from services.gateway.cop import COP, Kind, RegionIndex
from services.gateway.http import build_app
from services.gateway.hub import Hub
from services.gateway.portal import SNAPSHOT_MAX_AGE
from tests.support import produce_events, wait_for
from tests.support.gateway import fresh, gateway, gateway_settings, peer, report

pytestmark = pytest.mark.integration

PRIVATE = ("佐藤", "reporter", "description", "casualties", "occupancy", "rationale")


async def test_snapshot_is_the_public_view_with_a_strong_etag_and_304(
        kafka_bootstrap: str, namespace: str) -> None:
    """GET gives the websocket's public view, tagged; revalidation is 304 until it changes."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    order = fresh("evacuation.order_issued")
    await produce_events(kafka_bootstrap, namespace, [report(area="kanda-koen"), order,
                                                      fresh("shelter.status_changed")])
    async with gateway(settings) as gw, aiohttp.ClientSession() as http:
        await wait_for(lambda: gw.hub.cop.entities[Kind.ORDER]
                       and gw.hub.cop.entities[Kind.REPORT]
                       and gw.hub.cop.entities[Kind.SHELTER], timeout=20, what="events read")
        url = gw.dashboard_url + "v1/public/snapshot"
        async with http.get(url) as r:
            assert r.status == 200
            assert r.content_type == "application/json"
            assert r.headers["Cache-Control"] == f"public, max-age={SNAPSHOT_MAX_AGE}"
            etag = r.headers["ETag"]
            assert etag.startswith('"') and len(etag) > 10
            text = await r.text()
        assert not [w for w in PRIVATE if w in text]
        async with peer(gw) as public:
            snapshot = await public.until(lambda m: m["type"] == "snapshot")
        assert json.loads(text)["state"] == snapshot["state"]

        async with http.get(url, headers={"If-None-Match": etag}) as r:
            assert r.status == 304
            assert r.headers["ETag"] == etag
            assert await r.read() == b""

        # A report is not public: the tag stays. An order is: the tag changes.
        await produce_events(kafka_bootstrap, namespace, [report(area="jimbocho")])
        await wait_for(lambda: len(gw.hub.cop.entities[Kind.REPORT]) == 2, timeout=20,
                       what="second report")
        async with http.get(url, headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        other = fresh("evacuation.order_issued", order_id=str(uuid.uuid4()))
        await produce_events(kafka_bootstrap, namespace, [other])
        await wait_for(lambda: len(gw.hub.cop.entities[Kind.ORDER]) == 2, timeout=20,
                       what="second order")
        async with http.get(url, headers={"If-None-Match": etag}) as r:
            assert r.status == 200
            assert r.headers["ETag"] != etag
            assert str(other.payload.order_id) in await r.text()  # type: ignore[attr-defined]


async def test_area_snapshots_and_bad_area_requests(kafka_bootstrap: str,
                                                    namespace: str) -> None:
    """?area= narrows to those areas; unknown ids or more than three are 400 naming 'area'."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    async with gateway(settings) as gw, aiohttp.ClientSession() as http:
        url = gw.dashboard_url + "v1/public/snapshot"
        async with http.get(url, params=[("area", "jimbocho"), ("area", "kanda-koen")]) as r:
            assert r.status == 200
            body = await r.json()
        assert body["areas"] == ["jimbocho", "kanda-koen"]
        assert set(body["state"]["area"]) == {"jimbocho", "kanda-koen"}
        async with http.get(url, params={"area": "atlantis"}) as r:
            assert r.status == 400
            assert "area" in await r.text() and "atlantis" in await r.text()
        four = ",".join(d.id for d in load_region().districts[:4])
        async with http.get(url, params={"area": four}) as r:
            assert r.status == 400
            assert "at most 3" in await r.text()


async def test_shelter_list_manifest_worker_and_icons_are_served(kafka_bootstrap: str,
                                                                 namespace: str) -> None:
    """The offline list (tagged, 304), manifest, service worker and icons, with the CSP."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    async with gateway(settings) as gw, aiohttp.ClientSession() as http:
        base = gw.dashboard_url
        async with http.get(base + "v1/public/shelters") as r:
            assert r.status == 200
            etag = r.headers["ETag"]
            sites = (await r.json())["sites"]
            assert "max-age" in r.headers["Cache-Control"]
        assert len(sites) == len(load_region().sites)
        assert all(s["address"] and s["names"]["ja"] for s in sites)
        async with http.get(base + "v1/public/shelters", headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        async with http.get(base + "manifest.webmanifest") as r:
            assert r.status == 200 and r.content_type == "application/manifest+json"
            assert (await r.json(content_type=None))["start_url"] == "/"
        async with http.get(base + "sw.js") as r:
            assert r.status == 200 and r.content_type == "text/javascript"
            assert r.headers["Service-Worker-Allowed"] == "/"
            assert "showNotification" in await r.text()
        async with http.get(base + "icons/icon-192.png") as r:
            assert r.status == 200 and r.content_type == "image/png"
        async with http.get(base + "icons/nothing.png") as r:
            assert r.status == 404
        async with http.get(base) as r:
            csp = r.headers["Content-Security-Policy"]
            assert "manifest-src 'self'" in csp and "worker-src 'self'" in csp
            assert 'rel="manifest"' in await r.text()


async def test_snapshot_is_503_and_not_cacheable_until_caught_up() -> None:
    """A gateway still reading the log answers 503 no-store, so no cache keeps a partial picture."""
    region = load_region()
    hub = Hub(COP.empty(RegionIndex.from_region(region)), "")
    runner = web.AppRunner(build_app(region, gateway_port=1, namespace="", hub=hub))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/v1/public/snapshot"
            async with http.get(url) as r:
                assert r.status == 503
                assert r.headers["Cache-Control"] == "no-store"
            hub.ready.set()
            async with http.get(url) as r:
                assert r.status == 200
    finally:
        await runner.cleanup()
