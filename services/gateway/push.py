"""The gateway's Web Push endpoints: the VAPID public key, subscribe and unsubscribe.

Routes (added to the public HTTP server by :func:`services.gateway.http.build_app`):

- ``GET /v1/push/key`` → ``{"publicKey": "<base64url uncompressed P-256 point>"}``,
  the ``applicationServerKey`` the page subscribes with;
- ``POST /v1/push/subscriptions`` with ``{"subscription": <PushSubscription.toJSON()>,
  "areas": [up to 3 area ids], "lang": "ja"|"en"|"zh"|"ko"}`` → 201; the same
  endpoint again replaces the earlier subscription;
- ``DELETE /v1/push/subscriptions`` with ``{"endpoint": "…"}`` → 204.

Bodies are validated by :mod:`services.common.webpush` (a 422 lists each bad
field by its dotted path), limited to :data:`MAX_BODY` bytes, and both writes
spend a token of the client address's bucket (``SONAE_PUSH_RATE_BURST``,
``SONAE_PUSH_RATE_PER_SECOND``; 429 with
``Retry-After``). Nothing about the resident is stored beyond the subscription
itself; the client address is only the rate limit's key, in memory. A
subscription belongs to this gateway's namespace, so one made through a drill
gateway gets only that drill's pushes.

The key pair is read (or created) from PostgreSQL at start; without the database
the routes answer 503 and the rest of the gateway serves as before.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from infra.settings import Settings
from schemas.region import Region
from services.common.ratelimit import RateLimiter, retry_after_seconds
from services.common.retry import TRANSIENT_DB
from services.common.webpush import (
    SubscribeRequest,
    SubscriptionStore,
    UnsubscribeRequest,
    VapidKeys,
    ensure_vapid_keys,
    validation_context,
)

log = logging.getLogger(__name__)

__all__ = ["MAX_BODY", "PushApi"]

MAX_BODY: Final = 8 * 1024
"""A subscription is well under 1 KiB; anything much larger is not one."""


def _problems(error: ValidationError) -> list[dict[str, Any]]:
    return [{"field": ".".join(str(p) for p in e["loc"]) or None, "message": e["msg"]}
            for e in error.errors(include_url=False, include_input=False)[:20]]


def _refusal(status: int, error: str, message: str, *,
             problems: list[dict[str, Any]] | None = None,
             headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": error, "message": message}
    if problems is not None:
        body["problems"] = problems
    return web.json_response(body, status=status, headers=headers)


class PushApi:
    """The push routes of one gateway (one namespace)."""

    def __init__(self, settings: Settings, region: Region, pool: asyncpg.Pool | None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        self._store = SubscriptionStore(pool, settings.namespace) if pool is not None else None
        self._context = validation_context(
            [d.id for d in region.districts],
            allow_http_loopback=settings.push_allow_http_loopback)
        self._limiter = RateLimiter(settings.push_rate_burst, settings.push_rate_per_second)
        self._clock = clock
        self.keys: VapidKeys | None = None

    async def start(self) -> None:
        """Read (or create) the VAPID key pair; without it the routes answer 503."""
        if self._pool is None:
            log.warning("push: no database; /v1/push answers 503")
            return
        try:
            self.keys = await ensure_vapid_keys(self._pool)
        except (asyncpg.UndefinedTableError, *TRANSIENT_DB) as e:
            log.warning("push: cannot read the VAPID keys (%s: %s); apply the migrations "
                        "(sonae db migrate); /v1/push answers 503 until restarted",
                        type(e).__name__, e)

    def add_routes(self, app: web.Application) -> None:
        """Register the three routes on ``app``."""
        app.router.add_get("/v1/push/key", self._key)
        app.router.add_post("/v1/push/subscriptions", self._subscribe)
        app.router.add_delete("/v1/push/subscriptions", self._unsubscribe)

    # --- handlers ---

    async def _key(self, request: web.Request) -> web.Response:
        if self.keys is None:
            return _refusal(503, "unavailable", "push notifications are not available")
        return web.json_response({"publicKey": self.keys.public_key},
                                 headers={"Cache-Control": "max-age=300"})

    async def _subscribe(self, request: web.Request) -> web.Response:
        refused, body = await self._admit(request)
        if refused is not None:
            return refused
        try:
            subscribe = SubscribeRequest.model_validate(body, context=self._context)
        except ValidationError as e:
            return _refusal(422, "invalid", "the subscription was refused",
                            problems=_problems(e))
        assert self._store is not None
        try:
            await self._store.upsert(subscribe)
        except TRANSIENT_DB as e:
            log.warning("push: cannot store a subscription (%s)", type(e).__name__)
            return _refusal(503, "unavailable", "try again shortly",
                            headers={"Retry-After": "5"})
        return web.json_response({"areas": list(subscribe.areas), "lang": subscribe.lang},
                                 status=201)

    async def _unsubscribe(self, request: web.Request) -> web.Response:
        refused, body = await self._admit(request)
        if refused is not None:
            return refused
        try:
            unsubscribe = UnsubscribeRequest.model_validate(body)
        except ValidationError as e:
            return _refusal(422, "invalid", "the request was refused", problems=_problems(e))
        assert self._store is not None
        try:
            await self._store.delete(unsubscribe.endpoint)
        except TRANSIENT_DB as e:
            log.warning("push: cannot delete a subscription (%s)", type(e).__name__)
            return _refusal(503, "unavailable", "try again shortly",
                            headers={"Retry-After": "5"})
        # 204 whether or not it existed: unsubscribing is idempotent, and the answer
        # must not tell a caller which endpoints are subscribed.
        return web.Response(status=204)

    async def _admit(self, request: web.Request) -> tuple[web.Response | None, Any]:
        """Availability, the client's rate limit, the body's size and JSON."""
        if self.keys is None or self._store is None:
            return _refusal(503, "unavailable", "push notifications are not available"), None
        wait = self._limiter.take(request.remote or "unknown", self._clock())
        if wait > 0:
            return _refusal(429, "rate_limited", "too many requests from this address",
                            headers={"Retry-After": str(retry_after_seconds(wait))}), None
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _refusal(413, "too_large", f"the body is over {MAX_BODY} bytes"), None
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return _refusal(413, "too_large", f"the body is over {MAX_BODY} bytes"), None
        try:
            return None, json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _refusal(422, "invalid", "the body is not JSON",
                            problems=[{"field": None, "message": "the body is not JSON"}]), None
