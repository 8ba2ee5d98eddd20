"""Helpers for the Web Push tests: a local push service, subscription keys, decryption and
VAPID checks (no tests here).

The push service is an aiohttp server on 127.0.0.1 that records every request and
answers as each path is told to (201 by default; 410 for a gone subscription; a list
of statuses with an optional Retry-After, taken in turn). A test makes a subscription's
keys itself (:class:`BrowserKeys`: the user agent's P-256 key pair and auth secret, as
a browser would), decrypts each push with http_ece (RFC 8291 aes128gcm) and checks the
VAPID token with PyJWT, an implementation independent of the py_vapid that signed it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from infra.embedded.processes import free_port
from services.common.webpush import b64url_decode, b64url_encode


@dataclass
class BrowserKeys:
    """A subscription's keys as a user agent makes them."""

    private: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def p256dh(self) -> str:
        point = self.private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return b64url_encode(point)

    def subscription(self, endpoint: str) -> dict[str, Any]:
        """``PushSubscription.toJSON()`` for ``endpoint``."""
        return {"endpoint": endpoint, "expirationTime": None,
                "keys": {"p256dh": self.p256dh, "auth": b64url_encode(self.auth)}}

    def decrypt(self, body: bytes) -> dict[str, Any]:
        """The push's JSON payload, decrypted with this subscription's private key."""
        plain = http_ece.decrypt(body, private_key=self.private, auth_secret=self.auth,
                                 version="aes128gcm")
        payload: dict[str, Any] = json.loads(plain)
        return payload


@dataclass
class Push:
    """One request the push service received."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    """time.monotonic() on arrival."""


@dataclass
class PushSink:
    """A local push service: ``POST /push/<name>``."""

    port: int = 0
    requests: list[Push] = field(default_factory=list)
    answers: dict[str, list[tuple[int, str | None]]] = field(default_factory=dict)
    """Per name: (status, Retry-After) answers taken in turn; then 201."""
    gone: set[str] = field(default_factory=set)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self, name: str) -> str:
        return f"{self.origin}/push/{name}"

    def of(self, name: str) -> list[Push]:
        return [r for r in self.requests if r.path == f"/push/{name}"]

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.requests.append(Push(request.path, dict(request.headers), await request.read(),
                                  time.monotonic()))
        if name in self.gone:
            return web.Response(status=410)
        queued = self.answers.get(name)
        if queued:
            status, retry_after = queued.pop(0)
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return web.Response(status=status, headers=headers)
        return web.Response(status=201, headers={"Location": f"/message/{len(self.requests)}"})


@asynccontextmanager
async def push_sink() -> AsyncIterator[PushSink]:
    """Run a :class:`PushSink` on 127.0.0.1 for the block."""
    sink = PushSink(port=free_port())
    app = web.Application()
    app.router.add_post("/push/{name}", sink._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", sink.port).start()
    try:
        yield sink
    finally:
        await runner.cleanup()


def vapid_claims(push: Push, public_key: str) -> dict[str, Any]:
    """Check a push's VAPID ``Authorization`` (RFC 8292) and return its claims.

    ``k`` must be the served public key; the token must be ES256-signed by it, with
    ``aud`` = the endpoint's origin (PyJWT checks ``aud`` and ``exp``).
    """
    scheme, _, params = push.headers["Authorization"].partition(" ")
    assert scheme == "vapid"
    parts = dict(p.split("=", 1) for p in params.split(","))
    assert parts["k"] == public_key
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(parts["k"]))
    origin = push.headers["Host"]
    claims: dict[str, Any] = jwt.decode(parts["t"], key=key, algorithms=["ES256"],
                                        audience=f"http://{origin}")
    assert jwt.get_unverified_header(parts["t"])["alg"] == "ES256"
    return claims
