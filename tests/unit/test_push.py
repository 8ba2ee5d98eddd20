"""Web Push's pure parts: the subscription model, urgency and TTL, the payload, the answers of a
push service, VAPID tokens and which messages the push channel is planned for."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from schemas.broadcasts import BroadcastKind, BroadcastPublishedPayload
from schemas.envelope import new_event
from schemas.examples import example
from schemas.region import load_region
from schemas.shelters import ShelterStatus, ShelterStatusChanged
from services.broadcaster.domain import ChannelRoute, Planner, subject_of
from services.broadcaster.push import (
    PUSH_KINDS,
    Counts,
    VapidSigner,
    area_for,
    outcome_of,
    payload_for,
    retry_after_seconds,
    ttl_for,
    urgency_for,
)
from services.broadcaster.templates import Composer, load_templates
from services.common.webpush import (
    SubscribeRequest,
    b64url_decode,
    b64url_encode,
    generate_vapid_keys,
    origin_of,
    validation_context,
)

AREAS = ("kojimachi", "fujimi", "kanda-koen")
def point() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return b64url_encode(b"\x04" + key.x.to_bytes(32, "big") + key.y.to_bytes(32, "big"))


def request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subscription": {"endpoint": "https://fcm.googleapis.com/fcm/send/abc", "keys": {
            "p256dh": point(), "auth": b64url_encode(b"0123456789abcdef")}},
        "areas": ["kanda-koen"], "lang": "ja"}
    body.update(overrides)
    return body


def problems(body: dict[str, Any], **context: Any) -> list[str]:
    try:
        SubscribeRequest.model_validate(body, context=validation_context(AREAS, **context))
    except ValidationError as e:
        return [".".join(str(p) for p in err["loc"]) for err in e.errors()]
    return []


def test_a_browser_subscription_is_accepted() -> None:
    """A PushSubscription.toJSON() with one to three known areas and a language is valid."""
    body = request(areas=list(AREAS))
    body["subscription"]["expirationTime"] = None
    assert problems(body) == []


def test_bad_subscriptions_name_the_field() -> None:
    """Each refusal points at the offending field."""
    sub = request()["subscription"]
    assert problems(request(subscription={**sub, "endpoint": "http://push.example/x"})) == [
        "subscription.endpoint"]
    assert problems(request(subscription={**sub, "endpoint": "ftp://push.example/x"})) == [
        "subscription.endpoint"]
    assert problems(request(subscription={**sub, "keys": {**sub["keys"], "p256dh": "AAAA"}})) == [
        "subscription.keys.p256dh"]
    not_on_curve = b64url_encode(b"\x04" + b"\x01" * 64)
    assert problems(request(subscription={**sub, "keys": {
        **sub["keys"], "p256dh": not_on_curve}})) == ["subscription.keys.p256dh"]
    assert problems(request(subscription={**sub, "keys": {**sub["keys"], "auth": "a+b/"}})) == [
        "subscription.keys.auth"]
    assert problems(request(areas=[])) == ["areas"]
    assert problems(request(areas=[*AREAS, "jimbocho"])) == ["areas"]
    assert problems(request(areas=["kanda-koen", "kanda-koen"])) == ["areas"]
    assert problems(request(areas=["atlantis"])) == ["areas"]
    assert problems(request(lang="fr")) == ["lang"]
    assert problems(request(extra=1)) == ["extra"]


def test_http_endpoints_only_on_loopback_and_only_when_allowed() -> None:
    """http:// is refused, except a loopback address when the setting allows it."""
    sub = request()["subscription"]
    local = request(subscription={**sub, "endpoint": "http://127.0.0.1:8099/push/a"})
    assert problems(local) == ["subscription.endpoint"]
    assert problems(local, allow_http_loopback=True) == []
    for host in ("localhost", "[::1]", "127.0.0.9"):
        body = request(subscription={**sub, "endpoint": f"http://{host}:8099/push/a"})
        assert problems(body, allow_http_loopback=True) == [], host
    remote = request(subscription={**sub, "endpoint": "http://10.0.0.1/push/a"})
    assert problems(remote, allow_http_loopback=True) == ["subscription.endpoint"]


def test_base64url_round_trips_and_refuses_other_alphabets() -> None:
    """Keys are unpadded base64url; standard base64's + and / are not."""
    data = bytes(range(256))
    assert b64url_decode(b64url_encode(data)) == data
    assert b64url_decode(b64url_encode(data) + "==") == data
    with pytest.raises(ValueError):
        b64url_decode("ab+/")
    assert origin_of("https://updates.push.services.mozilla.com/wpush/v2/x?y") == \
        "https://updates.push.services.mozilla.com"


def test_urgency_and_ttl_follow_the_level() -> None:
    """Levels 4 and 5 in force are high urgency; level 3, lifts and shelters normal."""
    assert urgency_for(BroadcastKind.ORDER_ISSUED, 5) == "high"
    assert urgency_for(BroadcastKind.ORDER_UPDATED, 4) == "high"
    assert urgency_for(BroadcastKind.ORDER_ISSUED, 3) == "normal"
    assert urgency_for(BroadcastKind.ORDER_LIFTED, 5) == "normal"
    assert urgency_for(BroadcastKind.SHELTER_OPENED, None) == "normal"
    assert ttl_for(BroadcastKind.ORDER_ISSUED, 5) == 12 * 3600
    assert ttl_for(BroadcastKind.SHELTER_OPENED, None) == 6 * 3600


def test_push_service_answers() -> None:
    """2xx sent; 404/410 removed; 408/425/429/5xx retried; other 4xx failed."""
    assert [outcome_of(s) for s in (200, 201, 202)] == ["sent"] * 3
    assert [outcome_of(s) for s in (404, 410)] == ["removed"] * 2
    assert [outcome_of(s) for s in (408, 425, 429, 500, 502, 503)] == ["retry"] * 6
    assert [outcome_of(s) for s in (400, 401, 403, 413)] == ["failed"] * 4
    now = time.time()
    assert retry_after_seconds("7", now) == 7.0
    later = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    retry = retry_after_seconds(later, now)
    assert retry is not None and 28 <= retry <= 31
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds("-1", now) is None
    assert Counts(3, 1, 2).receipt == "sent=3,failed=1,removed=2"


def test_payload_is_the_service_workers_json_in_one_language() -> None:
    """title, body, url (the subscriber's first area the message concerns), level, tag."""
    published = example("broadcast.published")
    p = published.payload
    assert isinstance(p, BroadcastPublishedPayload)
    area = area_for(("fujimi", p.area_ids[-1]), p.area_ids)
    assert area == p.area_ids[-1]
    body = json.loads(payload_for(p, area))
    assert body == {"title": p.headline, "body": p.push,
                    "url": f"/?area={area}&lang={p.language}",
                    "level": p.level or 0, "tag": str(p.message_id)}


def test_vapid_tokens_are_es256_for_the_origin_and_reused() -> None:
    """The signer's token verifies with the public key, aud = origin, exp within 24 h."""
    keys = generate_vapid_keys()
    clock = [1_900_000_000.0]
    signer = VapidSigner(keys.signer(), "mailto:ops@example.org", clock=lambda: clock[0])
    header = signer.header("https://push.example.net")
    assert signer.header("https://push.example.net") == header
    assert signer.header("https://other.example.net") != header
    params = dict(p.split("=", 1) for p in header.removeprefix("vapid ").split(","))
    assert params["k"] == keys.public_key
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(),
                                                          b64url_decode(params["k"]))
    claims = jwt.decode(params["t"], public, algorithms=["ES256"],
                        audience="https://push.example.net",
                        options={"verify_exp": False})
    assert claims["sub"] == "mailto:ops@example.org"
    assert 0 < claims["exp"] - clock[0] <= 24 * 3600
    clock[0] += 12 * 3600  # past its validity: signed anew
    assert signer.header("https://push.example.net") != header


def test_the_push_route_is_planned_for_orders_and_shelter_openings_only() -> None:
    """Every order version and a shelter opening get push deliveries; a full shelter does not."""
    planner = Planner(Composer(load_region("chiyoda"), load_templates("chiyoda")), "",
                      [ChannelRoute("push", True, ("ja", "en", "zh", "ko"), kinds=PUSH_KINDS)])
    now = datetime.now(UTC)
    for kind in ("evacuation.order_issued", "evacuation.order_updated",
                 "evacuation.order_lifted"):
        subject = subject_of(example(kind))
        assert subject is not None
        assert len(planner.plan(subject, now=now).deliveries) == 4, kind
    base = example("shelter.status_changed")
    assert isinstance(base, ShelterStatusChanged)

    def change(status: ShelterStatus, previous: ShelterStatus) -> int:
        state = base.payload.model_copy(update={"status": status, "previous_status": previous,
                                                "shelter_id": base.payload.shelter_id})
        subject = subject_of(new_event(ShelterStatusChanged, state, occurred_at=now,
                                       source="shelter-tracker", event_id=uuid.uuid4()))
        assert subject is not None
        return len(planner.plan(subject, now=now).deliveries)

    assert change(ShelterStatus.OPEN, ShelterStatus.OPENING) == 4
    assert change(ShelterStatus.FULL, ShelterStatus.CROWDED) == 0


def test_hq_sees_a_push_fanouts_counts_and_the_public_does_not() -> None:
    """The push ledger's receipt (counts, no one's identity) reaches HQ's message entity only."""
    from services.gateway.cop import COP, Kind, RegionIndex
    from services.gateway.reducer import reduce
    from services.gateway.views import Audience, Viewer, view_state

    requested = example("broadcast.requested")
    delivered = example("broadcast.delivered")
    p = delivered.payload
    body = {**p.model_dump(mode="json"), "channel": "push", "language": "ja",
            "message_id": str(requested.payload.message_id),
            "version": requested.payload.version, "receipt": "sent=3,failed=1,removed=2"}
    push = new_event(type(delivered), body, occurred_at=delivered.occurred_at,
                     source="broadcaster")
    cop = COP.empty(RegionIndex.from_region(load_region()))
    for event in (requested, push):
        cop, _ = reduce(cop, event)  # type: ignore[arg-type]
    key = str(requested.payload.message_id)
    hq = view_state(cop, Viewer(Audience.HQ))[Kind.MESSAGE.value][key]
    assert hq["deliveries"]["ja/push"]["counts"] == "sent=3,failed=1,removed=2"
    public = view_state(cop, Viewer(Audience.PUBLIC)).get(Kind.MESSAGE.value, {}).get(key, {})
    assert "deliveries" not in public
