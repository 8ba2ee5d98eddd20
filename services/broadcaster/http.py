"""The broadcaster's HTTP side: the CAP feed that aggregators poll, health and metrics.

- ``GET /cap/alerts.atom``: an Atom 1.0 index of the current alerts (see
  :mod:`services.broadcaster.feed`), each entry linking its CAP document;
- ``GET /cap/alerts/<identifier>.xml``: one CAP 1.2 document, ``application/cap+xml``;
  every document stays here for good, also after it is superseded or cancelled;
- ``GET /healthz``: ``{"status": "healthy"}`` (200) when the database answers, else
  ``{"status": "unhealthy"}`` (503); the reason is logged (once per outage), never
  returned;
- ``GET /metrics``: Prometheus metrics.

Links are absolute: ``SONAE_CAP_BASE_URL`` when set (behind a proxy), else the
request's own scheme and host. The Atom document is built with lxml.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

import asyncpg
from aiohttp import web
from lxml import etree
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.common import utc_now
from services.broadcaster.cap import CAP_CONTENT_TYPE
from services.broadcaster.feed import CapFeedStore, FeedEntry

log = logging.getLogger(__name__)

__all__ = ["ATOM_NS", "FeedInfo", "make_app", "render_atom"]

ATOM_NS: Final = "http://www.w3.org/2005/Atom"
_A = f"{{{ATOM_NS}}}"
_IDENTIFIER = r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}"


class FeedInfo:
    """What the Atom index says about itself."""

    def __init__(self, *, feed_id: UUID, title: str, author: str,
                 base_url: str | None = None) -> None:
        self.feed_id = feed_id
        self.title = title
        self.author = author
        self.base_url = base_url.rstrip("/") if base_url else None


def _sub(parent: Any, tag: str, text: str | None = None, **attrs: str) -> Any:
    element = etree.SubElement(parent, _A + tag, attrs)
    if text is not None:
        element.text = text
    return element


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def render_atom(info: FeedInfo, entries: list[FeedEntry], base: str, now: datetime,
                namespace: str) -> bytes:
    """The Atom index document of ``entries`` (newest first)."""
    feed = etree.Element(_A + "feed", nsmap={None: ATOM_NS})
    _sub(feed, "id", f"urn:uuid:{info.feed_id}")
    _sub(feed, "title", info.title)
    updated = max((e.published_at for e in entries), default=now)
    _sub(feed, "updated", _rfc3339(updated))
    author = _sub(feed, "author")
    _sub(author, "name", info.author)
    _sub(feed, "link", rel="self", type="application/atom+xml", href=f"{base}/cap/alerts.atom")
    for entry in entries:
        item = _sub(feed, "entry")
        _sub(item, "id", f"urn:sonae:cap:{namespace or 'live'}:{entry.identifier}")
        _sub(item, "title", entry.title)
        _sub(item, "updated", _rfc3339(entry.published_at))
        _sub(item, "published", _rfc3339(entry.sent))
        _sub(item, "link", rel="alternate", type=CAP_CONTENT_TYPE,
             href=f"{base}/cap/alerts/{entry.identifier}.xml")
        _sub(item, "summary", f"{entry.status} {entry.msg_type}")
        _sub(item, "category", term=entry.status)
    data: bytes = etree.tostring(feed, xml_declaration=True, encoding="UTF-8",
                                 pretty_print=True)
    return data


def make_app(feed: CapFeedStore, pool: asyncpg.Pool, namespace: str, info: FeedInfo, *,
             clock: Callable[[], datetime] = utc_now) -> web.Application:
    """The aiohttp application of the feed."""

    def base_of(request: web.Request) -> str:
        return info.base_url or f"{request.scheme}://{request.host}"

    async def atom(request: web.Request) -> web.Response:
        now = clock()
        entries = await feed.current(namespace, now)
        body = render_atom(info, entries, base_of(request), now, namespace)
        return web.Response(body=body, content_type="application/atom+xml", charset="utf-8",
                            headers={"Cache-Control": "max-age=30"})

    async def alert(request: web.Request) -> web.Response:
        identifier = request.match_info["identifier"]
        xml = await feed.document(namespace, identifier)
        if xml is None:
            raise web.HTTPNotFound(text=f"no CAP alert {identifier!r}\n")
        return web.Response(body=bytes(xml), content_type=CAP_CONTENT_TYPE, charset="utf-8",
                            headers={"Cache-Control": "max-age=300"})

    database_down = False

    async def healthz(_: web.Request) -> web.Response:
        nonlocal database_down
        try:
            async with pool.acquire() as conn:
                await conn.fetchval("select 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            if not database_down:
                log.warning("health: PostgreSQL unreachable (%s: %s)", type(e).__name__, e)
            database_down = True
            return web.json_response({"status": "unhealthy"}, status=503)
        if database_down:
            log.info("health: PostgreSQL answers again")
        database_down = False
        return web.json_response({"status": "healthy"})

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/cap/alerts.atom", atom)
    app.router.add_get(f"/cap/alerts/{{identifier:{_IDENTIFIER}}}.xml", alert)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
