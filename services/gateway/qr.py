"""The household code as a QR code: ``GET /qr/household/{code}.svg`` (docs/people.md).

The image holds the code and nothing else (no name, no shelter), so it is not personal
and a code's QR never changes: it is served ``public`` with a long ``max-age``. A path
that is no household code (:data:`schemas.people.HouseholdCode`, read as a person types
it like intake does) is 404, before anything is encoded.
"""

from __future__ import annotations

import io
from typing import Final

import segno
from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from schemas.intake import read_household_code
from schemas.people import HouseholdCode

__all__ = ["QR_MAX_AGE", "add_qr_routes", "household_code_or_none", "household_qr_svg"]

QR_MAX_AGE: Final = 365 * 24 * 3600
"""Seconds a code's QR may be cached (it never changes)."""

_CODE: Final = TypeAdapter(HouseholdCode)


def household_code_or_none(text: str) -> str | None:
    """``text`` as a canonical household code, or None when it is none."""
    if len(text) > 20:
        return None
    try:
        return _CODE.validate_python(read_household_code(text))
    except ValidationError:
        return None


def household_qr_svg(code: str) -> bytes:
    """The SVG of ``code``'s QR code (error correction M, a quiet zone of 4 modules)."""
    buffer = io.BytesIO()
    segno.make(code, error="m", micro=False).save(
        buffer, kind="svg", scale=8, border=4, xmldecl=False, title=f"household {code}")
    return buffer.getvalue()


def add_qr_routes(app: web.Application) -> None:
    """Add ``GET /qr/household/{code}.svg``."""

    async def household(request: web.Request) -> web.Response:
        code = household_code_or_none(request.match_info["code"])
        if code is None:
            raise web.HTTPNotFound(text="not a household code (eight characters of 0-9 and "
                                        "A-Z without I, L, O, U)")
        return web.Response(body=household_qr_svg(code), content_type="image/svg+xml",
                            headers={"Cache-Control": f"public, max-age={QR_MAX_AGE}, "
                                                      "immutable"})

    app.router.add_get("/qr/household/{code}.svg", household)
