"""Web Push against a local push service: the gateway's subscription routes, the broadcaster's
push channel (real encryption, real VAPID, the real broker and PostgreSQL), 410 removal,
429 with Retry-After, and the drill guard."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from click.testing import CliRunner

from infra.embedded.processes import free_port
from infra.settings import Settings
from schemas.evacuation import OrderIssued
from schemas.region import load_region
from services.broadcaster.channels import Outgoing
from services.broadcaster.delivery import DeliveryStore
from services.broadcaster.dispatch import ChannelWorker
from services.broadcaster.domain import delivery_id_for, message_id_for_order
from services.broadcaster.errors import DrillRefused
from services.broadcaster.main import Options
from services.broadcaster.push import FanoutStore, PushChannel, PushConfig, VapidSigner
from services.common.push_cli import push
from services.common.webpush import (
    SubscribeRequest,
    SubscriptionStore,
    ensure_vapid_keys,
    validation_context,
)
from services.gateway.push import PushApi
from tests.support import produce_events, schema_dsn, wait_for
from tests.support.broadcaster import fast_retry, migrated, order_events, running, settings_for
from tests.support.push import BrowserKeys, PushSink, push_sink, vapid_claims

pytestmark = pytest.mark.integration

CONTACT = "mailto:bousai-test@example.org"
AREAS = [d.id for d in load_region("chiyoda").districts]


def fast_push(**overrides: Any) -> PushConfig:
    values: dict[str, Any] = {"contact": CONTACT, "concurrency": 4, "base_delay": 0.1,
                              "max_delay": 0.5, **overrides}
    return PushConfig(**values)


def push_options(**overrides: Any) -> Options:
    return Options(dispatch=fast_retry(), push=fast_push(), **overrides)


async def subscribe(pool: asyncpg.Pool, namespace: str, sink: PushSink, name: str,
                    areas: tuple[str, ...], lang: str) -> BrowserKeys:
    """Store a subscription as the gateway would (validated by the same model)."""
    keys = BrowserKeys()
    request = SubscribeRequest.model_validate(
        {"subscription": keys.subscription(sink.endpoint(name)), "areas": areas, "lang": lang},
        context=validation_context(AREAS, allow_http_loopback=True))
    await SubscriptionStore(pool, namespace).upsert(request)
    return keys


async def receipts(pool: asyncpg.Pool, state: str = "delivered") -> dict[tuple[int, str], str]:
    rows = await pool.fetch("select version, language, receipt from broadcast_deliveries "
                            "where channel = 'push' and state = $1", state)
    return {(r["version"], r["language"]): r["receipt"] for r in rows}


async def all_push_rows_done(pool: asyncpg.Pool, expected: int) -> bool:
    n = await pool.fetchval("select count(*) from broadcast_deliveries where channel = 'push' "
                            "and state in ('delivered', 'failed', 'refused', 'superseded')")
    return bool(n == expected)


async def fan_out_done(pool: asyncpg.Pool, expected: int, what: str) -> None:
    """Wait for ``expected`` finished push rows; on a timeout, say what every row holds."""
    try:
        await wait_for(lambda: all_push_rows_done(pool, expected), timeout=30, what=what)
    except AssertionError as e:
        rows = await pool.fetch("select * from broadcast_deliveries order by 1")
        raise AssertionError(f"{e}\nbroadcast_deliveries: {[dict(r) for r in rows]}") from None


@asynccontextmanager
async def gateway_push(settings: Settings, pool: asyncpg.Pool | None, *,
                       clock: Any = time.monotonic) -> AsyncIterator[str]:
    """The gateway's push routes (PushApi) on a free port; yields the base URL."""
    api = PushApi(settings, load_region(settings.region), pool, clock=clock)
    await api.start()
    app = web.Application()
    api.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# --- end to end ------------------------------------------------------------------------------


async def test_an_order_pushes_once_per_subscription_per_version_encrypted_and_signed(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """Subscribed through the gateway; an order's two versions → one push per subscription
    each, in its language, decryptable with its key, VAPID-signed with the served key."""
    await migrated(db_pool)
    settings = settings_for(kafka_bootstrap, database_url, db_schema, namespace).model_copy(
        update={"push_allow_http_loopback": True, "push_contact": CONTACT})
    issued, updated = order_events("push", areas=("kanda-koen",), versions=2)
    assert isinstance(issued, OrderIssued)
    async with push_sink() as sink, gateway_push(settings, db_pool) as base, \
            aiohttp.ClientSession() as http:
        async with http.get(f"{base}/v1/push/key") as r:
            assert r.status == 200
            public_key = (await r.json())["publicKey"]
        people = {"ja-kanda": ("ja", ("kanda-koen",)), "en-both": ("en", ("fujimi", "kanda-koen")),
                  "ko-kanda": ("ko", ("kanda-koen",)), "zh-kojimachi": ("zh", ("kojimachi",))}
        keys: dict[str, BrowserKeys] = {}
        for name, (lang, areas) in people.items():
            keys[name] = BrowserKeys()
            body = {"subscription": keys[name].subscription(sink.endpoint(name)),
                    "areas": list(areas), "lang": lang}
            async with http.post(f"{base}/v1/push/subscriptions", json=body) as r:
                assert r.status == 201, await r.text()
        # Another namespace's subscriber (live) for the same area must hear nothing.
        await subscribe(db_pool, "", sink, "live-kanda", ("kanda-koen",), "ja")

        async with running(settings, push_options()):
            await produce_events(kafka_bootstrap, namespace, [issued])
            await fan_out_done(db_pool, 4, "version 1's push fan-out")
            await produce_events(kafka_bootstrap, namespace, [updated])
            await fan_out_done(db_pool, 8, "version 2's push fan-out")

    # Version 1 covers kanda-koen only; version 2 adds manseibashi and izumibashi.
    for name in ("ja-kanda", "en-both", "ko-kanda"):
        assert len(sink.of(name)) == 2, name
    assert sink.of("zh-kojimachi") == [] and sink.of("live-kanda") == []
    assert len(sink.requests) == 6
    got = {(name, keys[name].decrypt(p.body)["tag"], i)
           for name in ("ja-kanda", "en-both", "ko-kanda") for i, p in enumerate(sink.of(name))}
    assert len(got) == 6
    message_id = str(message_id_for_order(issued.payload.order_id))
    first = keys["ja-kanda"].decrypt(sink.of("ja-kanda")[0].body)
    assert first == {"title": first["title"], "body": first["body"],
                     "url": "/?area=kanda-koen&lang=ja", "level": 4, "tag": message_id}
    assert "警戒レベル4" in first["title"] and "神田公園" in first["body"]
    english = keys["en-both"].decrypt(sink.of("en-both")[1].body)
    assert english["level"] == 5 and "Level 5" in english["title"]
    assert english["url"] == "/?area=kanda-koen&lang=en"
    korean = keys["ko-kanda"].decrypt(sink.of("ko-kanda")[0].body)
    assert "경계레벨4" in korean["title"]

    now = time.time()
    for p in sink.requests:
        claims = vapid_claims(p, public_key)
        assert claims["sub"] == CONTACT
        assert now < claims["exp"] <= now + 24 * 3600
        assert p.headers["Content-Encoding"] == "aes128gcm"
        assert p.headers["Topic"] == uuid.UUID(message_id).hex
        assert int(p.headers["TTL"]) > 0
    assert {p.headers["Urgency"] for p in sink.requests} == {"high"}  # levels 4 and 5

    assert await receipts(db_pool) == {
        (1, "ja"): "sent=1,failed=0,removed=0", (1, "en"): "sent=1,failed=0,removed=0",
        (1, "ko"): "sent=1,failed=0,removed=0", (1, "zh"): "sent=0,failed=0,removed=0",
        (2, "ja"): "sent=1,failed=0,removed=0", (2, "en"): "sent=1,failed=0,removed=0",
        (2, "ko"): "sent=1,failed=0,removed=0", (2, "zh"): "sent=0,failed=0,removed=0"}
    # Who got what is not kept once a fan-out ends; how many is.
    assert await db_pool.fetchval("select count(*) from push_sent") == 0
    assert await db_pool.fetchval("select sum(sent) from push_counts") == 6


# --- push-service answers --------------------------------------------------------------------


async def fan_out(kafka_bootstrap: str, database_url: str, db_schema: str,
                  db_pool: asyncpg.Pool, namespace: str, answers: dict[str, Any], lang: str,
                  options: Options | None = None) -> PushSink:
    """One order for kanda-koen, pushed to one subscriber per name of ``answers`` (what the
    push service answers it: a list of (status, Retry-After), or "gone"); the sink after."""
    await migrated(db_pool)
    settings = settings_for(kafka_bootstrap, database_url, db_schema, namespace)
    (issued,) = order_events("answers", areas=("kanda-koen",), versions=1)
    async with push_sink() as sink:
        for name, answer in answers.items():
            if answer == "gone":
                sink.gone.add(name)
            elif answer:
                sink.answers[name] = list(answer)
            await subscribe(db_pool, namespace, sink, name, ("kanda-koen",), lang)
        async with running(settings, options or push_options()):
            await produce_events(kafka_bootstrap, namespace, [issued])
            await wait_for(lambda: all_push_rows_done(db_pool, 4), timeout=40,
                           what="the push fan-out")
    return sink


async def test_gone_subscriptions_are_removed_and_counted(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """404/410 from the push service deletes the subscription; the ledger counts it removed."""
    sink = await fan_out(kafka_bootstrap, database_url, db_schema, db_pool, namespace,
                         {"gone": "gone", "not-found": [(404, None)], "fine": None}, "ja")
    assert [len(sink.of(n)) for n in ("gone", "not-found", "fine")] == [1, 1, 1]
    assert (await receipts(db_pool))[(1, "ja")] == "sent=1,failed=0,removed=2"
    left = await db_pool.fetch("select endpoint from push_subscriptions")
    assert [r["endpoint"] for r in left] == [sink.endpoint("fine")]


async def test_429_and_5xx_are_retried_after_the_push_services_retry_after(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """429 with Retry-After: 1 waits at least a second before the next try; a 503 is retried."""
    sink = await fan_out(kafka_bootstrap, database_url, db_schema, db_pool, namespace, {
        "busy": [(429, "1")], "flaky": [(503, None), (500, None)], "bad": [(400, None)]}, "en")
    busy = sink.of("busy")
    assert len(busy) == 2
    assert busy[1].at - busy[0].at >= 0.95
    assert len(sink.of("flaky")) == 3
    assert len(sink.of("bad")) == 1  # a 400 is not retried
    assert (await receipts(db_pool))[(1, "en")] == "sent=2,failed=1,removed=0"


async def test_pushes_still_failing_wait_for_the_next_pass_then_count_as_failed(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """A push service down through every attempt of a pass: the row is retried in later passes
    (only the pushes not yet final), and after the last pass the rest count as failed."""
    sink = await fan_out(kafka_bootstrap, database_url, db_schema, db_pool, namespace,
                         {"down": [(503, None)] * 100, "fine": None}, "ja",
                         Options(dispatch=fast_retry(), push=fast_push(attempts=2, passes=3)))
    assert len(sink.of("fine")) == 1
    assert len(sink.of("down")) == 2 * 3
    assert (await receipts(db_pool))[(1, "ja")] == "sent=1,failed=1,removed=0"


# --- the drill guard -------------------------------------------------------------------------


async def test_the_push_channel_refuses_a_drill_on_a_live_channel(
    db_pool: asyncpg.Pool,
) -> None:
    """A drill delivery offered to the live push channel is refused in send and by the worker,
    and no push reaches a live subscription."""
    await migrated(db_pool)
    keys = await ensure_vapid_keys(db_pool)
    (drill,) = order_events("drill", exercise=True, versions=1)
    assert isinstance(drill, OrderIssued)
    async with push_sink() as sink, aiohttp.ClientSession() as session:
        await subscribe(db_pool, "", sink, "live", ("kanda-koen",), "ja")
        stop = asyncio.Event()
        live = PushChannel(FanoutStore(db_pool, ""), session,
                           VapidSigner(keys.signer(), CONTACT), live=True, stop=stop,
                           config=fast_push())
        message_id = message_id_for_order(drill.payload.order_id)
        delivery_id = delivery_id_for("", message_id, 1, "ja", live.name)
        outgoing = Outgoing("", message_id, 1, "ja", live.name, delivery_id, exercise=True,
                            attempt=1, body=b"{}")
        with pytest.raises(DrillRefused):
            await live.send(outgoing)
        # A drill of another namespace offered to this (live) channel is refused as well.
        other = Outgoing("drill.other", message_id, 1, "ja", live.name, delivery_id,
                         exercise=False, attempt=1, body=b"{}")
        with pytest.raises(DrillRefused):
            await live.send(other)

        await db_pool.execute(
            """insert into broadcast_deliveries (namespace, message_id, version, language,
                   channel, delivery_id, state, exercise, cause_event_id, correlation_id, body)
               values ('', $1, 1, 'ja', 'push', $2, 'pending', true, $3, $3, '\\x7b7d')""",
            message_id, delivery_id, uuid.uuid4())
        worker = ChannelWorker(live, DeliveryStore(db_pool, ""), fast_retry())
        task = asyncio.create_task(worker.run(stop))
        try:
            await wait_for(lambda: db_pool.fetchval(
                "select state = 'refused' from broadcast_deliveries"), timeout=15,
                what="the worker's refusal")
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
    assert sink.requests == []
    reason = await db_pool.fetchval("select last_error from broadcast_deliveries")
    assert reason == "exercise message refused by live channel push"


async def test_a_drill_reaches_only_its_own_namespaces_subscriptions(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """A drill order in a drill namespace pushes to that namespace's subscription and never to
    a live one; outside a drill the same exercise order pushes to no one."""
    await migrated(db_pool)
    drill_ns = f"drill.{namespace}"
    (drill,) = order_events("drill", exercise=True, areas=("kanda-koen",), versions=1)
    async with push_sink() as sink:
        live_keys = await subscribe(db_pool, "", sink, "live", ("kanda-koen",), "ja")
        drill_keys = await subscribe(db_pool, drill_ns, sink, "drill", ("kanda-koen",), "ja")
        assert live_keys.p256dh != drill_keys.p256dh
        settings = settings_for(kafka_bootstrap, database_url, db_schema, drill_ns)
        async with running(settings, push_options()):
            await produce_events(kafka_bootstrap, drill_ns, [drill])
            await wait_for(lambda: all_push_rows_done(db_pool, 4), timeout=30,
                           what="the drill's push fan-out")
        assert sink.of("live") == []
        (pushed,) = sink.of("drill")
        assert drill_keys.decrypt(pushed.body)["title"].startswith("【訓練】")

        # Outside a drill the same exercise order is planned on no channel: the real order
        # after it reaches the live-like subscription, the exercise one never does.
        live_settings = settings_for(kafka_bootstrap, database_url, db_schema, namespace)
        (real,) = order_events("real", areas=("kanda-koen",), versions=1)
        live_like = await subscribe(db_pool, namespace, sink, "live-like", ("kanda-koen",), "ja")
        async with running(live_settings, push_options(feeds_live=True)):
            await produce_events(kafka_bootstrap, namespace, [drill, real])
            await wait_for(lambda: db_pool.fetchval(
                "select count(*) = 4 from broadcast_deliveries where channel = 'push' "
                "and namespace = $1 and state = 'delivered'", namespace), timeout=30,
                what="the real order's push fan-out")
            await wait_for(lambda: len(sink.of("live-like")) == 1, timeout=15,
                           what="the real order's push")
        (real_push,) = sink.of("live-like")
        assert not live_like.decrypt(real_push.body)["title"].startswith("【訓練】")
        assert sink.of("live") == []
        assert not await db_pool.fetchval(
            "select count(*) from broadcast_deliveries where namespace = $1 and exercise",
            namespace)


# --- the gateway's routes --------------------------------------------------------------------


async def test_subscribe_validates_replaces_and_unsubscribes(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """422 names the bad field; the same endpoint again replaces; DELETE removes; 429 past the
    address's burst; the key route serves the stored public key."""
    await migrated(db_pool)
    settings = settings_for(kafka_bootstrap, database_url, db_schema, namespace).model_copy(
        update={"push_rate_burst": 12, "push_rate_per_second": 0.01})
    keys = BrowserKeys()
    good = {"subscription": keys.subscription("https://push.example.net/send/abc"),
            "areas": ["kanda-koen"], "lang": "ja"}
    async with gateway_push(settings, db_pool) as base, aiohttp.ClientSession() as http:
        async def post(body: Any) -> tuple[int, dict[str, Any]]:
            async with http.post(f"{base}/v1/push/subscriptions", json=body) as r:
                return r.status, (await r.json() if r.status != 201 else {})

        def bad(field: str, value: Any) -> dict[str, Any]:
            body: Any = {**good, "subscription": {**good["subscription"],
                                                  "keys": dict(good["subscription"]["keys"])}}
            target, *path = field.split(".")
            node = body
            for part in [target, *path][:-1]:
                node = node[part]
            node[field.split(".")[-1]] = value
            return dict(body)

        cases = {
            "subscription.endpoint": bad("subscription.endpoint", "http://push.example.net/x"),
            "subscription.keys.p256dh": bad("subscription.keys.p256dh", "AAAA"),
            "subscription.keys.auth": bad("subscription.keys.auth", keys.p256dh),
            "areas": bad("areas", ["kanda-koen", "atlantis"]),
            "lang": bad("lang", "fr"),
        }
        for field, body in cases.items():
            status, answer = await post(body)
            assert status == 422, field
            assert [p["field"] for p in answer["problems"]] == [field], answer
        status, answer = await post({**good, "areas": AREAS[:4]})
        assert status == 422 and answer["problems"][0]["field"] == "areas"
        # http is refused even on loopback unless the setting allows it.
        status, _ = await post(bad("subscription.endpoint", "http://127.0.0.1:9/push/x"))
        assert status == 422

        assert (await post(good))[0] == 201
        assert (await post({**good, "areas": ["fujimi", "jimbocho"], "lang": "en"}))[0] == 201
        rows = await db_pool.fetch("select namespace, areas, lang from push_subscriptions")
        assert [(r["namespace"], r["areas"], r["lang"]) for r in rows] == [
            (namespace, ["fujimi", "jimbocho"], "en")]

        async with http.delete(f"{base}/v1/push/subscriptions",
                               json={"endpoint": good["subscription"]["endpoint"]}) as r:
            assert r.status == 204
        assert await db_pool.fetchval("select count(*) from push_subscriptions") == 0

        async with http.get(f"{base}/v1/push/key") as r:
            assert (await r.json())["publicKey"] == (await ensure_vapid_keys(db_pool)).public_key
        # 10 writes so far of a burst of 12: two more pass, the next is refused.
        assert (await post(good))[0] == 201
        assert (await post(good))[0] == 201
        async with http.post(f"{base}/v1/push/subscriptions", json=good) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        async with http.post(f"{base}/v1/push/subscriptions",
                             data=b"x" * 9000) as r:
            assert r.status in (413, 429)


async def test_push_routes_answer_503_without_the_database(
    kafka_bootstrap: str, namespace: str,
) -> None:
    """A gateway without PostgreSQL serves no push key and refuses subscriptions with 503."""
    from tests.support.gateway import gateway_settings

    settings = gateway_settings(kafka_bootstrap, namespace)
    async with gateway_push(settings, None) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/v1/push/key") as r:
            assert r.status == 503
        async with http.post(f"{base}/v1/push/subscriptions", json={}) as r:
            assert r.status == 503


async def test_push_keys_command_creates_the_pair_once(
    database_url: str, db_schema: str, db_pool: asyncpg.Pool,
) -> None:
    """`sonae push keys` prints the public key, the same one on every run and at the gateway."""
    await migrated(db_pool)
    env = {"SONAE_DATABASE_URL": schema_dsn(database_url, db_schema)}
    # The command runs its own event loop: call it from a thread, as from a shell.
    first = await asyncio.to_thread(CliRunner().invoke, push, ["keys"], env=env)
    second = await asyncio.to_thread(CliRunner().invoke, push, ["keys"], env=env)
    assert first.exit_code == 0, first.output
    assert first.output == second.output
    assert first.output.strip() == (await ensure_vapid_keys(db_pool)).public_key
    assert len(first.output.strip()) == 87  # base64url of a 65-byte point, unpadded
