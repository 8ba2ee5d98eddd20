"""The dashboard in headless Chromium: a report through intake appears, Approve makes an order,
a shelter's check-in count and a supply request's status show to HQ (not to the public);
shelter staff check a household in and out through their panel.

Needs Debian's ``chromium`` and the Python ``playwright`` package
(``infra/tools/install_browser.sh``). Without them this test FAILS with the
command to run: it never skips. The screenshot goes to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from infra.db.migrate import migrate
from infra.embedded.processes import free_port
from infra.kafka import clients
from infra.settings import Settings
from schemas.envelope import new_event
from schemas.evacuation import EvacuationCommand, OrderIssued
from schemas.region import load_region
from services.common.auth import Role, issue_token
from services.gateway.server import IntakeReports
from services.intake.http import build_app
from services.intake.metrics import IntakeMetrics
from services.intake.ratelimit import RateLimiter
from services.intake.relay import Relay
from services.intake.service import Intake
from services.intake.store import Store
from tests.support import consume_events, produce_events, wait_for
from tests.support.browser import ARTIFACTS, CHROMIUM_ARGS, chromium
from tests.support.gateway import SECRET, fresh, gateway, gateway_settings, token

pytestmark = pytest.mark.integration

SPORTS_CENTER = "e1310100006201"  # the shelter of the schema examples

async def serve_intake(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[str]:
    """Intake in-process (HTTP + outbox relay) on a free port; yields its base URL."""
    import asyncio

    async with pool.acquire() as conn:
        await migrate(conn)
    store = Store(pool, settings.namespace)
    metrics = IntakeMetrics()
    intake = Intake(store, load_region(), metrics=metrics)
    relay = Relay(store, lambda: clients.producer(settings), metrics=metrics, poll_interval=0.1)
    runner = web.AppRunner(build_app(intake, secret=settings.token_secret,
                                     limiter=RateLimiter(1000, 1000)), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await runner.cleanup()


async def test_dashboard_shows_a_report_and_approve_issues_the_order(
        kafka_bootstrap: str, namespace: str, db_pool: asyncpg.Pool) -> None:
    """HQ's page (ja/en) shows a report sent to intake; Approve produces the command."""
    executable = chromium()
    from playwright.async_api import async_playwright, expect

    settings = gateway_settings(kafka_bootstrap, namespace)
    recommendation = fresh("evacuation.recommended")
    rec_id = str(recommendation.payload.recommendation_id)  # type: ignore[attr-defined]
    await produce_events(kafka_bootstrap, namespace, [recommendation])
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []  # uncaught errors in the page's script
    async for intake_url in serve_intake(settings, db_pool):
        reports = IntakeReports(intake_url)
        async with gateway(settings, reports=reports, intake=reports) as gw, \
                async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("pageerror", lambda e: errors.append(str(e)))
                hq = token(Role.HQ, "hq-duty-officer")
                await page.goto(f"{gw.dashboard_url}#token={hq}&lang=ja")
                await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
                await expect(page.locator("h2").first).to_have_text("避難の推奨")
                await expect(page.locator(f'li[data-recommendation="{rec_id}"]')).to_be_visible()

                # A report through intake's HTTP API reaches the page via Kafka.
                description = f"神田司町で冠水 {uuid.uuid4().hex[:6]}"
                team = token(Role.FIELD, "kanda-team", areas=("kanda-koen",))
                status, answer = await reports.submit(team, {
                    "client_report_id": "browser-1", "category": "flooding", "severity": 4,
                    "area_id": "kanda-koen", "description": description})
                assert status == 202, answer
                await expect(page.locator("#reports")).to_contain_text(description,
                                                                       timeout=20_000)

                await page.locator("#lang").select_option("en")
                await expect(page.locator("#recommendations-panel h2")).to_have_text(
                    "Recommendations")
                await page.locator(f'button.approve[data-recommendation="{rec_id}"]').click()
                [command] = await consume_events(kafka_bootstrap, namespace,
                                                 "evacuation.commands", count=1, timeout=20)
                assert isinstance(command, EvacuationCommand)
                assert command.payload.operator == "hq-duty-officer"
                assert str(command.payload.recommendation_id) == rec_id

                # The decision service is not running here: play its part.
                order = order_for(recommendation.payload.model_dump(mode="json"), command)
                await produce_events(kafka_bootstrap, namespace, [order])
                order_id = str(order.payload.order_id)
                await expect(page.locator(f'li[data-order="{order_id}"]')).to_contain_text(
                    "In force", timeout=20_000)
                await expect(page.locator('#map path[data-area="kanda-koen"]')).to_have_class(
                    "l4")

                # People and supplies: a shelter's check-in count and a request's status.
                request_id = str(uuid.uuid4())
                await produce_events(kafka_bootstrap, namespace, [
                    fresh("shelter.status_changed", registered=123, registered_households=45,
                          unregistered=-3),
                    fresh("supply.requested", request_id=request_id),
                    fresh("supply.assigned", request_id=request_id)])
                shelter = page.locator(f'li[data-shelter="{SPORTS_CENTER}"]')
                await expect(shelter.locator(".registered")).to_contain_text(
                    "Registered 123 (45 households)", timeout=20_000)
                await expect(shelter.locator(".unregistered")).to_contain_text("−3")
                await expect(page.locator(f'li[data-supply="{request_id}"]')).to_contain_text(
                    "Assigned", timeout=20_000)

                # HQ takes a request made at intake through the queue: assign, dispatch.
                status, made = await reports.call(hq, "POST", "/v1/supplies/requests", {
                    "client_id": "browser-supply-1", "requester_kind": "shelter",
                    "site_id": SPORTS_CENTER, "urgency": "urgent",
                    "lines": [{"item": "water", "quantity": 100}]})
                assert status == 201, made
                queued = page.locator(f'li[data-supply="{made["request_id"]}"]')
                await expect(queued).to_have_attribute("data-status", "requested",
                                                       timeout=20_000)
                await queued.locator("button.supply-assign").click()  # no assignee yet
                await expect(queued.locator("input.assignee")).to_be_focused()
                await queued.locator("input.assignee").fill("備蓄倉庫班")
                await queued.locator("button.supply-assign").click()
                await expect(queued).to_have_attribute("data-status", "assigned",
                                                       timeout=20_000)
                await expect(queued).to_contain_text("備蓄倉庫班")
                await queued.locator("button.supply-dispatch").click()
                await expect(queued).to_have_attribute("data-status", "dispatched",
                                                       timeout=20_000)
                await page.set_viewport_size({"width": 360, "height": 800})
                assert await page.evaluate(
                    "document.documentElement.scrollWidth <= window.innerWidth")
                await page.set_viewport_size({"width": 1400, "height": 1000})
                await page.screenshot(path=str(ARTIFACTS / "dashboard-hq.png"), full_page=True)

                # The public portal: same page, no token; no personal data.
                public = await browser.new_page(viewport={"width": 1400, "height": 1000})
                await public.goto(f"{gw.dashboard_url}#lang=ja")
                await expect(public.locator("#conn")).to_have_attribute("data-state", "live")
                await expect(public.locator(f'li[data-order="{order_id}"]')).to_be_visible()
                text = await public.locator("body").inner_text()
                assert description not in text and "kanda-team" not in text
                assert await public.locator("#reports-panel").is_hidden()
                assert await public.locator("#supplies-panel").is_hidden()
                assert "登録" not in text and "受付済み" not in text
                await public.screenshot(path=str(ARTIFACTS / "dashboard-public.png"),
                                        full_page=True)
                assert errors == []
            finally:
                await browser.close()
                await reports.close()


def order_for(recommendation: dict[str, Any], command: EvacuationCommand) -> OrderIssued:
    """The order the decision service would issue for an approved recommendation."""
    now = datetime.now(UTC)
    payload = {"order_id": str(uuid.uuid4()), "version": 1,
               "area_ids": recommendation["area_ids"], "level": recommendation["level"],
               "hazard": recommendation["hazard"],
               "designated_shelter_ids": recommendation["suggested_shelter_ids"],
               "issued_by": command.payload.operator, "approved_at": now - timedelta(seconds=1),
               "recommendation_id": recommendation["recommendation_id"]}
    return new_event(OrderIssued, json.loads(json.dumps(payload, default=str)),
                     occurred_at=now, source="evacuation-decision", cause=command)


async def test_staff_check_a_household_in_see_its_qr_and_check_it_out(
        kafka_bootstrap: str, namespace: str, db_pool: asyncpg.Pool) -> None:
    """Shelter staff's panel (360 px): the check-in form gives the code and its QR; the
    household is listed and its Check out button removes it; a supply request from the
    form appears with its status and can be cancelled."""
    executable = chromium()
    from playwright.async_api import async_playwright, expect

    settings = gateway_settings(kafka_bootstrap, namespace)
    errors: list[str] = []
    async for intake_url in serve_intake(settings, db_pool):
        client = IntakeReports(intake_url)
        async with gateway(settings, reports=client, intake=client) as gw, \
                async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 360, "height": 800})
                page.on("pageerror", lambda e: errors.append(str(e)))
                staff = issue_token(SECRET, Role.SHELTER_STAFF, "sports-center-staff",
                                    timedelta(hours=1), areas=("kanda-koen",),
                                    shelters=(SPORTS_CENTER,))
                await page.goto(f"{gw.dashboard_url}#token={staff}&lang=en")
                await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
                site = page.locator(f'li.staff-site[data-site="{SPORTS_CENTER}"]')
                await expect(site.locator(".households")).to_contain_text("none")
                await site.locator("input[name=size]").fill("3")
                await site.locator("input[name=need][value=infant]").check()
                await site.locator("input[name=name]").fill("山田")
                await site.locator("form.checkin button[type=submit]").click()
                code_node = site.locator(".checkin-result .code")
                await expect(code_node).to_have_text(re.compile(r"^[0-9A-Z]{8}$"),
                                                     timeout=20_000)
                code = await code_node.inner_text()
                qr = site.locator(".checkin-result img.qr")
                await expect(qr).to_have_attribute("src", f"/qr/household/{code}.svg")

                async def qr_drawn(image: Any = qr) -> bool:  # the SVG loaded and decoded
                    return bool(await image.evaluate("i => i.complete && i.naturalWidth > 0"))

                await wait_for(qr_drawn, timeout=10, what="the QR image drawn")
                row = site.locator(f'li[data-household="{code}"]')
                await expect(row).to_contain_text("3 people")
                await expect(row).to_contain_text("Infant")
                assert await page.evaluate(
                    "document.documentElement.scrollWidth <= window.innerWidth")
                await page.screenshot(path=str(ARTIFACTS / "dashboard-staff.png"),
                                      full_page=True)
                await row.locator("button.checkout").click()
                await expect(row).to_have_count(0, timeout=20_000)

                # A supply request from the form shows in "our supply requests"; Cancel it.
                form = site.locator("form.supply-form")
                await form.locator("select[name=item]").select_option("blankets")
                await form.locator("input[name=quantity]").fill("20")
                await form.locator("select[name=urgency]").select_option("urgent")
                await form.locator("button[type=submit]").click()
                request = page.locator("#supplies li[data-supply]")
                await expect(request).to_contain_text("Blankets × 20", timeout=20_000)
                await request.locator("button.supply-cancel").click()
                await expect(request).to_have_attribute("data-status", "cancelled",
                                                        timeout=20_000)
                async with db_pool.acquire() as conn:
                    assert await conn.fetchval(
                        "select checked_in from households where household_code = $1",
                        code) is False
                assert errors == []
            finally:
                await browser.close()
                await client.close()
