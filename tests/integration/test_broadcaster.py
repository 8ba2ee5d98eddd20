"""The broadcaster in-process against the real broker and PostgreSQL, with a local webhook receiver:
public feed, CAP over HTTP, signed webhooks, no duplicates, backoff and circuit, drill guard."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from lxml import etree

from schemas.broadcasts import BroadcastFailed, BroadcastPublished
from schemas.envelope import new_event
from schemas.evacuation import OrderIssued
from schemas.examples import example
from schemas.shelters import ShelterStatus, ShelterStatusChanged
from schemas.topics import qualified
from services.broadcaster.channels import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Outgoing,
    WebhookChannel,
    sign,
    verify,
)
from services.broadcaster.delivery import DeliveryStore
from services.broadcaster.dispatch import ChannelWorker
from services.broadcaster.domain import delivery_id_for, message_id_for_order
from services.broadcaster.errors import DrillRefused, WebhookConfigError
from services.broadcaster.feed import CapFeedStore
from services.broadcaster.main import Options
from services.broadcaster.webhooks import (
    WebhookConfig,
    webhooks_for,
)
from tests.support import consume_events, produce_events, wait_for
from tests.support.broadcaster import (
    ATOM,
    CAP,
    LANGS,
    SECRET,
    T0,
    count_delivered,
    delivery_states,
    fast_retry,
    migrated,
    order_events,
    outbox_events,
    published_keys,
    receiver,
    running,
    settings_for,
    subscriber,
    xsd,
)

pytestmark = pytest.mark.integration

# --- tests -----------------------------------------------------------------------------


async def test_order_reaches_public_feed_cap_feed_and_signed_webhooks(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """One order: 4 public-feed messages, its CAP in the Atom feed, 4 signed webhook POSTs."""
    await migrated(db_pool)
    settings = settings_for(kafka_bootstrap, database_url, db_schema, namespace)
    (issued,) = order_events("one", versions=1)
    assert isinstance(issued, OrderIssued)
    async with receiver() as recv:
        options = Options(webhooks=WebhookConfig(subscribers=(subscriber(recv, "app"),)),
                          dispatch=fast_retry())
        async with running(settings, options):
            await produce_events(kafka_bootstrap, namespace, [issued])
            await wait_for(lambda: _all_delivered(db_pool, 9), timeout=30,
                           what="9 deliveries (4 feed + 4 webhook + 1 CAP)")

            feed = await consume_events(kafka_bootstrap, namespace, "public.messages", count=4)
            assert {e.payload.language for e in feed if isinstance(e, BroadcastPublished)} == LANGS
            assert all(not e.exercise and e.causation_id == issued.event_id for e in feed)

            hooks = recv.of("app")
            assert len(hooks) == 4
            assert {r.event.payload.language for r in hooks} == LANGS
            assert len({r.headers[DELIVERY_ID_HEADER] for r in hooks}) == 4
            for r in hooks:
                assert verify(SECRET, r.headers[TIMESTAMP_HEADER], r.body,
                              r.headers[SIGNATURE_HEADER])
                assert not verify(b"wrong-secret-wrong-secret-wrong-secret", r.headers[
                    TIMESTAMP_HEADER], r.body, r.headers[SIGNATURE_HEADER])
                assert r.event.event_id in {e.event_id for e in feed}  # the same documents
            ja = next(r.event for r in hooks if r.event.payload.language == "ja")
            assert ja.payload.headline.startswith("警戒レベル4 避難指示（洪水）")
            assert len(ja.payload.sms) <= 70

            base = f"http://127.0.0.1:{settings.broadcaster_port}"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/cap/alerts.atom") as response:
                    assert response.status == 200
                    assert response.content_type == "application/atom+xml"
                    atom = etree.fromstring(await response.read())
                links = atom.findall("atom:entry/atom:link[@rel='alternate']", namespaces=ATOM)
                assert len(links) == 1
                async with http.get(links[0].get("href")) as response:
                    assert response.status == 200
                    assert response.content_type == "application/cap+xml"
                    cap = etree.fromstring(await response.read())
                async with http.get(f"{base}/healthz") as response:
                    assert response.status == 200
                async with http.get(f"{base}/cap/alerts/nope.xml") as response:
                    assert response.status == 404
                async with http.get(f"{base}/metrics") as response:
                    assert response.status == 200
                    assert "sonae_broadcaster_deliveries_total" in await response.text()
            assert xsd().validate(cap), xsd().error_log
            assert cap.findtext("cap:status", namespaces=CAP) == "Actual"
            assert cap.findtext("cap:msgType", namespaces=CAP) == "Alert"
            assert str(issued.payload.order_id) in cap.findtext("cap:identifier", namespaces=CAP)
            assert len(cap.findall("cap:info", namespaces=CAP)) == 4

            await wait_for(lambda: _outbox_sent(db_pool), timeout=15, what="outbox published")
            outcomes = await consume_events(kafka_bootstrap, namespace, "broadcasts.deliveries",
                                            count=9)
            assert {e.type for e in outcomes} == {"broadcast.delivered"}


async def _all_delivered(pool: asyncpg.Pool, expected: int) -> bool:
    return await count_delivered(pool) == expected


async def _outbox_sent(pool: asyncpg.Pool) -> bool:
    unsent = await pool.fetchval("select count(*) from broadcast_outbox where sent_at is null")
    return bool(unsent == 0)


async def test_redelivered_records_send_nothing_twice(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """Producing an order's records again plans and sends nothing a second time."""
    await migrated(db_pool)
    settings = settings_for(kafka_bootstrap, database_url, db_schema, namespace)
    issued, updated, lifted = order_events("dup")
    async with receiver() as recv:
        options = Options(webhooks=WebhookConfig(subscribers=(subscriber(recv, "app"),)),
                          dispatch=fast_retry())
        async with running(settings, options):
            await produce_events(kafka_bootstrap, namespace, [issued])
            await wait_for(lambda: _all_delivered(db_pool, 9), timeout=30, what="v1 delivered")
            await produce_events(kafka_bootstrap, namespace, [updated])
            await wait_for(lambda: _all_delivered(db_pool, 18), timeout=30, what="v2 delivered")
            # The same records again (as after a consumer-group reset), then v3 behind
            # them on the same partition: once v3 is delivered the duplicates were read.
            await produce_events(kafka_bootstrap, namespace, [issued, updated, issued, lifted])
            await wait_for(lambda: _all_delivered(db_pool, 27), timeout=30, what="v3 delivered")
            await wait_for(lambda: _outbox_sent(db_pool), timeout=15, what="outbox published")

            hooks = recv.of("app")
            keys = [(r.event.payload.version, r.event.payload.language) for r in hooks]
            assert sorted(keys) == sorted((v, lang) for v in (1, 2, 3) for lang in LANGS)
            assert len({r.headers[DELIVERY_ID_HEADER] for r in hooks}) == 12
            feed = await consume_events(kafka_bootstrap, namespace, "public.messages", count=12)
            assert len(set(published_keys(feed))) == 12
            rows = await db_pool.fetch("select identifier, msg_type from cap_alerts "
                                       "order by version")
            assert [r["msg_type"] for r in rows] == ["Alert", "Update", "Cancel"]
            # The index lists the order's latest version only: the Cancel, while it is recent.
            current = await CapFeedStore(db_pool).current(namespace, T0 + timedelta(hours=10))
            assert [(e.identifier, e.msg_type) for e in current] == [
                (rows[2]["identifier"], "Cancel")]
            later = await CapFeedStore(db_pool).current(namespace, T0 + timedelta(days=3))
            assert later == []
            assert await delivery_states(db_pool) == {"delivered": 27}
            assert await db_pool.fetchval("select count(*) from broadcast_messages") == 3


async def test_failing_subscriber_backs_off_and_goes_down_without_delaying_a_healthy_one(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """A slow 503 subscriber is retried after backoff, then marked down; the other is not held."""
    await migrated(db_pool)
    settings = settings_for(kafka_bootstrap, database_url, db_schema, namespace)
    (issued,) = order_events("down", versions=1)
    async with receiver(failing={"broken"}, slow={"broken": 1.0}) as recv:
        options = Options(
            webhooks=WebhookConfig(subscribers=(subscriber(recv, "healthy"),
                                                subscriber(recv, "broken"))),
            dispatch=fast_retry(failures_to_down=6, probe_interval_seconds=120.0))
        async with running(settings, options):
            await produce_events(kafka_bootstrap, namespace, [issued])
            await wait_for(lambda: len(recv.of("healthy")) == 4, timeout=30,
                           what="the healthy subscriber served")
            health = await wait_for(
                lambda: db_pool.fetchrow(
                    "select * from webhook_subscribers where channel = 'webhook-broken' "
                    "and state = 'down'"),
                timeout=60, what="the broken subscriber marked down")
            assert health["consecutive_failures"] == 6
            assert health["next_probe_at"] > health["down_since"]
            await wait_for(lambda: _outbox_sent(db_pool), timeout=15, what="outbox published")

            healthy, broken = recv.of("healthy"), recv.of("broken")
            # Independent workers: the healthy subscriber was done before the broken one's
            # second (one-second) request even started.
            assert max(r.at for r in healthy) < broken[1].at
            assert await count_delivered(db_pool, "webhook-healthy") == 4
            assert await count_delivered(db_pool, "webhook-broken") == 0
            # Down means no more attempts until the probe: exactly the six that failed,
            # four first attempts and two retries reusing their delivery's id.
            assert len(broken) == 6
            ids = [r.headers[DELIVERY_ID_HEADER] for r in broken]
            assert len(set(ids)) == 4

            failed = [e for e in await outbox_events(db_pool) if isinstance(e, BroadcastFailed)
                      and e.payload.channel == "webhook-broken"]
            assert len(failed) == 6
            for e in failed:
                assert e.payload.will_retry and "HTTP 503" in e.payload.error
                assert e.payload.next_attempt_at is not None
                assert e.payload.next_attempt_at > e.occurred_at
            assert "marked down after 6 consecutive failures" in failed[-1].payload.error
            # Each retry came no earlier than the backoff its failure announced.
            first_failure = {}
            for e in failed:
                first_failure.setdefault((e.payload.language, e.payload.attempt), e)
            for r in broken:
                attempts = [x for x in broken if x.headers[DELIVERY_ID_HEADER]
                            == r.headers[DELIVERY_ID_HEADER]]
                if len(attempts) == 2 and r is attempts[1]:
                    language = r.event.payload.language
                    announced = first_failure[(language, 1)].payload.next_attempt_at
                    assert announced is not None and r.at >= announced
            states = sorted(r["state"] for r in await db_pool.fetch(
                "select state from broadcast_deliveries where channel = 'webhook-broken'"))
            assert states == ["retry"] * 4


async def test_exercise_orders_reach_no_live_channel(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """A drill order reaches only the drill webhook; every live channel refuses it, recorded."""
    await migrated(db_pool)
    # A drill namespace (outside one, exercise orders are not broadcast at all, below);
    # its feeds forced live, so the drill guard and not the namespace must stop them.
    drill_ns = f"drill.{namespace}"
    settings = settings_for(kafka_bootstrap, database_url, db_schema, drill_ns)
    (drill,) = order_events("drill", exercise=True, versions=1)
    async with receiver() as recv:
        options = Options(
            webhooks=WebhookConfig(subscribers=(subscriber(recv, "live"),
                                                subscriber(recv, "drill", live=False))),
            dispatch=fast_retry(), feeds_live=True)  # as in the live namespace
        async with running(settings, options):
            await produce_events(kafka_bootstrap, drill_ns, [drill])
            await wait_for(lambda: len(recv.of("drill")) == 4, timeout=30,
                           what="the drill webhook served")
            await wait_for(lambda: _outbox_sent(db_pool), timeout=15, what="outbox published")
            states = {(r["channel"], r["state"]) for r in await db_pool.fetch(
                "select channel, state from broadcast_deliveries")}
            assert states == {("webhook-drill", "delivered"), ("webhook-live", "refused"),
                              ("public-feed", "refused"), ("cap-feed", "refused")}
            assert recv.of("live") == []
            assert await db_pool.fetchval("select count(*) from cap_alerts") == 0
            for r in recv.of("drill"):
                event = r.event
                assert event.exercise
                marker = {"ja": "【訓練】", "en": "[DRILL]", "zh": "【演练】", "ko": "[훈련]"}
                assert event.payload.sms.startswith(marker[event.payload.language])
            refusals = [e for e in await outbox_events(db_pool) if isinstance(e, BroadcastFailed)]
            assert len(refusals) == 4 + 4 + 1
            assert all("exercise message refused by live channel" in e.payload.error
                       and not e.payload.will_retry for e in refusals)


async def test_exercise_orders_are_never_broadcast_outside_a_drill(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """Outside a drill an exercise order is planned on no channel, drill webhooks included."""
    await migrated(db_pool)
    settings = settings_for(kafka_bootstrap, database_url, db_schema, namespace)
    (drill,) = order_events("exercise", exercise=True, versions=1)
    (real,) = order_events("real", versions=1)
    async with receiver() as recv:
        options = Options(
            webhooks=WebhookConfig(subscribers=(subscriber(recv, "drill", live=False),)),
            dispatch=fast_retry())
        async with running(settings, options):
            await produce_events(kafka_bootstrap, namespace, [drill, real])
            # The real order after it is broadcast: the exercise one was read and skipped.
            await wait_for(lambda: len(recv.of("drill")) == 4, timeout=30,
                           what="the real order on the webhook")
            await wait_for(lambda: _outbox_sent(db_pool), timeout=15, what="outbox published")
            assert all(not r.event.exercise for r in recv.of("drill"))
            subjects = {r["subject"] for r in await db_pool.fetch(
                "select subject from broadcast_messages")}
            assert subjects == {str(real.payload.order_id)}  # type: ignore[attr-defined]
            assert not await db_pool.fetchval(
                "select count(*) from broadcast_deliveries where exercise")
            assert all(not e.exercise for e in await outbox_events(db_pool))


async def test_channel_layer_refuses_a_drill_that_reached_a_live_queue(
    db_pool: asyncpg.Pool,
) -> None:
    """Even a drill delivery queued for a live webhook (a planning bug) is refused at send time."""
    await migrated(db_pool)
    async with receiver() as recv, aiohttp.ClientSession() as session:
        live = WebhookChannel(subscriber(recv, "live"), session)
        message_id = message_id_for_order(uuid.uuid4())
        delivery_id = delivery_id_for("", message_id, 1, "ja", live.name)
        outgoing = Outgoing("", message_id, 1, "ja", live.name, delivery_id, exercise=True,
                            attempt=1, body=b"{}")
        with pytest.raises(DrillRefused):
            await live.send(outgoing)

        await db_pool.execute(
            """insert into broadcast_deliveries (namespace, message_id, version, language,
                   channel, delivery_id, state, exercise, cause_event_id, correlation_id, body)
               values ('', $1, 1, 'ja', $2, $3, 'pending', true, $4, $4, '\\x7b7d')""",
            message_id, live.name, delivery_id, uuid.uuid4())
        worker = ChannelWorker(live, DeliveryStore(db_pool, ""), fast_retry())
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            await wait_for(lambda: db_pool.fetchval(
                "select state = 'refused' from broadcast_deliveries"), timeout=15,
                what="the worker's refusal")
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
        assert recv.requests == []
        reason = await db_pool.fetchval("select last_error from broadcast_deliveries")
        assert reason == "exercise message refused by live channel webhook-live"
        (event,) = await outbox_events(db_pool)
        assert event.type == "broadcast.failed" and event.exercise
        assert json.loads(event.model_dump_json())["payload"]["will_retry"] is False


def shelter_change(shelter_id: str, version: int, status: str, previous: str | None,
                   minutes: float) -> ShelterStatusChanged:
    base = example("shelter.status_changed")
    assert isinstance(base, ShelterStatusChanged)
    state = base.payload.model_copy(update={
        "shelter_id": shelter_id, "version": version, "status": ShelterStatus(status),
        "previous_status": ShelterStatus(previous) if previous else None})
    return new_event(ShelterStatusChanged, state, occurred_at=T0 + timedelta(minutes=minutes),
                     source="shelter-tracker")


async def test_shelter_news_is_published_and_bad_records_are_dead_lettered(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """Opened and full reach the feed (no CAP); crowding is not news; garbage is dead-lettered."""
    await migrated(db_pool)
    settings = settings_for(kafka_bootstrap, database_url, db_schema, namespace)
    shelter = "e1310100006201"  # 区立スポーツセンター
    changes = [shelter_change(shelter, 1, "open", "opening", 0),
               shelter_change(shelter, 2, "crowded", "open", 10),  # still open: not news
               shelter_change(shelter, 3, "full", "crowded", 20)]
    async with running(settings, Options(webhooks=WebhookConfig(), dispatch=fast_retry())):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(qualified("evacuation.orders", namespace),
                                         b'{"not": "an event"}', key=b"junk")
        finally:
            await producer.stop()
        # The public feed drops a version still undelivered when a newer one is planned
        # (docs/broadcaster.md, "Superseded"): "full" must come after "opened" was sent,
        # or whether both reach the feed depends on how the consumer batches them.
        await produce_events(kafka_bootstrap, namespace, changes[:1])
        await wait_for(lambda: _all_delivered(db_pool, 4), timeout=30,
                       what="opened on the public feed")
        await produce_events(kafka_bootstrap, namespace, changes[1:])
        await wait_for(lambda: _all_delivered(db_pool, 8), timeout=30,
                       what="opened and full on the public feed")
        feed = await consume_events(kafka_bootstrap, namespace, "public.messages", count=8)
        kinds = {(e.payload.version, e.payload.kind.value) for e in feed
                 if isinstance(e, BroadcastPublished)}
        assert kinds == {(1, "shelter_opened"), (3, "shelter_full")}
        ja = next(e for e in feed if isinstance(e, BroadcastPublished)
                  and e.payload.language == "ja" and e.payload.version == 3)
        assert ja.payload.sms.startswith("避難所満員：区立スポーツセンター")
        assert ja.payload.cap_identifier is None and ja.payload.shelter_id == shelter
        assert await db_pool.fetchval("select count(*) from cap_alerts") == 0
        assert {r["channel"] for r in await db_pool.fetch(
            "select distinct channel from broadcast_deliveries")} == {"public-feed"}
        (letter,) = await _dead_letters(kafka_bootstrap, namespace, 1)
        assert letter["service"] == "broadcaster" and "InvalidEvent" in letter["error"]


async def _dead_letters(bootstrap: str, namespace: str, count: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(qualified("deadletter", namespace), bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=50)
    await consumer.start()
    try:
        got: list[dict[str, Any]] = []

        async def more() -> bool:
            batches = await consumer.getmany(timeout_ms=200)
            got.extend(json.loads(r.value) for rs in batches.values() for r in rs
                       if r.value is not None)
            return len(got) >= count

        await wait_for(more, timeout=20, what=f"{count} dead letters")
        return got
    finally:
        await consumer.stop()


async def test_a_down_subscriber_is_probed_and_recovers_with_the_latest_version_only(
    kafka_bootstrap: str, database_url: str, db_schema: str, db_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """While down, a newer version supersedes the backlog; a good probe brings it back up."""
    await migrated(db_pool)
    settings = settings_for(kafka_bootstrap, database_url, db_schema, namespace)
    issued, updated = order_events("probe", versions=2)
    async with receiver(failing={"flaky"}) as recv:
        options = Options(
            webhooks=WebhookConfig(subscribers=(subscriber(recv, "flaky"),)),
            dispatch=fast_retry(failures_to_down=2, probe_interval_seconds=2.0))
        async with running(settings, options):
            await produce_events(kafka_bootstrap, namespace, [issued])
            await wait_for(lambda: db_pool.fetchval(
                "select state = 'down' from webhook_subscribers"), timeout=30,
                what="marked down")
            await produce_events(kafka_bootstrap, namespace, [updated])
            await wait_for(lambda: db_pool.fetchval(
                "select count(*) = 4 from broadcast_deliveries where channel = 'webhook-flaky' "
                "and version = 1 and state = 'superseded'"), timeout=30,
                what="version 1 superseded in the down subscriber's queue")
            fixed_at = len(recv.requests)
            recv.failing.clear()  # the subscriber is fixed; the next probe succeeds
            await wait_for(lambda: count_delivered(db_pool, "webhook-flaky"), timeout=30,
                           what="a successful probe")
            await wait_for(lambda: _delivered_on(db_pool, "webhook-flaky", 4), timeout=30,
                           what="the backlog drained")
            await wait_for(lambda: _outbox_sent(db_pool), timeout=15, what="outbox published")
            row = await db_pool.fetchrow("select * from webhook_subscribers")
            assert row["state"] == "up" and row["consecutive_failures"] == 0
            assert row["down_since"] is None
            after = recv.requests[fixed_at:]
            assert sorted((r.event.payload.version, r.event.payload.language) for r in after) == \
                sorted((2, lang) for lang in LANGS)
            superseded = [e for e in await outbox_events(db_pool)
                          if isinstance(e, BroadcastFailed)
                          and "superseded by version 2" in e.payload.error]
            assert {(e.payload.channel, e.payload.version) for e in superseded} == {
                ("webhook-flaky", 1)}
            assert len(superseded) == 4


async def _delivered_on(pool: asyncpg.Pool, channel: str, n: int) -> bool:
    return await count_delivered(pool, channel) == n


def test_webhook_file_is_read_and_bad_files_name_the_variable(tmp_path: Path) -> None:
    """SONAE_WEBHOOKS_FILE: subscribers and retry tuning load; a bad field is named."""
    good = tmp_path / "hooks.toml"
    good.write_text(
        '[retry]\nmax_attempts = 3\n\n[[subscribers]]\nname = "city-app"\n'
        'url = "https://push.example.org/sonae"\nsecret_env = "HOOK_SECRET"\n'
        'languages = ["ja", "en"]\nlive = false\n', encoding="utf-8")
    config = webhooks_for(good, {"HOOK_SECRET": "s" * 40})
    (sub,) = config.subscribers
    assert (sub.name, sub.languages, sub.live, config.retry.max_attempts) == (
        "city-app", ("ja", "en"), False, 3)
    assert webhooks_for(None).subscribers == ()
    with pytest.raises(WebhookConfigError, match=r"SONAE_WEBHOOKS_FILE=.*HOOK_SECRET"):
        webhooks_for(good, {})
    bad = tmp_path / "bad.toml"
    bad.write_text('[[subscribers]]\nname = "Bad Name"\nurl = "ftp://x"\nsecret = "short"\n',
                   encoding="utf-8")
    with pytest.raises(WebhookConfigError, match=r"SONAE_WEBHOOKS_FILE=.*subscribers\.0\."):
        webhooks_for(bad, {})
    with pytest.raises(WebhookConfigError, match="does not exist"):
        webhooks_for(tmp_path / "missing.toml", {})


def test_signature_covers_timestamp_and_body() -> None:
    """sha256=HMAC(secret, timestamp.body); a changed body, timestamp or stale time fails."""
    body = b'{"x": 1}'
    now = 1_755_752_880
    signature = sign(SECRET, str(now), body)
    expected = hmac.new(SECRET, f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
    assert verify(SECRET, str(now), body, signature, now=now + 10)
    assert not verify(SECRET, str(now), body + b" ", signature, now=now)
    assert not verify(SECRET, str(now + 1), body, signature, now=now)
    assert not verify(SECRET, str(now), body, signature, now=now + 301)  # a replay, later
