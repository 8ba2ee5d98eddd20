"""The dashboard's HTTP side (aiohttp): the page, its static files, region data, health.

Routes: ``/`` (the page), ``/static/{app.js,portal.js,i18n.json,style.css}``,
``/region.json`` (district polygons and names, sites, gauges, the time zone: what the
map draws), ``/config.json`` (where the websocket is), ``/healthz``, the Web Push
routes ``/v1/push/…`` (:mod:`services.gateway.push`), the residents' at-home form
``POST /v1/public/at-home`` (:mod:`services.gateway.athome`, forwarded to intake), and the
residents' portal
routes of :mod:`services.gateway.portal` (public snapshot and shelter list over HTTP,
manifest, service worker, icons). The page is plain
HTML/CSS/JS with no build step; a strict Content-Security-Policy allows only its own scripts and
styles, so even a mistake that inserted text as HTML could not run a script.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Final

from aiohttp import web

from schemas.region import LANGUAGES, Region
from schemas.topics import is_drill
from services.gateway.athome import AtHomeForm
from services.gateway.cop import COP
from services.gateway.hub import Hub
from services.gateway.portal import add_portal_routes
from services.gateway.push import PushApi
from services.gateway.qr import add_qr_routes

__all__ = ["STATIC_FILES", "build_app", "region_document"]

STATIC_FILES: Final = {
    "app.js": "text/javascript",
    "portal.js": "text/javascript",
    "i18n.json": "application/json",
    "style.css": "text/css",
}
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; manifest-src 'self'; worker-src 'self'; "
        "base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def region_document(region: Region) -> dict[str, Any]:
    """What the page needs of the region pack, as JSON."""
    pack = region.pack
    return {
        "id": pack.id,
        "names": pack.names.model_dump(),
        "default_language": pack.default_language,
        "timezone": pack.timezone,
        "languages": list(LANGUAGES),
        "attribution": list(pack.attribution),
        "districts": [
            {"id": d.id, "names": d.names.model_dump(), "illustrative": d.illustrative,
             "geometry": d.polygon.model_dump(mode="json")}
            for d in pack.districts
        ],
        "sites": [
            {"id": s.id, "names": s.names.model_dump(), "lat": s.lat, "lon": s.lon,
             "district_id": s.district_id, "hazards": sorted(h.value for h in s.hazards),
             "capacity": s.capacity, "shelter": s.takes_people,
             "kinds": sorted(k.value for k in s.kinds), "accessible": s.accessible}
            for s in pack.sites
        ],
        "gauges": [
            {"id": g.id, "river_names": g.river_names.model_dump(),
             "station_names": g.station_names.model_dump(),
             "thresholds": dict(g.thresholds.levels()),
             "affected_district_ids": list(g.affected_district_ids)}
            for g in pack.gauges
        ],
    }


def _static(name: str) -> bytes:
    return resources.files("services.gateway").joinpath("static").joinpath(name).read_bytes()


def build_app(region: Region, *, gateway_port: int, namespace: str,
              hub: Hub | None = None, push: PushApi | None = None,
              athome: AtHomeForm | None = None) -> web.Application:
    """The dashboard application; files are read once, here."""
    page = _static("index.html")
    files = {name: (_static(name), kind) for name, kind in STATIC_FILES.items()}
    region_json = web.json_response(region_document(region)).body
    config = {"websocket_port": gateway_port, "namespace": namespace,
              "drill": is_drill(namespace)}

    @web.middleware
    async def secure(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        response = await handler(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def static(request: web.Request) -> web.Response:
        found = files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, kind = found
        return web.Response(body=body, content_type=kind, charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def region_data(request: web.Request) -> web.Response:
        return web.Response(body=region_json, content_type="application/json",
                            headers={"Cache-Control": "max-age=300"})

    async def config_data(request: web.Request) -> web.Response:
        return web.json_response(config)

    async def healthz(request: web.Request) -> web.Response:
        # Healthy once the picture caught up; the body says nothing else (it is public:
        # positions and client counts are not for anyone who asks).
        if hub is None or hub.ready.is_set():
            return web.json_response({"status": "healthy"})
        return web.json_response({"status": "unhealthy"}, status=503)

    app = web.Application(middlewares=[secure])
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/region.json", region_data)
    app.router.add_get("/config.json", config_data)
    app.router.add_get("/healthz", healthz)

    def picture() -> COP | None:  # none until caught up: a cache must not keep a partial one
        return hub.cop if hub is not None and hub.ready.is_set() else None

    add_portal_routes(app, region, picture=picture)
    add_qr_routes(app)  # /qr/household/{code}.svg: services/gateway/qr.py
    if push is not None:
        push.add_routes(app)  # /v1/push/…: services/gateway/push.py
    if athome is not None:
        athome.add_routes(app)  # /v1/public/at-home: services/gateway/athome.py
    return app
