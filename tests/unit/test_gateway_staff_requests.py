"""Which intake request each staff websocket request stands for, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from services.gateway.errors import Refused
from services.gateway.staff import STAFF_REQUESTS, staff_call

BODY = {"client_id": "c-1"}


@pytest.mark.parametrize(("kind", "document", "expected"), [
    ("checkin", {"shelter_id": "S-1", "body": BODY}, ("POST", "/v1/shelters/S-1/households", BODY)),
    ("checkout", {"shelter_id": "S-1", "household_code": "7K3M9QXD", "body": BODY},
     ("POST", "/v1/shelters/S-1/households/7K3M9QXD/checkout", BODY)),
    ("transfer", {"shelter_id": "S-1", "household_code": "7K3M9QXD", "body": BODY},
     ("POST", "/v1/shelters/S-1/households/7K3M9QXD/transfer", BODY)),
    ("households", {"shelter_id": "S-1"}, ("GET", "/v1/shelters/S-1/households", None)),
    ("supply_request", {"body": BODY}, ("POST", "/v1/supplies/requests", BODY)),
    ("supply_step", {"request_id": "0b6f", "step": "receive", "body": BODY},
     ("POST", "/v1/supplies/requests/0b6f/receive", BODY)),
])
def test_each_request_maps_to_its_intake_endpoint(kind: str, document: dict[str, Any],
                                                  expected: tuple[str, str, Any]) -> None:
    """The method, path and body forwarded for each staff request."""
    assert kind in STAFF_REQUESTS
    assert staff_call(kind, document) == expected


@pytest.mark.parametrize(("kind", "document", "field"), [
    ("checkin", {"shelter_id": "../v1/cap", "body": BODY}, "shelter_id"),
    ("checkin", {"shelter_id": "S-1/x", "body": BODY}, "shelter_id"),
    ("checkin", {"shelter_id": "S-1", "body": [1]}, "body"),
    ("checkout", {"shelter_id": "S-1", "household_code": "a?b", "body": BODY},
     "household_code"),
    ("households", {"shelter_id": 7}, "shelter_id"),
    ("supply_step", {"request_id": "0b6f", "step": "delete", "body": BODY}, "step"),
    ("supply_step", {"request_id": "", "step": "cancel", "body": BODY}, "request_id"),
])
def test_bad_fields_are_refused_naming_the_field(kind: str, document: dict[str, Any],
                                                 field: str) -> None:
    """A path part that is no id, a body that is no object, an unknown step: invalid."""
    with pytest.raises(Refused) as caught:
        staff_call(kind, document)
    assert caught.value.code == "invalid"
    assert caught.value.errors is not None and caught.value.errors[0]["field"] == field
