"""The household code's QR code: valid SVG of the code alone, 404 for anything else."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from lxml import etree

from services.gateway.qr import (
    QR_MAX_AGE,
    add_qr_routes,
    household_code_or_none,
    household_qr_svg,
)

SVG = "{http://www.w3.org/2000/svg}"


async def _get(path: str) -> web.StreamResponse:
    app = web.Application()
    add_qr_routes(app)
    request = make_mocked_request("GET", path, app=app)
    match = await app.router.resolve(request)
    request._match_info = match  # what aiohttp's handler does before calling the route
    try:
        return await match.handler(request)
    except web.HTTPException as e:
        return e


def test_codes_are_read_as_a_person_types_them() -> None:
    """Lower case, O for 0 and I or L for 1 are read; anything else is no code."""
    assert household_code_or_none("7k3m9qxd") == "7K3M9QXD"
    assert household_code_or_none("7K3M9QXO") == "7K3M9QX0"
    for bad in ("", "7K3M9QX", "7K3M9QXDD", "7K3M9QXU", "../etc/pa", "7K3M9QX!", "x" * 500):
        assert household_code_or_none(bad) is None, bad


def test_the_svg_is_a_qr_of_the_code() -> None:
    """A well-formed SVG whose dark modules match the QR matrix of the code alone."""
    import segno

    svg = household_qr_svg("7K3M9QXD")
    root = etree.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    matrix = segno.make("7K3M9QXD", error="m", micro=False).matrix
    side = len(matrix)
    assert int(root.get("width")) == int(root.get("height")) == (side + 8) * 8
    assert b"7K3M9QXD" in svg  # the title; nothing else is in it
    assert len(root.findall(f"{SVG}path")) == 1


async def test_the_route_serves_svg_cached_for_long() -> None:
    """GET /qr/household/{code}.svg: image/svg+xml, public, a long max-age."""
    response = await _get("/qr/household/7k3m9qxd.svg")
    assert isinstance(response, web.Response)
    assert response.status == 200
    assert response.content_type == "image/svg+xml"
    assert response.headers["Cache-Control"].startswith(f"public, max-age={QR_MAX_AGE}")
    assert response.body == household_qr_svg("7K3M9QXD")


@pytest.mark.parametrize("path", ["/qr/household/7K3M9QXU.svg", "/qr/household/abc.svg",
                                  "/qr/household/7K3M9QXD.png", "/qr/household/.svg"])
async def test_anything_but_a_code_is_404(path: str) -> None:
    """A path that is no household code is 404, nothing encoded."""
    response = await _get(path)
    assert response.status == 404
    assert response.content_type != "image/svg+xml"
