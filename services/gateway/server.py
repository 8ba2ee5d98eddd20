"""The websocket protocol: hello, snapshot or resume, deltas; HQ commands and field reports.

One JSON object per text frame, each with a ``type`` (docs/gateway-protocol.md).
A connection must open with ``hello`` (token, last position, area filter); the
server answers ``welcome`` and then a ``snapshot`` or the missed ``delta``
messages, followed by live deltas and periodic ``heartbeat`` messages. HQ may
send ``command`` (approve, reject, issue, lift: produced as
``evacuation.command`` with the operator taken from the token); field teams
may send ``report`` (forwarded to intake with their token, so validation,
idempotency and durability are intake's); shelter staff and HQ may send the
:data:`~services.gateway.staff.STAFF_REQUESTS` (households and supplies, forwarded
the same way through :class:`IntakeCalls`, the request mapped by
:func:`~services.gateway.staff.staff_call`). Every request
with an ``id`` gets an ``ack`` or an ``error`` with that id.

Hardening: frames over :data:`MAX_MESSAGE_BYTES` close the connection (1009,
by websockets); malformed JSON or unknown types get an ``error`` and the
connection stays, until :data:`GARBAGE_LIMIT` of them within
:data:`GARBAGE_WINDOW` seconds close it with 1008; browsers are admitted only
from allowed origins (clients without an ``Origin`` header are not browsers
and are admitted); a missing hello closes with 1008, a bad token with 4401, a
role that has no view (``sensor``) with 4403. Every connection, signed in or not, has
a token bucket of messages (``SONAE_GATEWAY_MESSAGE_RATE_PER_SECOND``,
``SONAE_GATEWAY_MESSAGE_BURST``): a message past it gets an ``error`` ``rate_limited``
and the connection is closed with 1008, since a client that floods is not following
the protocol and answering each message would cost what the limit saves. One address
may hold at most ``SONAE_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS`` connections at once;
one more gets an ``error`` ``too_many_connections`` and is closed with 1013 (try
again later) before its hello is read.

Tokens: a field or shelter_staff token carries the team's areas and a hello can
only narrow them (other areas close with 4403); a session closes with 4401 and
the reason ``token expired`` when its token's ``exp`` passes, and with ``token
revoked`` within seconds of ``sonae token revoke`` (:meth:`Gateway.revoked`,
called by the process's :class:`~services.common.revocation.DenyList`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import aiohttp
from aiokafka.errors import KafkaError
from pydantic import SecretStr, ValidationError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from infra.settings import Settings
from schemas.common import utc_now
from schemas.envelope import derive_id, new_event
from schemas.evacuation import EvacuationCommand
from schemas.events import problems_from
from schemas.topics import is_drill
from services.common.auth import AuthError, Principal, Role, verify_token
from services.common.bus import Publisher
from services.common.ratelimit import RateLimiter
from services.common.retry import sleep_until
from services.gateway.errors import InvalidPosition, Refused
from services.gateway.hub import CLIENT_QUEUE_SIZE, OVERLOAD, Client, Hub, Resume, encode
from services.gateway.positions import Position, decode_position
from services.gateway.staff import STAFF_REQUESTS, staff_call
from services.gateway.views import Audience, Viewer

log = logging.getLogger(__name__)

__all__ = [
    "GARBAGE_LIMIT",
    "GARBAGE_WINDOW",
    "HEARTBEAT_INTERVAL",
    "HELLO_TIMEOUT",
    "MAX_CONNECTIONS_PER_ADDRESS",
    "MAX_MESSAGE_BYTES",
    "MESSAGE_BURST",
    "MESSAGE_RATE",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "Gateway",
    "IntakeCalls",
    "IntakeReports",
    "ReportSink",
    "allowed_origins",
    "close_connection",
    "heartbeats",
]

MAX_MESSAGE_BYTES: Final = 64 * 1024
"""Largest frame a client may send (a report's body is under 8 KiB)."""
HELLO_TIMEOUT: Final = 10.0
"""Seconds a new connection has to say hello."""
READY_TIMEOUT: Final = 30.0
"""Seconds a hello waits for the gateway's start-up catch-up before a partial snapshot."""
CATCH_UP_TIMEOUT: Final = 5.0
"""Seconds to wait for this gateway to reach a client's position (it just started)."""
PING_INTERVAL: Final = 20.0
"""Websocket pings keep idle connections alive through proxies and find dead peers."""
PING_TIMEOUT: Final = 20.0
"""A peer that does not answer a ping within this is dropped."""
HEARTBEAT_INTERVAL: Final = 15.0
"""Seconds between ``heartbeat`` messages (browsers cannot see pings)."""
CLOSE_TIMEOUT: Final = 10.0
"""Seconds a closing handshake may take before the connection is aborted."""
GARBAGE_LIMIT: Final = 5
"""Bad messages tolerated within :data:`GARBAGE_WINDOW` before closing with 1008."""
GARBAGE_WINDOW: Final = 60.0
EXTRA_ORIGINS: Final[tuple[str, ...]] = ()
"""Browser origins admitted besides the dashboard's own (e.g. a reverse proxy's)."""

_DEFAULTS: Final = Settings.model_fields
MESSAGE_RATE: Final[float] = _DEFAULTS["gateway_message_rate_per_second"].default
"""Sustained messages per second a connection may send (a dashboard sends a few a minute)."""
MESSAGE_BURST: Final[int] = _DEFAULTS["gateway_message_burst"].default
"""Messages a connection may send at once (an HQ operator's quick series of commands)."""
MAX_CONNECTIONS_PER_ADDRESS: Final[int] = _DEFAULTS["gateway_max_connections_per_address"].default
"""Connections one client address may hold open at once."""

POLICY = 1008
UNAUTHORIZED = 4401
FORBIDDEN = 4403
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# Error codes that count as garbage: the client is not speaking the protocol.
_GARBAGE: Final = frozenset({"malformed", "unknown_type", "invalid_id", "already_hello"})
_COMMAND_FIELDS: Final = frozenset({"action", "recommendation_id", "order_id", "reason",
                                    "area_ids", "level", "hazard", "designated_shelter_ids"})


def allowed_origins(host: str, dashboard_port: int) -> list[Origin | None]:
    """The dashboard's origins (and :data:`EXTRA_ORIGINS`); ``None`` admits non-browsers."""
    hosts = {host, "127.0.0.1", "localhost"} if host in ("127.0.0.1", "localhost",
                                                         "0.0.0.0") else {host}
    origins: list[Origin | None] = [Origin(f"{scheme}://{h}:{dashboard_port}")
                                    for h in sorted(hosts) for scheme in ("http", "https")]
    origins.extend(Origin(o) for o in EXTRA_ORIGINS)
    origins.append(None)
    return origins


class ReportSink(Protocol):
    """Where field reports go: intake, with the reporter's own token."""

    async def submit(self, token: str, body: Any) -> tuple[int, Any]:
        """Submit a report body; return intake's HTTP status and JSON answer."""


class IntakeReports:
    """Forward reports to intake's HTTP API (its validation, idempotency and outbox)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def submit(self, token: str, body: Any) -> tuple[int, Any]:
        """POST /v1/reports as the reporter."""
        return await self.call(token, "POST", "/v1/reports", body)

    async def call(self, token: str, method: str, path: str,
                   body: Any = None) -> tuple[int, Any]:
        """``method path`` as the token's holder; intake's status and JSON answer."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        async with self._session.request(
                method, f"{self.base_url}{path}", json=body,
                headers={"Authorization": f"Bearer {token}"}) as response:
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = {"error": "unavailable", "message": f"intake answered {response.status}"}
            return response.status, answer

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class IntakeCalls(Protocol):
    """Intake's HTTP API, called with the sender's own token (households, supplies)."""

    async def call(self, token: str, method: str, path: str,
                   body: Any = None) -> tuple[int, Any]:
        """``method path`` (a JSON body unless None); intake's HTTP status and JSON answer."""


class _Session:
    """What the server knows about one connection after its hello."""

    def __init__(self, token: str | None, principal: Principal | None, viewer: Viewer,
                 messages: RateLimiter | None = None) -> None:
        self.token = token
        self.messages = messages
        """The connection's message bucket (kept from before the hello)."""
        self.principal = principal
        self.viewer = viewer
        self.garbage: deque[float] = deque()
        self.revoked = asyncio.Event()
        """Set when the token's id was put on the deny list."""


class Gateway:
    """The websocket side of the gateway: one :meth:`handler` per connection."""

    def __init__(self, hub: Hub, *, secret: str | SecretStr, namespace: str,
                 area_ids: Sequence[str], publisher: Publisher | None = None,
                 reports: ReportSink | None = None, intake: IntakeCalls | None = None,
                 queue_size: int = CLIENT_QUEUE_SIZE,
                 clock: Callable[[], datetime] = utc_now,
                 denylist: Container[str] = frozenset(),
                 max_token_lifetime: timedelta | None = None,
                 message_rate: float = MESSAGE_RATE, message_burst: int = MESSAGE_BURST,
                 max_per_address: int = MAX_CONNECTIONS_PER_ADDRESS) -> None:
        self.hub = hub
        self.message_rate = message_rate
        self.message_burst = message_burst
        self.max_per_address = max_per_address
        self._per_address: dict[str, int] = {}
        """Open connections by client address."""
        self.denylist = denylist
        self.max_token_lifetime = max_token_lifetime
        # Signed-in sessions by token id, so a revocation reaches their connections.
        self._by_token: dict[str, set[_Session]] = {}
        self.queue_size = queue_size
        self.secret = secret
        self.namespace = namespace
        self.area_ids = frozenset(area_ids)
        self.publisher = publisher
        self.reports = reports
        self.intake = intake
        self.clock = clock
        self.drill = is_drill(namespace)

    # --- connection lifecycle -----------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        """Serve one connection until it closes (at most so many per client address)."""
        address = _address(ws)
        held = self._per_address.get(address, 0)
        if held >= self.max_per_address:
            log.info("refused a connection from %s: %d open already", address, held)
            await self._error(ws, None, "too_many_connections",
                              f"{held} connections are open from your address, the most one "
                              "address may hold; close one or retry later")
            await close_connection(ws, OVERLOAD, "too many connections from your address")
            return
        self._per_address[address] = held + 1
        try:
            await self._serve(ws)
        finally:
            left = self._per_address[address] - 1
            if left:
                self._per_address[address] = left
            else:
                del self._per_address[address]

    def connections_from(self, address: str) -> int:
        """Connections open from ``address`` now."""
        return self._per_address.get(address, 0)

    async def _serve(self, ws: ServerConnection) -> None:
        messages = RateLimiter(self.message_burst, self.message_rate, max_keys=1)
        try:
            session, position = await asyncio.wait_for(self._hello(ws, messages),
                                                       HELLO_TIMEOUT)
        except TimeoutError:
            await self._error(ws, None, "no_hello", "say hello first")
            await close_connection(ws, POLICY, "no hello")
            return
        except Refused as e:
            await self._error(ws, None, e.code, e.message)
            await close_connection(ws, e.close or POLICY, _close_reason(e))
            return
        except ConnectionClosed:
            return
        await self._settle(position)
        client = Client(ws, session.viewer, queue_size=self.queue_size)
        attached = self.hub.attach(client, position, self._welcome(session))
        log.debug("client attached (%s, %s)", session.viewer.audience.value,
                  "snapshot" if attached.snapshot else f"resumed {attached.count}")
        jti = session.principal.token_id if session.principal is not None else None
        if jti is not None:
            self._by_token.setdefault(jti, set()).add(session)
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(client.write_loop())
                watchdog = tg.create_task(self._watch(ws, client))
                expiry = tg.create_task(self._token_ends(ws, session))
                try:
                    await self._read_loop(ws, session)
                finally:
                    writer.cancel()
                    watchdog.cancel()
                    expiry.cancel()
        finally:
            self.hub.detach(client)
            if jti is not None:
                sessions = self._by_token.get(jti, set())
                sessions.discard(session)
                if not sessions:
                    self._by_token.pop(jti, None)

    def revoked(self, token_ids: Iterable[str]) -> None:
        """Close the sessions of these (just revoked) tokens with 4401 "token revoked"."""
        for jti in token_ids:
            for session in self._by_token.get(jti, ()):
                session.revoked.set()

    async def _token_ends(self, ws: ServerConnection, session: _Session) -> None:
        # A session lasts as long as its token: at `exp` (or on revocation) it closes
        # with 4401, so a client knows to sign in again rather than just reconnect.
        if session.principal is None:
            return
        left = (session.principal.expires_at - self.clock()).total_seconds()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.revoked.wait(), max(left, 0.0))
        reason = "token revoked" if session.revoked.is_set() else "token expired"
        log.info("closing a %s session of %s: %s", session.principal.role.value,
                 session.principal.subject, reason)
        await self._error(ws, None, "unauthorized", f"{reason}; sign in again")
        await close_connection(ws, UNAUTHORIZED, reason)

    async def _settle(self, position: Position | None) -> None:
        # A fresh gateway first catches up with the log; a client resuming a position
        # another gateway gave it may also have to wait for this one to read that far.
        try:
            await asyncio.wait_for(self.hub.ready.wait(), READY_TIMEOUT)
        except TimeoutError:
            log.warning("not caught up after %.0fs; serving a partial picture", READY_TIMEOUT)
        if position is None:
            return
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while self.hub.check(position) is Resume.BEHIND:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return  # attach() sends a snapshot of what this gateway has
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.hub.advanced(), remaining)

    def _welcome(self, session: _Session) -> dict[str, Any]:
        viewer = session.viewer
        return {
            "type": "welcome",
            "role": viewer.audience.value,
            "subject": session.principal.subject if session.principal else None,
            "areas": sorted(viewer.areas) if viewer.areas is not None else None,
            "own_areas": sorted(viewer.own_areas) if viewer.own_areas is not None else None,
            "own_sites": sorted(viewer.own_sites) if viewer.own_sites is not None else None,
            "namespace": self.namespace,
            "drill": self.drill,
            "can_command": viewer.audience is Audience.HQ,
            "can_report": session.principal is not None and viewer.audience is not Audience.PUBLIC,
            "heartbeat_interval": HEARTBEAT_INTERVAL,
        }

    async def _watch(self, ws: ServerConnection, client: Client) -> None:
        await client.overflowed.wait()
        await close_connection(ws, OVERLOAD, "too far behind: reconnect with your last position")

    # --- hello ----------------------------------------------------------------------

    async def _hello(self, ws: ServerConnection, messages: RateLimiter
                     ) -> tuple[_Session, Position | None]:
        garbage = 0
        while True:
            raw = await ws.recv()
            try:
                self._spend(messages)
                document = _parse(raw)
                if document.get("type") != "hello":
                    raise Refused("hello_expected", "the first message must be a hello")
                session, position = self._session_from(document)
                session.messages = messages
                return session, position
            except Refused as e:
                if e.close is not None:
                    raise
                garbage += 1
                if garbage >= GARBAGE_LIMIT:
                    raise Refused(e.code, e.message, close=POLICY) from None
                await self._error(ws, None, e.code, e.message)

    def _session_from(self, hello: Mapping[str, Any]) -> tuple[_Session, Position | None]:
        unknown = set(hello) - {"type", "token", "position", "areas", "id"}
        if unknown:
            raise Refused("invalid", f"unknown hello fields: {', '.join(sorted(unknown))}",
                          close=POLICY)
        token = hello.get("token")
        if token is not None and (not isinstance(token, str) or len(token) > 8192):
            raise Refused("invalid", "token must be a string", close=POLICY)
        areas = self._areas(hello.get("areas"), "areas")
        principal = None
        if token:
            try:
                principal = verify_token(self.secret, token,
                                         max_lifetime=self.max_token_lifetime)
            except AuthError as e:
                raise Refused("unauthorized", str(e), close=UNAUTHORIZED) from None
            if principal.token_id in self.denylist:
                raise Refused("unauthorized", "the token has been revoked; sign in again",
                              close=UNAUTHORIZED)
        viewer = self._viewer(principal, areas)
        position = None
        if hello.get("position") is not None:
            try:
                position = decode_position(hello["position"])
            except InvalidPosition:
                position = None  # unreadable: the client simply gets a snapshot
        return _Session(token or None, principal, viewer), position

    def _areas(self, value: Any, name: str) -> frozenset[str] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
            raise Refused("invalid", f"{name} must be a list of area ids", close=POLICY)
        unknown = sorted(set(value) - self.area_ids)
        if unknown:
            raise Refused("invalid", f"unknown areas in {name}: {', '.join(unknown)}",
                          close=POLICY)
        return frozenset(value)

    def _viewer(self, principal: Principal | None, areas: frozenset[str] | None) -> Viewer:
        if principal is None or principal.role is Role.PUBLIC:
            return Viewer(Audience.PUBLIC, areas)
        if principal.role is Role.HQ:
            return Viewer(Audience.HQ, areas)
        if principal.role in (Role.FIELD, Role.SHELTER_STAFF):
            # The token names the team's areas (verify_token refuses a team token
            # without them); the hello may only narrow them, never widen them.
            claimed = self._areas(sorted(principal.areas or ()), "the token's areas")
            assert claimed is not None
            if areas is not None and not areas <= claimed:
                raise Refused("areas_not_permitted",
                              f"the token's areas are {', '.join(sorted(claimed))}; a hello "
                              f"may only narrow them, not add {', '.join(sorted(areas - claimed))}",
                              close=FORBIDDEN)
            if principal.role is Role.SHELTER_STAFF:
                return Viewer(Audience.SHELTER_STAFF, areas, claimed, principal.shelters)
            return Viewer(Audience.FIELD, areas, claimed)
        raise Refused("forbidden", f"role {principal.role.value!r} has no view here",
                      close=FORBIDDEN)

    # --- requests -------------------------------------------------------------------

    async def _read_loop(self, ws: ServerConnection, session: _Session) -> None:
        with contextlib.suppress(ConnectionClosed):  # any close ends the connection's work
            await self._requests(ws, session)

    def _spend(self, messages: RateLimiter | None) -> None:
        """One message of the connection's bucket; past it, refused with a close (1008)."""
        if messages is not None and messages.take("", time.monotonic()) > 0:
            raise Refused("rate_limited",
                          f"more than {self.message_burst} messages at once or "
                          f"{self.message_rate:g} per second; closing", close=POLICY)

    async def _requests(self, ws: ServerConnection, session: _Session) -> None:
        async for raw in ws:
            request_id = None
            try:
                self._spend(session.messages)
                document = _parse(raw)
                request_id = _request_id(document)
                kind = document.get("type")
                if kind == "ping":
                    await self._send(ws, {"type": "pong", "id": request_id})
                elif kind == "command":
                    await self._command(ws, session, document, request_id)
                elif kind == "report":
                    await self._report(ws, session, document, request_id)
                elif isinstance(kind, str) and kind in STAFF_REQUESTS:
                    await self._staff_request(ws, session, kind, document, request_id)
                elif kind == "hello":
                    raise Refused("already_hello", "hello was already said; reconnect to change")
                else:
                    raise Refused("unknown_type", f"unknown message type {kind!r}; expected "
                                  "ping, command, report or a staff request ("
                                  + ", ".join(sorted(STAFF_REQUESTS)) + ")")
            except Refused as e:
                await self._error(ws, request_id, e.code, e.message, e.errors)
                if e.close is not None:
                    await close_connection(ws, e.close, _close_reason(e))
                    return
                if e.code in _GARBAGE and self._too_much_garbage(session):
                    await close_connection(ws, POLICY, "too many bad messages")
                    return

    def _too_much_garbage(self, session: _Session) -> bool:
        now = time.monotonic()
        session.garbage.append(now)
        while session.garbage and session.garbage[0] < now - GARBAGE_WINDOW:
            session.garbage.popleft()
        return len(session.garbage) >= GARBAGE_LIMIT

    async def _command(self, ws: ServerConnection, session: _Session,
                       document: Mapping[str, Any], request_id: str | None) -> None:
        principal = session.principal
        if principal is None or principal.role is not Role.HQ:
            raise Refused("forbidden", "only HQ may send commands")
        if principal.expires_at <= self.clock():
            raise Refused("unauthorized", "your token has expired; sign in again")
        if request_id is None:
            raise Refused("invalid_id", "a command needs an id (used to deduplicate resends)")
        unknown = set(document) - _COMMAND_FIELDS - {"type", "id"}
        if unknown:
            raise Refused("invalid", f"unknown command fields: {', '.join(sorted(unknown))}",
                          errors=[{"field": f, "message": "not a command field"}
                                  for f in sorted(unknown)])
        payload = {k: v for k, v in document.items() if k in _COMMAND_FIELDS}
        payload["operator"] = principal.subject
        payload["operator_role"] = principal.role.value
        now = self.clock()
        try:
            event = new_event(EvacuationCommand, payload, occurred_at=now, recorded_at=now,
                              source="gateway", exercise=self.drill,
                              event_id=derive_id("gateway.command", principal.subject,
                                                 request_id))
        except ValidationError as e:
            problems = problems_from(e)
            raise Refused("invalid", "; ".join(f"{p.field}: {p.message}" for p in problems),
                          errors=[{"field": p.field.removeprefix("payload."),
                                   "message": p.message} for p in problems]) from None
        if self.publisher is None:
            raise Refused("unavailable", "commands are not enabled on this gateway")
        try:
            await self.publisher.publish(event)
        except KafkaError as e:
            log.warning("command %s not published: %s", event.event_id, e)
            raise Refused("unavailable", "the command could not be sent; retry with the "
                          "same id") from None
        log.info("command %s by %s: %s", event.event_id, principal.subject,
                 event.payload.action.value)
        await self._send(ws, {"type": "ack", "id": request_id, "event_id": str(event.event_id)})

    async def _report(self, ws: ServerConnection, session: _Session,
                      document: Mapping[str, Any], request_id: str | None) -> None:
        if session.principal is None or session.token is None or (
                session.viewer.audience is Audience.PUBLIC):
            raise Refused("forbidden", "sign in as a field team to send reports")
        if request_id is None:
            raise Refused("invalid_id", "a report needs an id")
        body = document.get("report")
        if not isinstance(body, dict):
            raise Refused("invalid", "report must be an object (the body of POST /v1/reports)",
                          errors=[{"field": "report", "message": "expected an object"}])
        if self.reports is None:
            raise Refused("unavailable", "reports are not enabled on this gateway")
        try:
            status, answer = await self.reports.submit(session.token, body)
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("intake unreachable for a report: %s", e)
            raise Refused("unavailable", "intake is unreachable; resend the same report "
                          "(same client_report_id) shortly") from None
        if status in (200, 202):
            await self._send(ws, {"type": "ack", "id": request_id, "status": status,
                                  "result": answer})
            return
        answer = answer if isinstance(answer, dict) else {}
        raise Refused(str(answer.get("error") or "rejected"),
                      str(answer.get("message") or f"intake answered {status}"),
                      errors=answer.get("errors"))

    async def _staff_request(self, ws: ServerConnection, session: _Session, kind: str,
                             document: Mapping[str, Any], request_id: str | None) -> None:
        principal = session.principal
        if principal is None or session.token is None \
                or principal.role not in (Role.HQ, Role.SHELTER_STAFF):
            raise Refused("forbidden", f"only shelter staff and HQ may send {kind}")
        if principal.expires_at <= self.clock():
            raise Refused("unauthorized", "your token has expired; sign in again")
        if request_id is None:
            raise Refused("invalid_id", f"a {kind} request needs an id")
        method, path, body = staff_call(kind, document)
        if self.intake is None:
            raise Refused("unavailable", f"{kind} is not enabled on this gateway")
        try:
            status, answer = await self.intake.call(session.token, method, path, body)
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("intake unreachable for %s: %s", kind, e)
            raise Refused("unavailable", "intake is unreachable; resend the same request "
                          "(same client_id) shortly") from None
        if 200 <= status < 300:
            await self._send(ws, {"type": "ack", "id": request_id, "status": status,
                                  "result": answer})
            return
        answer = answer if isinstance(answer, dict) else {}
        raise Refused(str(answer.get("error") or "rejected"),
                      str(answer.get("message") or f"intake answered {status}"),
                      errors=answer.get("errors"))

    # --- replies ------------------------------------------------------------------

    async def _send(self, ws: ServerConnection, message: Mapping[str, Any]) -> None:
        # Replies share the connection with the fan-out; they are rare and small, so
        # they go through websockets directly and may wait for the socket.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode(message), text=True)

    async def _error(self, ws: ServerConnection, request_id: str | None, code: str,
                     message: str, errors: Sequence[Mapping[str, Any]] | None = None) -> None:
        reply: dict[str, Any] = {"type": "error", "id": request_id, "code": code,
                                 "message": message}
        if errors:
            reply["errors"] = list(errors)
        await self._send(ws, reply)


def _close_reason(refused: Refused) -> str:
    # A close reason is at most 123 bytes; the error message before it says the details.
    if refused.code == "rate_limited":
        return "message rate exceeded"
    return refused.message[:120]


def _address(ws: ServerConnection) -> str:
    """The client's IP address (the peer of the TCP connection, a proxy's if behind one)."""
    peer = ws.remote_address
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


def _parse(raw: str | bytes) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raise Refused("malformed", "send JSON in text frames")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise Refused("malformed", "not valid JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("type"), str):
        raise Refused("malformed", "expected a JSON object with a string 'type'")
    return document


def _request_id(document: Mapping[str, Any]) -> str | None:
    value = document.get("id")
    if value is None:
        return None
    if not isinstance(value, str) or not _REQUEST_ID.fullmatch(value):
        raise Refused("invalid_id", "id must be 1-64 letters, digits and _.:- ")
    return value


async def close_connection(ws: ServerConnection, code: int, reason: str) -> None:
    """Close with ``code``; abort if the peer does not take the close frame in time."""
    try:
        await asyncio.wait_for(ws.close(code, reason), CLOSE_TIMEOUT)
    except TimeoutError:
        ws.transport.abort()


async def heartbeats(hub: Hub, stop: asyncio.Event,
                     interval: float = HEARTBEAT_INTERVAL) -> None:
    """Send the hub's heartbeat every ``interval`` seconds until ``stop``."""
    while not stop.is_set():
        await sleep_until(stop, interval)
        if not stop.is_set():
            hub.heartbeat()
