"""The intake HTTP API (aiohttp): routes, auth, limits and error mapping.

Request pipeline, outermost first:

1. metrics — every response is counted by route template, method and status;
2. errors — every refusal becomes a JSON :class:`~services.intake.contract.ErrorBody`
   with the status of :data:`~services.intake.contract.REFUSALS`; storage outages
   are 503 with Retry-After; anything unexpected is logged and 500 (bad input
   never gets there);
3. auth — ``/v1/*`` except the OpenAPI document needs ``Authorization: Bearer``
   (401 missing/invalid/expired/revoked — the deny list of
   :mod:`services.common.revocation` is consulted on every request — or longer-lived
   than ``SONAE_TOKEN_MAX_TTL_HOURS``; 403 for a ``public`` token), then the token
   bucket of the token's subject (429 with Retry-After). A request without a valid
   token — the public paths, an unknown route, a missing or invalid token — spends
   from its client address's bucket instead, and is 429 with Retry-After once that
   is empty: a flood of bad tokens cannot take the CPU, and valid tokens (the
   gateway forwards every team's reports from one address) never share it;
4. the handler — role check (403), Content-Type (415), size while reading
   (413, before the whole body is buffered) within the body read timeout (408, and
   the connection is closed), JSON (400), then the service (202/200/409/422, 404;
   supply requests and generators: :mod:`services.intake.supplies`, 201 for a new
   request, 409 ``transition_refused`` for a step its status does not allow).
   CAP and JMA documents are parsed in the bounded
   :class:`~services.intake.parsepool.ParsePool`: 503 with Retry-After when it has as
   many waiting as it may; 413 when a CAP document has more elements than allowed.

One route takes requests without a token: ``POST /v1/people/at-home`` is also the
residents' form (:mod:`services.intake.athome`). Without an ``Authorization``
header it is the public's: it spends from the client address's bucket like every
request without a valid token, its body may be at most
:data:`~services.intake.athome.MAX_PUBLIC_JSON_BYTES`, and it is recorded as
``via: public``. With a header, the token is checked as on every other route (an
expired field token is 401, never quietly taken for the public).

The limits are settings (``SONAE_INTAKE_RATE_PER_SECOND``, ``SONAE_INTAKE_RATE_BURST``,
``SONAE_INTAKE_UNAUTHENTICATED_RATE_PER_SECOND``, ``SONAE_INTAKE_UNAUTHENTICATED_RATE_BURST``,
``SONAE_INTAKE_MAX_JSON_BYTES``, ``SONAE_INTAKE_MAX_CAP_BYTES``,
``SONAE_INTAKE_MAX_JMA_BYTES``, ``SONAE_INTAKE_BODY_TIMEOUT_SECONDS``); the constants
below are their defaults, read from :class:`~infra.settings.Settings`. The header
timeout and the connection cap are the server's (:mod:`services.common.httpguard`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Container
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final

from aiohttp import web
from pydantic import SecretStr

from infra.settings import Settings
from services.common.auth import (
    LEEWAY,
    AuthError,
    Principal,
    Role,
    TokenMissing,
    TokenRevoked,
    bearer_token,
    verify_token,
)
from services.intake.athome import MAX_PUBLIC_JSON_BYTES
from services.intake.contract import ROUTER_CODES, Answer, Health, error_body, refusal
from services.intake.domain import Action, require
from services.intake.errors import (
    BodyTooLarge,
    BodyTooSlow,
    InputRefused,
    NotPermitted,
    RateLimited,
    UnsupportedMediaType,
)
from services.intake.openapi import openapi_document
from services.intake.parsing import check_client_id, parse_json
from services.intake.ratelimit import RateLimiter, retry_after_seconds
from services.intake.relay import TRANSIENT
from services.intake.service import Intake, Outcome
from services.intake.supplies import STEPS, Step

log = logging.getLogger(__name__)

__all__ = [
    "BODY_TIMEOUT",
    "CAP_TYPES",
    "JMA_TYPES",
    "JSON_TYPES",
    "MAX_CAP_BYTES",
    "MAX_JMA_BYTES",
    "MAX_JSON_BYTES",
    "RATE_BURST",
    "RATE_PER_SECOND",
    "UNAUTHENTICATED_RATE_BURST",
    "UNAUTHENTICATED_RATE_PER_SECOND",
    "build_app",
]

_DEFAULTS: Final = Settings.model_fields
MAX_JSON_BYTES: Final[int] = _DEFAULTS["intake_max_json_bytes"].default
"""Largest JSON body: a report's longest text (2000 characters) is under 8 KiB in UTF-8."""
MAX_CAP_BYTES: Final[int] = _DEFAULTS["intake_max_cap_bytes"].default
"""Largest CAP document (alerts with detailed polygons run to hundreds of KiB)."""
MAX_JMA_BYTES: Final[int] = _DEFAULTS["intake_max_jma_bytes"].default
"""Largest JMA message (JMA's largest sample, a tsunami message, is 548 kB)."""
RATE_BURST: Final[int] = _DEFAULTS["intake_rate_burst"].default
"""Requests a token may make at once."""
RATE_PER_SECOND: Final[float] = _DEFAULTS["intake_rate_per_second"].default
"""Sustained requests per second per token subject."""
UNAUTHENTICATED_RATE_BURST: Final[int] = _DEFAULTS["intake_unauthenticated_rate_burst"].default
"""Requests without a valid token an address may make at once."""
UNAUTHENTICATED_RATE_PER_SECOND: Final[float] = (
    _DEFAULTS["intake_unauthenticated_rate_per_second"].default)
"""Sustained requests per second without a valid token per client address."""
BODY_TIMEOUT: Final[float] = _DEFAULTS["intake_body_timeout_seconds"].default
"""Seconds a request's body may take to arrive (a field phone's 8 KiB report takes far less)."""
JSON_TYPES: Final = frozenset({"application/json"})
CAP_TYPES: Final = frozenset({"application/cap+xml", "application/xml", "text/xml"})
JMA_TYPES: Final = frozenset({"application/xml", "text/xml"})
VERIFIED_TOKENS: Final = 10_000
"""Verified tokens remembered (a field team sends the same token with every request)."""
_PUBLIC_PATHS: Final = frozenset({"/healthz", "/metrics", "/v1/openapi.json"})
AT_HOME_PATH: Final = "/v1/people/at-home"
"""The one write route a request without a token may use (the residents' form)."""
_PRINCIPAL: Final = web.RequestKey("principal", Principal)


_dumps = partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, dumps=_dumps, headers=headers)


def _error(status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> web.Response:
    return _json(status, error_body(code, message), headers)


class _TokenVerifier:
    """:func:`verify_token` with a memory of the tokens it has already accepted.

    Checking an HS256 signature and the claims costs ~0.4 ms, a quarter of a report's
    handling, and a client sends the same token with every request. A remembered token
    is the exact string that passed every check, so only its expiry (with the same
    leeway) is checked again; an expired one is verified afresh, which refuses it with
    the usual message. The deny list of token ids is consulted on every request,
    remembered or not.
    """

    def __init__(self, secret: str | SecretStr, size: int = VERIFIED_TOKENS,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), *,
                 denylist: Container[str] = frozenset(),
                 max_lifetime: timedelta | None = None) -> None:
        self._secret = secret
        self._size = size
        self._clock = clock
        self._denylist = denylist
        self._max_lifetime = max_lifetime
        self._known: dict[str, Principal] = {}

    def __call__(self, token: str) -> Principal:
        principal = self._known.get(token)
        if principal is None or self._clock() >= principal.expires_at + LEEWAY:
            self._known.pop(token, None)
            principal = self._verify(token)
        if principal.token_id in self._denylist:
            raise TokenRevoked("the token has been revoked; ask for a new one")
        return principal

    def _verify(self, token: str) -> Principal:
        principal = verify_token(self._secret, token, max_lifetime=self._max_lifetime)
        if len(self._known) >= self._size:
            # Dicts keep insertion order: forget the oldest entry (the cache is a
            # speed-up, so a simple bound is enough).
            del self._known[next(iter(self._known))]
        self._known[token] = principal
        return principal


def build_app(
    intake: Intake,
    *,
    secret: str | SecretStr,
    limiter: RateLimiter | None = None,
    unauthenticated_limiter: RateLimiter | None = None,
    body_timeout: float = BODY_TIMEOUT,
    max_json_bytes: int = MAX_JSON_BYTES,
    max_cap_bytes: int = MAX_CAP_BYTES,
    max_jma_bytes: int = MAX_JMA_BYTES,
    monotonic: Callable[[], float] = time.monotonic,
    denylist: Container[str] = frozenset(),
    max_token_lifetime: timedelta | None = None,
) -> web.Application:
    """The aiohttp application around ``intake``; nothing connects until it is served.

    ``denylist`` holds the revoked token ids (a live
    :class:`~services.common.revocation.DenyList` in the process). ``limiter`` is
    per token subject, ``unauthenticated_limiter`` per client address.
    """
    metrics = intake.metrics
    limiter = limiter or RateLimiter(RATE_BURST, RATE_PER_SECOND)
    anonymous = unauthenticated_limiter or RateLimiter(UNAUTHENTICATED_RATE_BURST,
                                                       UNAUTHENTICATED_RATE_PER_SECOND)
    verify = _TokenVerifier(secret, denylist=denylist, max_lifetime=max_token_lifetime)

    @web.middleware
    async def count(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        response = await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics.requests.labels(route, request.method, str(response.status)).inc()
        return response

    @web.middleware
    async def errors(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        try:
            return await handler(request)
        except InputRefused as e:
            answer = refusal(e)
            response = _json(answer.status, answer.body, dict(answer.headers))
            if isinstance(e, BodyTooSlow):
                response.force_close()  # the rest of a stalled body is not waited for
            return response
        except AuthError as e:
            challenge = 'Bearer realm="sonae"'
            if not isinstance(e, TokenMissing):
                challenge += ', error="invalid_token"'
            return _error(401, "unauthorized", str(e), {"WWW-Authenticate": challenge})
        except web.HTTPException as e:
            # Router 404/405 and friends: same JSON shape as every other error.
            headers = {k: v for k, v in e.headers.items() if k.lower() == "allow"}
            code = ROUTER_CODES.get(e.status, "http_error")
            return _error(e.status, code, e.reason, headers)
        except TRANSIENT as e:
            log.warning("storage unavailable for %s %s: %s", request.method, request.path, e)
            return _error(503, "unavailable", "storage is unavailable; retry shortly",
                          {"Retry-After": "1"})
        except Exception:
            # A bug, not bad input: logged with its traceback, answered in the usual shape.
            log.exception("unexpected error in %s %s", request.method, request.path)
            return _error(500, "internal", "internal error; the input was not recorded")

    @web.middleware
    async def authenticate(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
        if request.path in _PUBLIC_PATHS or request.match_info.http_exception is not None:
            unauthenticated(request)
            return await handler(request)
        if request.path == AT_HOME_PATH and "Authorization" not in request.headers:
            unauthenticated(request)  # the residents' form: the address's bucket
            return await handler(request)
        try:
            principal = verify(bearer_token(request.headers.get("Authorization")))
        except AuthError:
            unauthenticated(request)  # 429 rather than 401 once the address's bucket is empty
            raise
        if principal.role is Role.PUBLIC:
            raise NotPermitted("a public token cannot use intake")
        wait = limiter.take(principal.subject, monotonic())
        if wait > 0:
            seconds = retry_after_seconds(wait)
            raise RateLimited(
                f"too many requests for {principal.subject}; retry in {seconds} s",
                retry_after=seconds)
        request[_PRINCIPAL] = principal
        return await handler(request)

    def unauthenticated(request: web.Request) -> None:
        """Spend one token of the client address's bucket; 429 when it is empty."""
        address = request.remote or "unknown"
        wait = anonymous.take(address, monotonic())
        if wait > 0:
            seconds = retry_after_seconds(wait)
            raise RateLimited(
                f"too many requests without a valid token from {address}; retry in "
                f"{seconds} s", retry_after=seconds)

    async def body(request: web.Request, types: frozenset[str], limit: int) -> bytes:
        if request.content_type not in types:
            raise UnsupportedMediaType(f"Content-Type must be {' or '.join(sorted(types))}, "
                                       f"not {request.content_type}")
        if types is JSON_TYPES and (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaType("JSON must be UTF-8")
        too_large = BodyTooLarge(f"the body exceeds {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        data = bytearray()
        try:
            async with asyncio.timeout(body_timeout):
                async for chunk in request.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > limit:
                        raise too_large
        except TimeoutError:
            raise BodyTooSlow(f"the body did not arrive within {body_timeout:g} s "
                              f"({len(data)} bytes received)") from None
        return bytes(data)

    def answer(outcome: Outcome | Answer) -> web.Response:
        headers = {}
        links = outcome.body.get("links")
        if outcome.status in (200, 202) and isinstance(links, dict) and "self" in links:
            headers["Location"] = str(links["self"])
        return _json(outcome.status, outcome.body, headers)

    async def post_report(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.REPORT)
        document = parse_json(await body(request, JSON_TYPES, max_json_bytes))
        return answer(await intake.submit_report(principal, document))

    async def get_report(request: web.Request) -> web.Response:
        return answer(await intake.report(request[_PRINCIPAL], request.match_info["id"]))

    async def post_shelter_status(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.SHELTER_STATUS)
        key = check_client_id(request.headers.get("Idempotency-Key"))
        document = parse_json(await body(request, JSON_TYPES, max_json_bytes))
        return answer(await intake.submit_shelter_status(
            principal, request.match_info["shelter_id"], document, key))

    async def post_check_in(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.HOUSEHOLDS)
        document = parse_json(await body(request, JSON_TYPES, max_json_bytes))
        return answer(await intake.households.check_in(
            principal, request.match_info["shelter_id"], document))

    async def post_check_out(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.HOUSEHOLDS)
        document = parse_json(await body(request, JSON_TYPES, max_json_bytes))
        return answer(await intake.households.check_out(
            principal, request.match_info["shelter_id"], request.match_info["code"], document))

    async def post_transfer(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.HOUSEHOLDS)
        document = parse_json(await body(request, JSON_TYPES, max_json_bytes))
        return answer(await intake.households.transfer(
            principal, request.match_info["shelter_id"], request.match_info["code"], document))

    async def get_households(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.HOUSEHOLDS)
        result = await intake.households.listing(principal, request.match_info["shelter_id"])
        return _json(result.status, result.body, dict(result.headers))

    async def post_hazard(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.HAZARD_OBSERVATION)
        key = check_client_id(request.headers.get("Idempotency-Key"))
        document = parse_json(await body(request, JSON_TYPES, max_json_bytes))
        return answer(await intake.submit_hazard(principal, document, key))

    async def post_cap(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.CAP)
        xml = await body(request, CAP_TYPES, max_cap_bytes)
        intake.parsing.admit()  # 503 when the parsing pool is full (no await until it runs)
        return answer(await intake.submit_cap(principal, xml))

    async def post_jma(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.JMA)
        xml = await body(request, JMA_TYPES, max_jma_bytes)
        intake.parsing.admit()
        return answer(await intake.submit_jma(principal, xml))

    def supplies_answer(result: Answer) -> web.Response:
        return _json(result.status, result.body, dict(result.headers))

    async def post_supply_request(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.SUPPLY_REQUEST)
        document = parse_json(await body(request, JSON_TYPES, max_json_bytes))
        return supplies_answer(await intake.supplies.request(principal, document))

    async def get_supply_requests(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.READ_SUPPLY_REQUESTS)
        return supplies_answer(await intake.supplies.requests(
            principal, site=request.query.get("site"), status=request.query.get("status")))

    async def post_supply_step(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        step = Step(request.match_info["step"])
        require(principal, STEPS[step][1])
        document = parse_json(await body(request, JSON_TYPES, max_json_bytes))
        return supplies_answer(await intake.supplies.step(
            principal, request.match_info["request_id"], step, document))

    async def post_generator(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.GENERATOR_REGISTER)
        document = parse_json(await body(request, JSON_TYPES, max_json_bytes))
        return supplies_answer(await intake.supplies.register_generator(principal, document))

    async def post_generator_status(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.GENERATOR_STATUS)
        document = parse_json(await body(request, JSON_TYPES, max_json_bytes))
        return supplies_answer(await intake.supplies.report_generator(
            principal, request.match_info["generator_id"], document))

    async def post_at_home(request: web.Request) -> web.Response:
        principal = request.get(_PRINCIPAL)
        limit = max_json_bytes if principal is not None else min(max_json_bytes,
                                                                   MAX_PUBLIC_JSON_BYTES)
        document = parse_json(await body(request, JSON_TYPES, limit))
        return answer(await intake.submit_at_home(principal, document))

    async def post_welfare_check(request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        require(principal, Action.WELFARE_CHECK)
        document = parse_json(await body(request, JSON_TYPES, max_json_bytes))
        return answer(await intake.submit_welfare_check(principal, document))

    database_down = False

    async def measure_backlog() -> bool:
        """Read the outbox backlog into its gauge; False (and logged once) while the
        database does not answer: the reason goes to the log, never into a response."""
        nonlocal database_down
        try:
            metrics.outbox_backlog.set(await intake.store.backlog())
        except TRANSIENT as e:
            if not database_down:
                log.warning("health: PostgreSQL unreachable (%s: %s)", type(e).__name__, e)
            database_down = True
            return False
        if database_down:
            log.info("health: PostgreSQL answers again")
        database_down = False
        return True

    async def healthz(request: web.Request) -> web.Response:
        if await measure_backlog():
            return _json(200, Health(status="healthy").as_json())
        return _json(503, Health(status="unhealthy").as_json())

    async def prometheus(request: web.Request) -> web.Response:
        await measure_backlog()
        payload, content_type = metrics.render()
        return web.Response(body=payload, headers={"Content-Type": content_type})

    async def openapi(request: web.Request) -> web.Response:
        return _json(200, openapi_document(intake.region))

    # The size of what aiohttp itself would buffer is bounded too (we stream).
    app = web.Application(middlewares=[count, errors, authenticate],
                          client_max_size=max(max_json_bytes, max_cap_bytes, max_jma_bytes) + 1)
    app.router.add_post("/v1/reports", post_report)
    app.router.add_get("/v1/reports/{id}", get_report)
    app.router.add_post("/v1/shelters/{shelter_id}/status", post_shelter_status)
    app.router.add_post("/v1/shelters/{shelter_id}/households", post_check_in)
    app.router.add_get("/v1/shelters/{shelter_id}/households", get_households)
    app.router.add_post("/v1/shelters/{shelter_id}/households/{code}/checkout", post_check_out)
    app.router.add_post("/v1/shelters/{shelter_id}/households/{code}/transfer", post_transfer)
    app.router.add_post("/v1/hazards/observations", post_hazard)
    app.router.add_post("/v1/cap", post_cap)
    app.router.add_post("/v1/jma", post_jma)
    app.router.add_post("/v1/supplies/requests", post_supply_request)
    app.router.add_get("/v1/supplies/requests", get_supply_requests)
    app.router.add_post("/v1/supplies/requests/{request_id}/"
                        f"{{step:{'|'.join(s.value for s in Step)}}}", post_supply_step)
    app.router.add_post("/v1/generators", post_generator)
    app.router.add_post("/v1/generators/{generator_id}/status", post_generator_status)
    app.router.add_post(AT_HOME_PATH, post_at_home)
    app.router.add_post("/v1/people/welfare-checks", post_welfare_check)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/v1/openapi.json", openapi)
    return app
