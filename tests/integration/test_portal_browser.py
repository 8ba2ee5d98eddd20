"""The residents' portal in headless Chromium at a phone's width, against a real gateway.

Installs (manifest, service worker), goes offline and still shows the cached
shelters "as of" a time, comes back live, shows a push delivered to the service
worker through the DevTools protocol, and passes axe-core in each language.
Screenshots at 390 px (ja, en, offline) go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from axe_playwright_python.async_playwright import Axe

from schemas.region import load_region
from services.gateway.cop import Kind
from services.gateway.main import Running
from tests.support import produce_events, wait_for
from tests.support.browser import ARTIFACTS, CHROMIUM_ARGS, chromium
from tests.support.gateway import fresh, gateway, gateway_settings

pytestmark = pytest.mark.integration

PHONE = {"width": 390, "height": 844}
AREA = "kanda-koen"  # the example order (level 4, flood) covers it
SHELTER = "e1310100006201"  # in kanda-koen, designated for floods; the example says crowded
LANGUAGES = ("ja", "en", "zh", "ko")


@asynccontextmanager
async def portal_gateway(kafka_bootstrap: str, namespace: str) -> AsyncIterator[Running]:
    """A gateway whose picture has an order, a crowded shelter and a public message."""
    settings = gateway_settings(kafka_bootstrap, namespace)
    await produce_events(kafka_bootstrap, namespace, [
        fresh("evacuation.order_issued"), fresh("shelter.status_changed"),
        fresh("broadcast.published")])
    async with gateway(settings) as gw:
        await wait_for(lambda: all(gw.hub.cop.entities[k] for k in
                                   (Kind.ORDER, Kind.SHELTER, Kind.MESSAGE)),
                       timeout=20, what="order, shelter and message read")
        yield gw


async def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page, one line each."""
    results = await Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}"
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


async def test_portal_installs_works_offline_and_shows_pushed_notifications(
        kafka_bootstrap: str, namespace: str) -> None:
    """Phone width: SW and manifest register; offline shows cached shelters as of a time."""
    executable = chromium()
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    async with portal_gateway(kafka_bootstrap, namespace) as gw, async_playwright() as pw:
        origin = gw.dashboard_url.rstrip("/")
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            # A visitor whose phone is set to New York: the page must still say Tokyo time.
            context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                                timezone_id="America/New_York")
            await context.grant_permissions(["notifications"], origin=origin)
            page = await context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"{origin}/?area={AREA}&lang=ja")
            card = page.locator(f'article[data-area="{AREA}"]')
            await expect(card.locator(".level")).to_contain_text("警戒レベル 4")
            await expect(card.locator(".level")).to_contain_text("避難指示")
            await expect(card.locator(".todo")).to_contain_text("全員避難")
            await expect(card.locator(f'.shelters-open li[data-shelter="{SHELTER}"]')) \
                .to_contain_text("混雑")
            await expect(page.locator("#freshness")).to_have_attribute("data-source", "live")
            # Phone first: nothing wider than the screen, every panel the screen's width.
            layout = await page.evaluate("""() => ({
                page: document.documentElement.scrollWidth, screen: window.innerWidth,
                panels: [...document.querySelectorAll("main > section:not([hidden])")]
                    .map((s) => Math.round(s.getBoundingClientRect().width))})""")
            assert layout["page"] <= layout["screen"], layout
            assert min(layout["panels"]) >= layout["screen"] - 40, layout

            # Installable: the manifest parses with no errors; the worker controls the page.
            cdp = await context.new_cdp_session(page)
            manifest = await cdp.send("Page.getAppManifest")
            assert manifest["url"] == f"{origin}/manifest.webmanifest"
            assert manifest["errors"] == [], manifest["errors"]
            assert json.loads(manifest["data"])["icons"]
            await page.wait_for_function("navigator.serviceWorker.controller !== null")
            await page.wait_for_function("""caches.open("sonae-portal-v1").then(async (c) =>
                Boolean(await c.match("/v1/public/snapshot")) &&
                Boolean(await c.match("/v1/public/shelters")) && Boolean(await c.match("/")))""")

            # Times are the region's, labelled, whatever the phone's zone.
            message = next(iter(gw.hub.cop.entities[Kind.MESSAGE].values()))
            published = message["published_at"] or message["requested_at"]
            local = _parse(published).astimezone(ZoneInfo("Asia/Tokyo")).strftime("%H:%M")
            await expect(card.locator(".messages")).to_contain_text(re.compile(
                local + r".*(JST|GMT\+9)"))

            await page.screenshot(path=str(ARTIFACTS / "portal-390-ja.png"), full_page=True)
            assert await serious_violations(page) == []
            for lang in LANGUAGES[1:]:
                await page.locator("#lang").select_option(lang)
                await expect(page.locator("html")).to_have_attribute("lang", lang)
                if lang == "en":
                    await expect(card.locator(".level")).to_contain_text("Evacuation order")
                    await page.screenshot(path=str(ARTIFACTS / "portal-390-en.png"),
                                          full_page=True)
                else:  # working translations: the page says they await review
                    await expect(page.locator("#review-note")).to_be_visible()
                assert await serious_violations(page) == [], lang
            await page.locator("#lang").select_option("ja")
            await expect(page.locator("#review-note")).to_be_hidden()

            # No network: the page opens from the cache, says so, with its "as of" time.
            await context.set_offline(True)
            await page.reload()
            freshness = page.locator("#freshness")
            await expect(freshness).to_have_attribute("data-source", "offline", timeout=20_000)
            await expect(freshness).to_contain_text(re.compile(r"\d{1,2}:\d{2}.*時点"))
            await expect(card.locator(f'.sites li[data-site="{SHELTER}"]')).to_contain_text(
                "東京都千代田区")
            await expect(card.locator(".level")).to_contain_text("警戒レベル 4")
            await page.screenshot(path=str(ARTIFACTS / "portal-390-ja-offline.png"),
                                  full_page=True)
            # The network returns: live again without a reload.
            await context.set_offline(False)
            await expect(freshness).to_have_attribute("data-source", "live", timeout=30_000)

            # A push delivered to the worker becomes a notification with the area's link.
            registration = await _registration_id(cdp, origin)
            payload = {"title": "【避難指示】神田公園地区", "body": "危険な場所から全員避難",
                       "url": f"/?area={AREA}&lang=ja", "level": 4, "tag": "order-1-v1"}
            await cdp.send("ServiceWorker.deliverPushMessage", {
                "origin": origin, "registrationId": registration,
                "data": json.dumps(payload, ensure_ascii=False)})
            shown = await page.wait_for_function("""navigator.serviceWorker.ready
                .then((r) => r.getNotifications())
                .then((ns) => ns.length ? ns.map((n) => ({title: n.title, body: n.body,
                    tag: n.tag, url: n.data && n.data.url})) : null)""")
            [notification] = await shown.json_value()
            assert notification == {"title": payload["title"], "body": payload["body"],
                                    "tag": payload["tag"], "url": f"{origin}{payload['url']}"}
            assert errors == []
        finally:
            await browser.close()


async def test_notify_control_follows_the_push_key_and_geolocation_picks_the_area(
        kafka_bootstrap: str, namespace: str) -> None:
    """'Notify me' follows /v1/push/key; location picks an area; blocked websockets → HTTP."""
    executable = chromium()
    from playwright.async_api import async_playwright, expect

    jimbocho = next(s for s in load_region().sites if s.district_id == "jimbocho")
    async with portal_gateway(kafka_bootstrap, namespace) as gw, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(
                viewport=PHONE, is_mobile=True, permissions=["geolocation"],
                geolocation={"latitude": jimbocho.lat, "longitude": jimbocho.lon})
            absent = await context.new_page()
            await absent.route("**/v1/push/key", lambda route: route.fulfill(status=404))
            await absent.goto(f"{gw.dashboard_url}?area={AREA}&lang=en")
            await expect(absent.locator(f'article[data-area="{AREA}"]')).to_be_visible()
            await expect(absent.locator("#notify")).to_have_attribute("data-key", "absent")
            await expect(absent.locator("#notify")).to_be_hidden()

            # Geolocation: the district around the position joins the followed areas.
            await absent.locator("#locate").click()
            await expect(absent.locator('article[data-area="jimbocho"]')).to_be_visible()
            await expect(absent.locator('input[value="jimbocho"]')).to_be_checked()

            # Websockets blocked (a proxy that refuses them): the picture comes over HTTP.
            blocked = await context.new_page()
            await blocked.route_web_socket(re.compile(".*"), _refuse)
            await blocked.goto(f"{gw.dashboard_url}?area={AREA}&lang=en")
            await expect(blocked.locator("#freshness")).to_have_attribute("data-source", "http")
            await expect(blocked.locator("#freshness")).to_contain_text(
                re.compile(r"Updating over HTTP.*as of .*\d{2}:\d{2}"))
            await expect(blocked.locator(f'article[data-area="{AREA}"] .level')).to_contain_text(
                "Alert level 4")
            await blocked.close()

            present = await context.new_page()
            key = ("BEl62iUYgUivxIkv69yViEuiBIa-Ib9-SkvMeAtA3LFgDzkrxZJjSgSnfckjBJuBkr3qBUYIHBQ"
                   "FLXYp5Nksh8U")  # any P-256 public key: the page only hands it on
            await present.route("**/v1/push/key", lambda route: route.fulfill(
                status=200, content_type="application/json", body=json.dumps({"publicKey": key})))
            await present.goto(f"{gw.dashboard_url}?area={AREA}&lang=en")
            await expect(present.locator("#notify")).to_be_visible()
            await expect(present.locator("#notify")).to_have_text("Notify me for these areas")
        finally:
            await browser.close()


async def _refuse(ws: Any) -> None:
    """A websocket route that closes every connection at once, before any message."""
    await ws.close(code=1008, reason="blocked by a proxy")


def _parse(iso: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


async def _registration_id(cdp: Any, origin: str) -> str:
    """The service worker registration of ``origin``, from the DevTools protocol."""
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def updated(event: dict[str, Any]) -> None:
        for registration in event["registrations"]:
            if registration["scopeURL"].startswith(origin) and not found.done():
                found.set_result(registration["registrationId"])

    cdp.on("ServiceWorker.workerRegistrationUpdated", updated)
    await cdp.send("ServiceWorker.enable")
    return await asyncio.wait_for(found, 10)
