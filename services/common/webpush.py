"""Web Push parts the gateway and the broadcaster share: the VAPID key pair, the
subscription model and its table.

- **VAPID** (RFC 8292): one P-256 key pair per deployment, made by ``py_vapid``
  and kept in PostgreSQL (``push_vapid_keys``, migration 0009).
  :func:`ensure_vapid_keys` creates it once — ``sonae push keys``, or whichever
  of the gateway and the broadcaster starts first — and reads it otherwise; the
  gateway serves the public key to the page, the broadcaster signs with the
  private one.
- **Subscriptions**: :class:`SubscribeRequest` is what the page posts — the
  browser's ``PushSubscription.toJSON()``, up to three areas of the region pack
  and a language — validated with a clear error per field (the endpoint must be
  ``https``, the keys must decode to a P-256 point and a 16-byte secret).
  :class:`SubscriptionStore` writes it (the gateway) keyed by (namespace,
  endpoint), so a resubscription replaces the old row; nothing else about the
  resident is stored. The broadcaster reads the table with its own fan-out
  queries (``services/broadcaster/push.py``).

Plain ``http`` endpoints are refused unless the validation context allows
loopback ones (``SONAE_PUSH_ALLOW_HTTP_LOOPBACK``): the tests' and benchmark's
local push service listens on 127.0.0.1 without TLS.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from yarl import URL

__all__ = [
    "MAX_AREAS",
    "PUSH_TABLES",
    "BrowserSubscription",
    "StoredSubscription",
    "SubscribeRequest",
    "SubscriptionKeys",
    "SubscriptionStore",
    "UnsubscribeRequest",
    "VapidKeys",
    "b64url_decode",
    "b64url_encode",
    "ensure_vapid_keys",
    "generate_vapid_keys",
    "origin_of",
    "validation_context",
]

MAX_AREAS: Final = 3
"""A resident follows up to three areas (home, work, a parent's)."""
MAX_ENDPOINT: Final = 2048
PUSH_TABLES: Final = ("push_vapid_keys", "push_subscriptions", "push_sent", "push_counts")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url, as Web Push writes keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; ``ValueError`` on anything else."""
    # b64decode's altchars would also let standard base64's "+" and "/" through.
    if not _B64URL.fullmatch(text):
        raise ValueError("is not base64url")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError("is not base64url") from e


# --- VAPID ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VapidKeys:
    """The deployment's VAPID key pair."""

    private_pem: str = field(repr=False)
    public_key: str
    """base64url of the uncompressed P-256 point (the page's ``applicationServerKey``)."""

    def signer(self) -> Vapid02:
        """A py_vapid signer holding the private key."""
        return Vapid02.from_pem(self.private_pem.encode("ascii"))


def generate_vapid_keys() -> VapidKeys:
    """A new key pair (py_vapid)."""
    vapid = Vapid02()
    vapid.generate_keys()
    point = vapid.public_key.public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)
    return VapidKeys(vapid.private_pem().decode("ascii"), b64url_encode(point))


async def ensure_vapid_keys(pool: asyncpg.Pool) -> VapidKeys:
    """The stored key pair, created first if there is none (safe when several start at once)."""
    candidate = generate_vapid_keys()
    async with pool.acquire() as conn:
        await conn.execute(
            "insert into push_vapid_keys (id, private_pem, public_key) values (1, $1, $2) "
            "on conflict (id) do nothing", candidate.private_pem, candidate.public_key)
        row = await conn.fetchrow("select private_pem, public_key from push_vapid_keys")
    assert row is not None
    return VapidKeys(row["private_pem"], row["public_key"])


# --- subscriptions -------------------------------------------------------------------------

_LOOPBACK_NAMES: Final = frozenset({"localhost"})


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin_of(endpoint: str) -> str:
    """``scheme://host[:port]`` of an endpoint: the VAPID ``aud`` and the concurrency key."""
    url = URL(endpoint)
    return str(url.origin())


def validation_context(areas: Collection[str], *, allow_http_loopback: bool = False
                       ) -> dict[str, object]:
    """What :class:`SubscribeRequest` needs to know: the region's areas, the http exception."""
    return {"areas": frozenset(areas), "allow_http_loopback": allow_http_loopback}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SubscriptionKeys(_Model):
    """The browser's keys for this subscription (RFC 8291)."""

    p256dh: Annotated[str, Field(min_length=1, max_length=200)]
    """base64url of the user agent's P-256 public key (65-byte uncompressed point)."""
    auth: Annotated[str, Field(min_length=1, max_length=100)]
    """base64url of the 16-byte authentication secret."""

    @field_validator("p256dh")
    @classmethod
    def _point(cls, value: str) -> str:
        raw = b64url_decode(value)
        if len(raw) != 65 or raw[0] != 0x04:
            raise ValueError(f"must be a 65-byte uncompressed P-256 point, got {len(raw)} bytes")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError:
            raise ValueError("is not a point on P-256") from None
        return value

    @field_validator("auth")
    @classmethod
    def _secret(cls, value: str) -> str:
        raw = b64url_decode(value)
        if len(raw) != 16:
            raise ValueError(f"must decode to 16 bytes, got {len(raw)}")
        return value


class BrowserSubscription(_Model):
    """``PushSubscription.toJSON()`` as the browser gives it."""

    endpoint: Annotated[str, Field(min_length=1, max_length=MAX_ENDPOINT)]
    """The push service URL for this browser (https)."""
    keys: SubscriptionKeys
    expirationTime: int | None = None  # the browser's own field name
    """When the push service will end the subscription (ms since the epoch), if it says."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str, info: ValidationInfo) -> str:
        try:
            url = URL(value)
        except (ValueError, TypeError):
            raise ValueError("is not a URL") from None
        if not url.is_absolute() or not url.host:
            raise ValueError("must be an absolute URL with a host")
        if url.user is not None or url.password is not None:
            raise ValueError("must not carry credentials")
        allow_http = bool((info.context or {}).get("allow_http_loopback", False))
        if url.scheme == "https":
            return value
        if url.scheme == "http" and allow_http and _is_loopback(url.host):
            return value
        raise ValueError("must be an https:// URL")


class SubscribeRequest(_Model):
    """``POST /v1/push/subscriptions``."""

    subscription: BrowserSubscription
    areas: Annotated[tuple[str, ...], Field(min_length=1, max_length=MAX_AREAS)]
    """Ids of the region pack's areas (districts) to be told about."""
    lang: Literal["ja", "en", "zh", "ko"]
    """The language of the pushes."""

    @field_validator("areas")
    @classmethod
    def _known(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("must name each area once")
        known = (info.context or {}).get("areas")
        if known is not None:
            unknown = [a for a in value if a not in known]
            if unknown:
                raise ValueError(f"unknown area(s) {', '.join(map(repr, unknown))}; known: "
                                 f"{', '.join(sorted(known))}")
        return value


class UnsubscribeRequest(_Model):
    """``DELETE /v1/push/subscriptions``."""

    endpoint: Annotated[str, Field(min_length=1, max_length=MAX_ENDPOINT)]


@dataclass(frozen=True)
class StoredSubscription:
    """A subscription row as the fan-out reads it."""

    id: int
    endpoint: str
    p256dh: str
    auth: str
    areas: tuple[str, ...]


class SubscriptionStore:
    """``push_subscriptions`` through an asyncpg pool (the gateway's writes)."""

    def __init__(self, pool: asyncpg.Pool, namespace: str) -> None:
        self._pool = pool
        self.namespace = namespace

    async def upsert(self, request: SubscribeRequest) -> int:
        """Store a subscription; the same endpoint again replaces keys, areas and language."""
        sub = request.subscription
        async with self._pool.acquire() as conn:
            sub_id: int = await conn.fetchval(
                """
                insert into push_subscriptions (namespace, endpoint, origin, p256dh, auth,
                                                areas, lang)
                values ($1, $2, $3, $4, $5, $6, $7)
                on conflict (namespace, endpoint) do update
                   set p256dh = excluded.p256dh, auth = excluded.auth,
                       areas = excluded.areas, lang = excluded.lang, updated_at = now()
                returning id
                """,
                self.namespace, sub.endpoint, origin_of(sub.endpoint), sub.keys.p256dh,
                sub.keys.auth, list(request.areas), request.lang)
        return sub_id

    async def delete(self, endpoint: str) -> bool:
        """Forget a subscription; False if there was none."""
        async with self._pool.acquire() as conn:
            deleted = await conn.fetchval(
                "delete from push_subscriptions where namespace = $1 and endpoint = $2 "
                "returning true", self.namespace, endpoint)
        return bool(deleted)
