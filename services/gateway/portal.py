"""The residents' portal over plain HTTP (aiohttp routes added to the dashboard app).

Routes:

- ``GET /v1/public/snapshot[?area=ID&area=ID…]`` — the public picture (up to
  three areas, or ward-wide), the same view the websocket gives the public;
- ``GET /v1/public/shelters`` — every site of the region pack (names, address,
  designated hazards), what the page keeps for offline use;
- ``GET /manifest.webmanifest``, ``/sw.js`` (the service worker, scope ``/``),
  ``/icons/{name}.png`` — what makes the page installable and offline.

Both documents carry a strong ETag (a hash of their bytes, equal on every
gateway for the same picture) and a short ``Cache-Control``, and a matching
``If-None-Match`` is answered 304 with no body, so that a reverse proxy or CDN
in front of the gateways can carry a ward-wide rush by revalidating. The
snapshot answers 503 (not cacheable) until the gateway has caught up with the
log, so no cache keeps a partial picture.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Final

from aiohttp import web

from schemas.region import Region
from services.gateway.cop import COP
from services.gateway.errors import BadPublicRequest
from services.gateway.public import (
    Document,
    PublicDocuments,
    etag_matches,
    public_areas,
    shelter_list,
)

__all__ = ["ICONS", "SNAPSHOT_MAX_AGE", "add_portal_routes"]

SNAPSHOT_MAX_AGE: Final = 5
"""Seconds a cache may serve a snapshot before revalidating: short, orders are urgent."""
SHELTERS_MAX_AGE: Final = 300
"""Seconds for the shelter list (region data: changes only with a new region pack)."""
ICONS: Final = ("icon-192.png", "icon-512.png", "icon-maskable-512.png")
_FILTERS_KEPT: Final = 256
_SNAPSHOT_CACHE: Final = f"public, max-age={SNAPSHOT_MAX_AGE}"
_SHELTERS_CACHE: Final = f"public, max-age={SHELTERS_MAX_AGE}"


def _static(*parts: str) -> bytes:
    node = resources.files("services.gateway").joinpath("static")
    for part in parts:
        node = node.joinpath(part)
    return node.read_bytes()


def _answer(request: web.Request, doc: Document, cache_control: str) -> web.Response:
    headers = {"ETag": doc.etag, "Cache-Control": cache_control}
    if etag_matches(request.headers.get("If-None-Match"), doc.etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=doc.body, content_type="application/json", headers=headers)


def add_portal_routes(app: web.Application, region: Region, *,
                      picture: Callable[[], COP | None]) -> None:
    """Add the portal's routes; ``picture`` gives the current COP (None: not caught up)."""
    area_ids = frozenset(d.id for d in region.districts)
    shelters = shelter_list(region)
    documents = PublicDocuments()
    worker = _static("sw.js")
    manifest = _static("manifest.webmanifest")
    icons = {name: _static("icons", name) for name in ICONS}

    # Query string → area filter: a rush repeats a handful of URLs, so parse each once.
    filters: dict[str, frozenset[str] | None] = {}

    async def snapshot(request: web.Request) -> web.Response:
        query = request.query_string
        try:
            areas = filters[query]
        except KeyError:
            try:
                areas = public_areas(request.query.getall("area", ()), area_ids)
            except BadPublicRequest as e:
                raise web.HTTPBadRequest(text=str(e)) from None
            if len(filters) >= _FILTERS_KEPT:
                filters.clear()
            filters[query] = areas
        cop = picture()
        if cop is None:
            raise web.HTTPServiceUnavailable(text="catching up with the log",
                                             headers={"Cache-Control": "no-store",
                                                      "Retry-After": "2"})
        return _answer(request, documents.snapshot(cop, areas), _SNAPSHOT_CACHE)

    async def shelter_data(request: web.Request) -> web.Response:
        return _answer(request, shelters, _SHELTERS_CACHE)

    async def service_worker(request: web.Request) -> web.Response:
        # no-cache: a new worker reaches installed pages at their next visit.
        return web.Response(body=worker, content_type="text/javascript", charset="utf-8",
                            headers={"Cache-Control": "no-cache",
                                     "Service-Worker-Allowed": "/"})

    async def manifest_data(request: web.Request) -> web.Response:
        return web.Response(body=manifest, content_type="application/manifest+json",
                            charset="utf-8", headers={"Cache-Control": "no-cache"})

    async def icon(request: web.Request) -> web.Response:
        found = icons.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return web.Response(body=found, content_type="image/png",
                            headers={"Cache-Control": "public, max-age=86400"})

    app.router.add_get("/v1/public/snapshot", snapshot)
    app.router.add_get("/v1/public/shelters", shelter_data)
    app.router.add_get("/sw.js", service_worker)
    app.router.add_get("/manifest.webmanifest", manifest_data)
    app.router.add_get("/icons/{name}", icon)
