"""Delivery channels behind one small interface, and the drill guard.

A :class:`Channel` has a ``name`` (the ``channel`` of delivery events), a
``live`` flag (does it reach the public?), the ``languages`` it wants, and one
coroutine, ``send(outgoing) -> DeliveryResult``, that makes **one** attempt.
Retries, backoff, circuit breaking and the exactly-once bookkeeping are the
dispatcher's (:mod:`services.broadcaster.dispatch`), so every channel gets them
alike and a channel stays a thin adapter.

- :class:`PublicFeedChannel` produces the ``broadcast.published`` event to
  ``public.messages`` (the gateway streams it). Live when the namespace is live.
- :class:`WebhookChannel` POSTs the same JSON document to one subscriber, signed
  (see :func:`sign`); live as configured per subscriber.
- :class:`CapFeedChannel` stores the CAP document for the HTTP feed
  (``/cap/alerts.atom``) and optionally writes it to a directory. Live when the
  namespace is live.

**Drill guard.** An exercise message is never sent to a channel with
``live=True``. The planner refuses such a delivery before it is queued, the
dispatcher checks again before every attempt, and every channel below checks a
third time in ``send`` (:func:`guard`), so no single bug lets a drill through.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable
from uuid import UUID

import aiohttp
import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from yarl import URL

from schemas.region import LANGUAGES
from schemas.topics import qualified
from services.broadcaster.errors import DrillRefused
from services.broadcaster.feed import CapFeedStore, CapRecord

log = logging.getLogger(__name__)

__all__ = [
    "CAP_LANGUAGE",
    "DELIVERY_ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "CapFeedChannel",
    "Channel",
    "DeliveryResult",
    "Outgoing",
    "PublicFeedChannel",
    "WebhookChannel",
    "WebhookSubscriber",
    "guard",
    "refusal",
    "sign",
    "verify",
]

SIGNATURE_HEADER: Final = "X-Sonae-Signature"
TIMESTAMP_HEADER: Final = "X-Sonae-Timestamp"
DELIVERY_ID_HEADER: Final = "Sonae-Delivery-Id"

CAP_LANGUAGE: Final = "mul"
"""The delivery language of a CAP document: one document carries every language."""

_RECEIPT_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))


@dataclass(frozen=True)
class Outgoing:
    """One delivery attempt: a message version in one language, for one channel."""

    namespace: str
    message_id: UUID
    version: int
    language: str
    channel: str
    delivery_id: UUID
    """Stable across attempts and restarts: the subscriber's idempotency key."""
    exercise: bool
    attempt: int
    body: bytes
    """Exactly what is sent, fixed when the delivery was planned."""
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one attempt."""

    ok: bool
    receipt: str = ""
    error: str = ""
    permanent: bool = False
    """True when retrying cannot help (e.g. HTTP 400/401/403/404/410/422)."""
    retry_after: float | None = None
    """Seconds the receiver asked us to wait (HTTP Retry-After), if any."""

    @classmethod
    def delivered(cls, receipt: str = "") -> DeliveryResult:
        """A successful attempt."""
        clean = "".join(ch for ch in receipt if ch in _RECEIPT_CHARS)[:200]
        return cls(True, receipt=clean)

    @classmethod
    def failed(cls, error: str, *, permanent: bool = False,
               retry_after: float | None = None) -> DeliveryResult:
        """A failed attempt; ``permanent`` stops the retries."""
        return cls(False, error=error[:1000] or "failed", permanent=permanent,
                   retry_after=retry_after)


@runtime_checkable
class Channel(Protocol):
    """Where messages go. ``send`` makes one attempt and never raises for a failed delivery."""

    @property
    def name(self) -> str:
        """The channel's slug, e.g. ``public-feed``, ``cap-feed``, ``webhook-city-app``."""
        ...

    @property
    def live(self) -> bool:
        """True when the channel reaches the public: exercise traffic must never go there."""
        ...

    @property
    def languages(self) -> tuple[str, ...]:
        """Languages to deliver (``("mul",)`` for the CAP feed)."""
        ...

    async def send(self, message: Outgoing) -> DeliveryResult:
        """Attempt one delivery."""
        ...


def refusal(channel_name: str, live: bool, exercise: bool) -> str | None:
    """Why a delivery must be refused by the drill guard, or None if it may go."""
    if exercise and live:
        return f"exercise message refused by live channel {channel_name}"
    return None


def guard(channel: Channel, message: Outgoing) -> None:
    """Raise :class:`DrillRefused` if ``message`` is an exercise and ``channel`` is live."""
    reason = refusal(channel.name, channel.live, message.exercise)
    if reason is not None:
        raise DrillRefused(reason)


# --- the public feed ----------------------------------------------------------------------


class PublicFeedChannel:
    """Produces each language's ``broadcast.published`` event to ``public.messages``.

    Idempotent for readers: the event id is derived from (namespace, message,
    version, language), so a resend after a crash is the same event and every
    consumer deduplicates it by ``event_id``.
    """

    def __init__(self, producer: AIOKafkaProducer, namespace: str, *, live: bool | None = None,
                 languages: tuple[str, ...] = LANGUAGES) -> None:
        self._producer = producer
        self._topic = qualified("public.messages", namespace)
        self._live = (namespace == "") if live is None else live
        self._languages = languages

    @property
    def name(self) -> str:
        """Always ``public-feed``."""
        return "public-feed"

    @property
    def live(self) -> bool:
        """Live in the live namespace (unless overridden)."""
        return self._live

    @property
    def languages(self) -> tuple[str, ...]:
        """Every public language."""
        return self._languages

    async def send(self, message: Outgoing) -> DeliveryResult:
        """Produce the stored event bytes keyed by message id; wait for the broker's ack."""
        guard(self, message)
        try:
            meta = await self._producer.send_and_wait(
                self._topic, message.body, key=str(message.message_id).encode())
        except (KafkaError, OSError, TimeoutError) as e:
            return DeliveryResult.failed(f"{type(e).__name__}: {e}")
        return DeliveryResult.delivered(f"{self._topic}/{meta.partition}@{meta.offset}")


# --- webhooks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookSubscriber:
    """One webhook subscriber (see services/broadcaster/webhooks.py for the file)."""

    name: str
    url: str
    secret: bytes = field(repr=False)
    languages: tuple[str, ...] = LANGUAGES
    live: bool = True
    timeout: float = 10.0


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Sonae-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``timestamp.body``.

    The timestamp is inside the MAC, so a captured request cannot be replayed
    later with a fresh timestamp; subscribers reject old timestamps.
    """
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, *,
           now: float | None = None, tolerance: float = 300.0) -> bool:
    """Check a signature as a subscriber should (constant-time, timestamp within tolerance)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare for webhooks, and our backoff still applies
    return seconds if 0 <= seconds <= 86_400 else None


# Statuses where trying again later can succeed; other 4xx mean the request is
# wrong for this subscriber (bad secret, gone) and retrying only adds load.
_TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})


class WebhookChannel:
    """POSTs signed JSON to one subscriber; one attempt per ``send``."""

    def __init__(self, subscriber: WebhookSubscriber, session: aiohttp.ClientSession,
                 *, clock: Any = time.time) -> None:
        self._sub = subscriber
        self._session = session
        self._clock = clock

    @property
    def name(self) -> str:
        """``webhook-<subscriber name>``."""
        return f"webhook-{self._sub.name}"

    @property
    def live(self) -> bool:
        """As configured for the subscriber."""
        return self._sub.live

    @property
    def languages(self) -> tuple[str, ...]:
        """As configured for the subscriber."""
        return self._sub.languages

    @property
    def subscriber(self) -> WebhookSubscriber:
        """The subscriber this channel delivers to."""
        return self._sub

    def headers(self, message: Outgoing) -> dict[str, str]:
        """The request headers of one attempt (the timestamp is the attempt's)."""
        timestamp = str(int(self._clock()))
        return {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "sonae-broadcaster",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._sub.secret, timestamp, message.body),
            DELIVERY_ID_HEADER: str(message.delivery_id),
        }

    async def send(self, message: Outgoing) -> DeliveryResult:
        """POST the body; 2xx is delivered, 408/409/425/429/5xx and network errors retry."""
        guard(self, message)
        timeout = aiohttp.ClientTimeout(total=self._sub.timeout)
        try:
            async with self._session.post(self._sub.url, data=message.body,
                                          headers=self.headers(message), timeout=timeout,
                                          allow_redirects=False) as response:
                await response.read()
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            # No secrets in errors: the URL may carry a token, so only its host is named.
            return DeliveryResult.failed(f"{type(e).__name__} from {self._host()}")
        if 200 <= status < 300:
            return DeliveryResult.delivered(f"http-{status}")
        permanent = status < 500 and status not in _TRANSIENT_STATUSES
        return DeliveryResult.failed(f"HTTP {status} from {self._host()}", permanent=permanent,
                                     retry_after=retry_after)

    def _host(self) -> str:
        try:
            return URL(self._sub.url).host or "subscriber"
        except ValueError:
            return "subscriber"


# --- the CAP feed -------------------------------------------------------------------------


class CapFeedChannel:
    """Stores CAP documents for the HTTP feed; optionally also writes ``<identifier>.xml`` files.

    Idempotent: a document is stored once per (namespace, identifier); storing it
    again changes nothing, and a file is replaced atomically with the same bytes.
    """

    def __init__(self, store: CapFeedStore, namespace: str, *, live: bool | None = None,
                 directory: Path | None = None) -> None:
        self._store = store
        self._namespace = namespace
        self._live = (namespace == "") if live is None else live
        self._directory = directory

    @property
    def name(self) -> str:
        """Always ``cap-feed``."""
        return "cap-feed"

    @property
    def live(self) -> bool:
        """Live in the live namespace (unless overridden)."""
        return self._live

    @property
    def languages(self) -> tuple[str, ...]:
        """One delivery per version: the document holds every language."""
        return (CAP_LANGUAGE,)

    async def send(self, message: Outgoing) -> DeliveryResult:
        """Store the document (and write the file); report the identifier as the receipt."""
        guard(self, message)
        meta = message.meta
        record = CapRecord(
            identifier=str(meta["identifier"]),
            order_id=UUID(str(meta["order_id"])),
            version=int(meta["version"]),
            status=str(meta["status"]),
            msg_type=str(meta["msg_type"]),
            title=str(meta["title"]),
            sent=datetime.fromisoformat(str(meta["sent"])),
            expires=datetime.fromisoformat(str(meta["expires"])) if meta.get("expires") else None,
            xml=message.body,
        )
        try:
            await self._store.publish(self._namespace, record)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            return DeliveryResult.failed(f"{type(e).__name__}: {e}")
        if self._directory is not None:
            try:
                _write_atomically(self._directory / f"{record.identifier}.xml", message.body)
            except OSError as e:
                return DeliveryResult.failed(f"cannot write CAP file: {e}")
        return DeliveryResult.delivered(record.identifier)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".xml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one, never half
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
