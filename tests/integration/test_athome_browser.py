"""The residents' portal at 360 px in headless Chromium: the at-home form reaches
people.athome through the gateway and intake (also after a lost connection), and open
stranded-commuter facilities join the shelter list only after an earthquake order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from schemas.events import decode_event
from schemas.people import AtHomeReported
from schemas.topics import qualified
from services.gateway.cop import Kind
from tests.support import Running, make_settings, produce_events, read_topic, start_intake, wait_for
from tests.support.browser import ARTIFACTS, CHROMIUM_ARGS, chromium
from tests.support.gateway import fresh, gateway, gateway_settings

pytestmark = pytest.mark.integration

PHONE = {"width": 360, "height": 740}
AREA = "kanda-koen"
FACILITY = "ts-ogawamachi"  # in kanda-koen; opens after an earthquake; not accessible


@pytest.fixture
async def intake(kafka_bootstrap: str, database_url: str, namespace: str,
                 db_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    """Intake for one test (it also creates the namespace's topics)."""
    async for running in start_intake(make_settings(kafka_bootstrap, database_url, namespace),
                                      db_pool):
        yield running


async def athome_reports(intake: Running) -> list[AtHomeReported]:
    """The at-home reports on people.athome once intake's outbox is published."""
    await wait_for(lambda: _drained(intake), what="outbox drained")
    records = await read_topic(intake.settings,
                               qualified("people.athome", intake.settings.namespace))
    events = [decode_event(r.value) for r in records if r.value is not None]
    return [e for e in events if isinstance(e, AtHomeReported)]


async def _drained(intake: Running) -> bool:
    return await intake.backlog() == 0


async def fill(page: Any) -> None:
    """Fill the form as a household of three needing water and a visit."""
    await page.locator("#athome-area").select_option(AREA)
    await page.locator("#athome-size").fill("3")
    await page.locator('#athome input[value="water"]').check()
    await page.locator('#athome input[value="welfare_check"]').check()
    await page.locator("#athome-contact").fill("090-1234-5678")
    await page.locator("#athome-note").fill("母が車椅子です")


async def test_the_at_home_form_reaches_people_athome_and_survives_a_lost_connection(
        kafka_bootstrap: str, namespace: str, intake: Running) -> None:
    """Phone width: the form is sent via the gateway (via public, no reporter); sent while
    offline it waits on the phone and goes, once, when the connection returns."""
    executable = chromium()
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    settings = gateway_settings(kafka_bootstrap, namespace, intake_url=intake.url)
    async with gateway(settings) as gw, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
            page = await context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"{gw.dashboard_url}?area={AREA}&lang=en")
            form = page.locator("#athome")
            await expect(form.locator("h3")).to_have_text("Sheltering at home? Tell the ward")
            await expect(form.locator("#athome-about")).to_contain_text(
                "Nothing you send is shown")
            layout = await page.evaluate("""() => ({page: document.documentElement.scrollWidth,
                screen: window.innerWidth,
                form: Math.round(document.getElementById("athome").getBoundingClientRect()
                    .right)})""")
            assert layout["page"] <= layout["screen"] and layout["form"] <= layout["screen"], \
                layout

            await fill(page)
            await page.screenshot(path=str(ARTIFACTS / "athome-360-en.png"), full_page=True)
            await form.locator("#athome-send").click()
            status = page.locator("#athome-status")
            await expect(status).to_have_attribute("data-state", "received")
            await expect(status).to_contain_text("Received")
            assert await page.evaluate("localStorage.getItem('sonae.portal.athome')") is None
            [report] = await athome_reports(intake)
            assert report.payload.via == "public" and report.payload.reported_by is None
            assert report.payload.area_id == AREA and report.payload.size == 3
            assert {n.value for n in report.payload.needs} == {"water", "welfare_check"}
            assert report.payload.contact == "090-1234-5678"
            # The page shows nothing of what was sent (the form is cleared), in any language.
            await page.locator("#lang").select_option("ja")
            await expect(form.locator("h3")).to_have_text("在宅避難中ですか？区にお知らせください")
            assert "090-1234-5678" not in await page.locator("body").inner_text()

            # No network: the report waits on the phone, then goes once when it returns.
            await fill(page)
            await context.set_offline(True)
            await form.locator("#athome-send").click()
            await expect(status).to_have_attribute("data-state", "saved")
            kept = await page.evaluate("JSON.parse(localStorage.getItem('sonae.portal.athome'))")
            assert kept["area_id"] == AREA and kept["size"] == 3
            await context.set_offline(False)
            await expect(status).to_have_attribute("data-state", "received", timeout=20_000)
            reports = await athome_reports(intake)
            # A new household (the first one's id was dropped once acknowledged), sent once.
            assert len(reports) == 2
            assert len({r.payload.household_id for r in reports}) == 2
            assert errors == []
        finally:
            await browser.close()


async def test_open_facilities_join_the_shelter_list_after_an_earthquake(
        kafka_bootstrap: str, namespace: str, intake: Running) -> None:
    """An open stranded-commuter facility is not among the open shelters until an
    earthquake order covers its area; then it is, marked as a facility."""
    executable = chromium()
    from playwright.async_api import async_playwright, expect

    await produce_events(kafka_bootstrap, namespace, [fresh(
        "shelter.status_changed", shelter_id=FACILITY, status="open", previous_status=None,
        name="一時滞在施設（例示）小川町会議場", occupancy=120, capacity=500, households=None,
        special_care=None, hazards=["earthquake"], version=1)])
    settings = gateway_settings(kafka_bootstrap, namespace, intake_url=intake.url)
    async with gateway(settings) as gw, async_playwright() as pw:
        await wait_for(lambda: FACILITY in gw.hub.cop.entities[Kind.SHELTER], timeout=20,
                       what="facility state read")
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport=PHONE, is_mobile=True)
            page = await context.new_page()
            await page.goto(f"{gw.dashboard_url}?area={AREA}&lang=en")
            card = page.locator(f'article[data-area="{AREA}"]')
            listed = card.locator(f'.shelters-open li[data-shelter="{FACILITY}"]')
            # The area's own list names it as a facility; the open list leaves it out.
            await expect(card.locator(f'.sites li[data-site="{FACILITY}"]')).to_contain_text(
                "Stranded-commuter facility")
            await expect(card.locator(".shelters-open, p.muted").first).to_be_visible()
            await expect(listed).to_have_count(0)

            await produce_events(kafka_bootstrap, namespace, [fresh(
                "evacuation.order_issued", hazard="earthquake", level=3, area_ids=[AREA],
                designated_shelter_ids=[])])
            await expect(listed).to_contain_text("Stranded-commuter facility")
            await expect(listed).to_contain_text("Open")
            await expect(listed).to_contain_text("Not step-free")
            await page.screenshot(path=str(ARTIFACTS / "athome-360-facility.png"),
                                  full_page=True)
        finally:
            await browser.close()
