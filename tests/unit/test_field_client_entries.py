"""The field client's outbox entries: which household each command is about, and its listing."""

from __future__ import annotations

from typing import Any

import pytest

from services.field_client.outbox import Entry

SHELTER = "e1310100006201"


def entry(kind: str, path: str, **body: Any) -> Entry:
    return Entry(id="c-1", kind=kind, path=path, body=body, created_at="2026-12-04T03:00:00Z")


@pytest.mark.parametrize(("made", "code", "summary"), [
    (entry("checkin", f"/v1/shelters/{SHELTER}/households", household_code="7K3M9QXD",
           size=3), "7K3M9QXD", f"{SHELTER} check-in 7K3M9QXD (3)"),
    (entry("checkout", f"/v1/shelters/{SHELTER}/households/7K3M9QXD/checkout"),
     "7K3M9QXD", f"{SHELTER} check-out 7K3M9QXD"),
    (entry("transfer", f"/v1/shelters/{SHELTER}/households/7K3M9QXD/transfer",
           to="e1310100005201"), "7K3M9QXD", f"{SHELTER} transfer 7K3M9QXD to e1310100005201"),
    (entry("shelter", f"/v1/shelters/{SHELTER}/status", action="open"), None,
     f"{SHELTER} open"),
    (entry("report", "/v1/reports", category="fire", severity=4), None, "fire severity 4"),
])
def test_entries_name_their_household(made: Entry, code: str | None, summary: str) -> None:
    """A household command names its code (so its commands go in order); others none."""
    assert made.household_code == code
    assert made.summary() == summary
