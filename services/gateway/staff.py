"""Shelter staff's websocket requests: which intake request each one stands for (pure).

``checkin``, ``checkout``, ``transfer``, ``households``, ``supply_request`` and
``supply_step`` (docs/gateway-protocol.md) are forwarded by the server to intake's
HTTP API with the sender's own token; :func:`staff_call` gives the method, path and
body, or :class:`~services.gateway.errors.Refused` ``invalid`` naming the field when a
path part is no id (so a request can never reach another endpoint of intake), the body
is no object, or the step is unknown. Who may do what is intake's to decide.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from services.gateway.errors import Refused

__all__ = ["STAFF_REQUESTS", "SUPPLY_STEPS", "staff_call"]

STAFF_REQUESTS: Final = frozenset({"checkin", "checkout", "transfer", "households",
                                   "supply_request", "supply_step"})
"""Requests shelter staff (and HQ) send, each forwarded to intake with their own token."""

SUPPLY_STEPS: Final = frozenset({"assign", "dispatch", "receive", "cancel"})
"""A ``supply_step``'s ``step`` (intake decides who may take which)."""

_PATH_PART: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _part(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not _PATH_PART.fullmatch(value):
        raise Refused("invalid", f"{name} must be an id (letters, digits, '-', '_', '.')",
                      errors=[{"field": name, "message": "expected an id"}])
    return value


def _body(document: Mapping[str, Any]) -> dict[str, Any]:
    body = document.get("body")
    if not isinstance(body, dict):
        raise Refused("invalid", "body must be an object (the body of intake's request)",
                      errors=[{"field": "body", "message": "expected an object"}])
    return body


def staff_call(kind: str, document: Mapping[str, Any]) -> tuple[str, str, Any]:
    """The intake request (method, path, body) a staff request stands for; pure."""
    if kind == "supply_request":
        return "POST", "/v1/supplies/requests", _body(document)
    if kind == "supply_step":
        step = document.get("step")
        if step not in SUPPLY_STEPS:
            raise Refused("invalid", "step must be one of " + ", ".join(sorted(SUPPLY_STEPS)),
                          errors=[{"field": "step", "message": "not a step"}])
        return ("POST", f"/v1/supplies/requests/{_part(document, 'request_id')}/{step}",
                _body(document))
    households = f"/v1/shelters/{_part(document, 'shelter_id')}/households"
    if kind == "households":
        return "GET", households, None
    if kind == "checkin":
        return "POST", households, _body(document)
    code = _part(document, "household_code")
    if kind == "checkout":
        return "POST", f"{households}/{code}/checkout", _body(document)
    if kind == "transfer":
        return "POST", f"{households}/{code}/transfer", _body(document)
    raise ValueError(f"not a staff request: {kind!r}")
