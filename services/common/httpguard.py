"""An aiohttp site with a connection cap, and the runner options that cut off slow clients.

aiohttp bounds what a request may buffer but not how many connections are open nor,
by default, how long a client may take to send its headers: a slow-loris client that
opens many connections and trickles a header byte now and then holds them all. Two
parts close that:

- :func:`runner_options`: aiohttp's ``keepalive_timeout`` closes a connection that has
  not delivered a complete request's headers within that many seconds of opening (or
  of its previous response) — aiohttp arms it at the connection's start and again after
  each response, and closes the connection when it fires while no request is being
  handled. So one number is both the header timeout and the idle keep-alive timeout.
  The body has its own deadline, kept by the route that reads it; a body left unread
  after the response (a refusal, a timeout) is drained for at most ``linger`` seconds
  (aiohttp's ``lingering_time``, 10 s by default, so the client gets the answer before
  the close) and then the connection is closed.
- :class:`GuardedSite`: a TCP site that counts open connections and answers one over
  ``max_connections`` with a plain ``503`` (JSON body in the services' error shape,
  ``Retry-After: 1``, ``Connection: close``) before aiohttp sees it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Final

from aiohttp import web

log = logging.getLogger(__name__)

__all__ = ["HEADER_TIMEOUT", "LINGER", "GuardedSite", "busy_response", "runner_options"]


HEADER_TIMEOUT: Final = 20.0
"""The header timeout of the HTTP servers that have no setting for it (the gateway's
dashboard, the broadcaster's feed); aiohttp's own default is an hour."""
LINGER: Final = 2.0
"""Seconds an unread body is drained after the response before the connection closes."""


def runner_options(header_timeout: float | None = None,
                   linger: float = LINGER) -> dict[str, Any]:
    """Keyword arguments of ``web.AppRunner`` that close a connection whose request
    headers have not all arrived within ``header_timeout`` seconds (default
    :data:`HEADER_TIMEOUT`, read when called), and one whose unread body still trickles
    ``linger`` seconds after its answer."""
    timeout = HEADER_TIMEOUT if header_timeout is None else header_timeout
    return {"keepalive_timeout": timeout, "lingering_time": linger}


def busy_response(open_connections: int) -> bytes:
    """The raw ``503`` a connection over the cap receives (it carries no request yet)."""
    body = json.dumps({"error": "unavailable",
                       "message": f"the server has {open_connections} connections open, as "
                                  "many as it takes; retry shortly"}).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted while it is open."""

    def __init__(self, site: GuardedSite) -> None:
        self._site = site
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        site = self._site
        if site.open_connections >= site.max_connections:
            # Refused before aiohttp builds anything for it: the answer is fixed bytes.
            assert isinstance(transport, asyncio.Transport)
            site.refused += 1
            if site.refused == 1 or site.refused % 1000 == 0:
                log.warning("connection cap reached (%d open): refused %d connections so far",
                            site.open_connections, site.refused)
            transport.write(busy_response(site.open_connections))
            transport.close()
            return
        site.open_connections += 1
        self._inner = site.factory()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._site.open_connections -= 1
            inner, self._inner = self._inner, None
            inner.connection_lost(exc)


class GuardedSite(web.BaseSite):
    """Like ``web.TCPSite``, but at most ``max_connections`` connections are open at once."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 max_connections: int, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self._host = host
        self._port = port
        self.max_connections: Final = max_connections
        self.open_connections = 0
        self.refused = 0
        """Connections refused over the cap since the start."""
        self._listening: asyncio.Server | None = None

    @property
    def name(self) -> str:
        """The site's URL (as aiohttp's own sites name themselves)."""
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the one the OS chose for 0)."""
        if self._listening is not None and self._listening.sockets:
            return int(self._listening.sockets[0].getsockname()[1])
        return self._port

    def factory(self) -> asyncio.Protocol:
        """aiohttp's protocol for a new connection."""
        server = self._runner.server
        assert server is not None
        return server()

    async def start(self) -> None:
        """Listen; each connection goes through the cap, then to aiohttp."""
        await super().start()
        loop = asyncio.get_running_loop()
        self._listening = await loop.create_server(
            lambda: _Counted(self), self._host, self._port, backlog=self._backlog,
            reuse_address=True)
        self._server = self._listening
