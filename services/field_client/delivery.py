"""Delivering the outbox to intake over HTTP, the same id every time, until it is answered.

Every pending entry (oldest first) is sent with its id (a report's
``client_report_id``, a shelter update's ``Idempotency-Key``, a household
command's ``client_id``); a transport
error, 429 or 5xx is retried with backoff (``Retry-After`` when given); intake
answers 200 for an id it already has, so a reply lost on the way back never
makes a second report. An entry leaves the pending list only when intake
acknowledged it (:data:`ACKNOWLEDGED`) or refused it for good (:data:`TERMINAL`); a 401
(expired token) keeps it pending for a new token and stops the round. A household's
commands go in the order they were made: while one is still pending, the later ones
for the same household code wait for the next round (a check-out that overtook its
check-in would be refused for good).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPException
from typing import Any, Final

import click

from services.field_client.outbox import Entry, FieldOutbox

__all__ = ["ACKNOWLEDGED", "MAX_BACKOFF", "REQUEST_TIMEOUT", "TERMINAL", "Reply", "deliver"]

REQUEST_TIMEOUT: Final = 10.0
"""Seconds per HTTP attempt."""
MAX_BACKOFF: Final = 8.0
ACKNOWLEDGED: Final = frozenset({200, 201, 202})
"""Statuses that acknowledge an entry (201: a household checked in; 200: a resend)."""
TERMINAL: Final = frozenset({400, 403, 404, 409, 413, 415, 422})
"""Statuses that refuse an entry for good (resending the same body cannot succeed)."""


@dataclass(frozen=True)
class Reply:
    """What one attempt got: an HTTP status and body, or a transport error."""

    status: int | None
    body: dict[str, Any]
    retry_after: float | None = None
    error: str | None = None


def _send(url: str, entry: Entry, bearer: str, timeout: float) -> Reply:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bearer}",
               **(entry.headers or {})}
    request = urllib.request.Request(
        url.rstrip("/") + entry.path, method="POST", headers=headers,
        data=json.dumps(entry.body, ensure_ascii=False).encode("utf-8"))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, _json_body(response.read()))
    except urllib.error.HTTPError as e:
        retry = e.headers.get("Retry-After") if e.headers else None
        return Reply(e.code, _json_body(e.read()),
                     float(retry) if retry and retry.isdigit() else None)
    except (TimeoutError, urllib.error.URLError, HTTPException, OSError) as e:
        reason = getattr(e, "reason", e)
        return Reply(None, {}, error=f"{type(e).__name__}: {reason}")


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def deliver(outbox: FieldOutbox, url: str, bearer: str, *, attempts: int,
            timeout: float = REQUEST_TIMEOUT) -> tuple[int, int, int]:
    """Send every pending entry; return (acknowledged, refused, still pending)."""
    acknowledged = refused = 0
    with outbox.locked() as entries:
        pending = [e for e in entries if e.status == "pending"]
        waiting: set[str] = set()  # households with an earlier command still pending
        for entry in pending:
            code = entry.household_code
            if code is not None and code in waiting:
                # A check-out sent before its check-in arrived would be refused for good.
                click.echo(f"not sent yet {entry.kind} {entry.id}: an earlier command for "
                           f"household {code} is still pending", err=True)
                continue
            reply = _deliver_one(url, entry, bearer, attempts, timeout)
            now = datetime.now(UTC).isoformat()
            if reply.status in ACKNOWLEDGED:
                entry.status, entry.answer, entry.done_at = "acknowledged", reply.body, now
                entry.last_error = None
                acknowledged += 1
                again = " (intake already had it)" if reply.status == 200 else ""
                ident = (reply.body.get("report_id") or reply.body.get("household_code")
                         or reply.body.get("event_id", ""))
                click.echo(f"acknowledged {entry.kind} {entry.id}{again} {ident}".rstrip())
            elif reply.status in TERMINAL:
                entry.status, entry.answer, entry.done_at = "refused", reply.body, now
                entry.last_error = f"{reply.status}: {reply.body.get('message', '')}"
                refused += 1
                click.echo(f"refused {entry.kind} {entry.id}: {entry.last_error}", err=True)
                for item in reply.body.get("errors", ()):
                    click.echo(f"  {item.get('pointer') or '(body)'}: {item.get('message')}",
                               err=True)
            else:
                entry.last_error = reply.error or f"{reply.status}: " \
                                                  f"{reply.body.get('message', '')}"
                click.echo(f"not delivered yet {entry.kind} {entry.id}: {entry.last_error}; "
                           "kept in the outbox", err=True)
                if code is not None:
                    waiting.add(code)
                if reply.status == 401:
                    break  # the token is at fault: every other entry would fail the same way
    still = sum(1 for e in entries if e.status == "pending")
    return acknowledged, refused, still


def _deliver_one(url: str, entry: Entry, bearer: str, attempts: int, timeout: float) -> Reply:
    delay = 0.5
    reply = Reply(None, {}, error="not attempted")
    for attempt in range(1, attempts + 1):
        entry.attempts += 1
        reply = _send(url, entry, bearer, timeout)
        transient = reply.status is None or reply.status == 429 or reply.status >= 500
        if not transient or attempt == attempts:
            return reply
        time.sleep(min(reply.retry_after or delay, MAX_BACKOFF))
        delay = min(delay * 2, MAX_BACKOFF)
    return reply
