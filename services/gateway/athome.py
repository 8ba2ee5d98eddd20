"""The residents' at-home form, forwarded to intake server-side (no CORS, no token).

Route (added to the portal's HTTP server by :func:`services.gateway.http.build_app`):

- ``POST /v1/public/at-home`` with the body of intake's ``POST /v1/people/at-home``
  (``client_id``, ``area_id``, ``size``, ``needs``, ``contact``, ``address``,
  ``note``) → intake's answer, status and body as intake gave them (202 / 200 /
  422 naming the field / 429 with ``Retry-After`` …).

Why forwarded: the page and its form are served on the portal's origin, and its
Content-Security-Policy lets it talk to that origin only; intake need not be
reachable from the internet, and no CORS rule has to be kept right. The gateway
adds nothing to the body and sends no token, so intake records the report as
``via: public`` with every rule of the public form (UUID client id, no exercise
flag, no reporter; :mod:`services.intake.athome`).

Limits: the body is read up to :data:`MAX_BODY` bytes (413 beyond), and each
client address spends a token of its own bucket (``SONAE_ATHOME_FORM_RATE_BURST``,
``SONAE_ATHOME_FORM_RATE_PER_SECOND``; 429 with ``Retry-After``) before anything
is forwarded. Intake limits requests without a token per address too, and sees the
gateway's address for all of them: its bucket bounds every form through this
gateway together. The client address is only the bucket's key, in memory; the
gateway logs no body. Intake unreachable: 503 with ``Retry-After`` (the page keeps
the report, with its id, and sends it again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import aiohttp
from aiohttp import web

from infra.settings import Settings
from services.common.ratelimit import RateLimiter, retry_after_seconds

log = logging.getLogger(__name__)

__all__ = ["FORM_PATH", "INTAKE_PATH", "MAX_BODY", "AtHomeForm"]

FORM_PATH: Final = "/v1/public/at-home"
"""Where the page posts the form (the portal's origin)."""
INTAKE_PATH: Final = "/v1/people/at-home"
"""Intake's route the form is forwarded to."""
MAX_BODY: Final = 16 * 1024
"""Intake's bound for the public form's body (``MAX_PUBLIC_JSON_BYTES``)."""
TIMEOUT: Final = 10.0
"""Seconds intake may take to answer a forwarded form."""
_PASSED_HEADERS: Final = ("Retry-After",)


def _refusal(status: int, error: str, message: str,
             headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status,
                             headers=headers)


class AtHomeForm:
    """The form's route of one gateway: rate limit, bounded read, forward to intake."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic,
                 timeout: float = TIMEOUT) -> None:
        self._url = settings.intake_base_url + INTAKE_PATH
        self._limiter = RateLimiter(settings.athome_form_rate_burst,
                                    settings.athome_form_rate_per_second)
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def add_routes(self, app: web.Application) -> None:
        """Add ``POST /v1/public/at-home`` to ``app``."""
        app.router.add_post(FORM_PATH, self.post)

    async def close(self) -> None:
        """Close the HTTP session to intake."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, request: web.Request) -> web.Response:
        """Forward one form post (see the module docstring)."""
        address = request.remote or "unknown"
        wait = self._limiter.take(address, self._clock())
        if wait > 0:
            seconds = retry_after_seconds(wait)
            return _refusal(429, "rate_limited", f"too many reports from this address; retry "
                                                 f"in {seconds} s",
                            {"Retry-After": str(seconds)})
        if request.content_type != "application/json":
            return _refusal(415, "unsupported_media_type", "Content-Type must be "
                                                           "application/json")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _refusal(413, "too_large", f"the body exceeds {MAX_BODY} bytes")
        data = await request.content.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            return _refusal(413, "too_large", f"the body exceeds {MAX_BODY} bytes")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(
                    self._url, data=data,
                    headers={"Content-Type": "application/json"}) as response:
                body = await response.read()
                headers = {name: response.headers[name] for name in _PASSED_HEADERS
                           if name in response.headers}
                return web.Response(status=response.status, body=body, headers=headers,
                                    content_type="application/json")
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("at-home form: intake unreachable (%s: %s)", type(e).__name__, e)
            return _refusal(503, "unavailable", "the ward's system is unreachable; your "
                                                "report is kept and sent again",
                            {"Retry-After": "5"})
