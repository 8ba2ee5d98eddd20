"""``sonae token issue``, ``sonae report`` and ``sonae shelter-status``.

The field commands are built for a phone on a bad connection:

- a new input is validated locally, given an id, and appended to a local outbox
  file (JSON lines; ``$SONAE_FIELD_OUTBOX``, default ``~/.sonae/field-outbox.jsonl``)
  and fsynced *before* anything is sent, so a crash or a dead battery loses nothing;
- every pending entry (oldest first, the new one last) is then sent with the same
  id each time (a report's ``client_report_id``, a shelter update's
  ``Idempotency-Key``), retrying with backoff; intake answers 200 for an id it
  already has, so a reply lost on the way back never makes a second report;
- an entry leaves the pending list only when intake acknowledged it (200/202) or
  refused it for good (400/403/404/409/413/415/422, reported to the user); a 401
  (expired token) keeps it pending for a new token;
- ``sonae report --pending`` lists what is not yet acknowledged and ``--flush``
  retries it without adding anything.

Exit status: 0 everything sent was acknowledged, 1 something was refused for
good, 75 (EX_TEMPFAIL) something is still pending.

Nothing here connects or reads files at import time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.client import HTTPException
from pathlib import Path
from typing import Any, Final

import click
from pydantic import ValidationError

from schemas.reports import ReportCategory
from schemas.shelters import NeedLevel, PowerKind
from services.common.auth import Role, issue_token

__all__ = ["FieldOutbox", "report", "shelter_status", "token"]

EX_TEMPFAIL: Final = 75
DEFAULT_OUTBOX: Final = Path("~/.sonae/field-outbox.jsonl")
KEEP_DONE_FOR: Final = timedelta(days=7)
"""Acknowledged and refused entries stay in the file this long (for the record), then go."""
REQUEST_TIMEOUT: Final = 10.0
"""Seconds per HTTP attempt."""
MAX_BACKOFF: Final = 8.0
_TERMINAL: Final = frozenset({400, 403, 404, 409, 413, 415, 422})


# --- tokens --------------------------------------------------------------------------


def _parse_ttl(text: str) -> timedelta:
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if match is None or int(match.group(1)) <= 0:
        raise click.BadParameter("use a positive number with s, m, h or d, e.g. 30m, 12h, 7d")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=int(match.group(1)) * unit)


@click.group()
def token() -> None:
    """Bearer tokens for intake and the gateway (signed with SONAE_TOKEN_SECRET)."""


@token.command("issue")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True,
              help="field, shelter_staff, sensor, hq (intake) or public (gateway only).")
@click.option("--name", required=True,
              help="Who the token is for: a team, device group, feed or operator "
                   "(letters, digits, ._@:+-).")
@click.option("--ttl", default="12h", show_default=True,
              help="Lifetime, e.g. 30m, 12h, 7d.")
@click.option("--area", "areas", multiple=True, metavar="AREA",
              help="A field team's area (repeat for several): the gateway shows the team "
                   "these areas' reports and shelters. Checked against SONAE_REGION.")
def token_issue(role: str, name: str, ttl: str, areas: tuple[str, ...]) -> None:
    """Print a new token (only the token, so `export SONAE_TOKEN=$(sonae token issue ...)`)."""
    from infra.settings import SettingsError, load_settings
    from schemas.region import RegionPackError, load_region

    try:
        settings = load_settings()
    except SettingsError as e:
        raise click.ClickException(str(e)) from None
    if areas:
        try:
            known = {d.id for d in load_region(settings.region).districts}
        except RegionPackError as e:
            raise click.ClickException(f"cannot check --area against region pack "
                                       f"{settings.region!r} (SONAE_REGION): {e}") from None
        unknown = [a for a in areas if a not in known]
        if unknown:
            raise click.BadParameter(
                f"no area {', '.join(map(repr, unknown))} in region {settings.region!r}; "
                f"its areas are {', '.join(sorted(known))}", param_hint="'--area'")
    try:
        click.echo(issue_token(settings.token_secret, role, name, _parse_ttl(ttl),
                               areas=areas))
    except ValueError as e:
        raise click.ClickException(str(e)) from None


# --- the local outbox ---------------------------------------------------------------


@dataclass
class Entry:
    """One input the device must deliver."""

    id: str
    kind: str
    path: str
    body: dict[str, Any]
    created_at: str
    status: str = "pending"
    """pending, acknowledged or refused."""
    attempts: int = 0
    last_error: str | None = None
    answer: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    done_at: str | None = None

    def summary(self) -> str:
        """A one-line description for listings."""
        body = self.body
        if self.kind == "report":
            return f"{body.get('category')} severity {body.get('severity')}"
        return f"{self.path.split('/')[3]} {body.get('action')}"


class FieldOutbox:
    """The JSON-lines file of inputs, rewritten atomically under an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser()

    @classmethod
    def default(cls) -> FieldOutbox:
        """``$SONAE_FIELD_OUTBOX`` or ``~/.sonae/field-outbox.jsonl``."""
        return cls(Path(os.environ.get("SONAE_FIELD_OUTBOX") or DEFAULT_OUTBOX))

    @contextlib.contextmanager
    def locked(self) -> Iterator[list[Entry]]:
        """Hold the lock, yield the entries, and write them back (changed or not)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(self.path.suffix + ".lock"), "a") as lock:
            # Two commands at once (a retry loop and a new report) must not interleave.
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            yield entries
            self._write(entries)

    def entries(self) -> list[Entry]:
        """The entries as they are now (read under the lock)."""
        with self.locked() as entries:
            return list(entries)

    def _read(self) -> list[Entry]:
        if not self.path.exists():
            return []
        entries = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(Entry(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as e:
                raise click.ClickException(
                    f"{self.path}:{number} is not a valid outbox entry ({e}); fix or move the "
                    "file — it may hold unsent reports") from None
        return entries

    def _write(self, entries: list[Entry]) -> None:
        horizon = datetime.now(UTC) - KEEP_DONE_FOR
        kept = [e for e in entries
                if e.status == "pending" or e.done_at is None
                or datetime.fromisoformat(e.done_at) > horizon]
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for e in kept:
                f.write(json.dumps(e.__dict__, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        # Make the rename itself durable.
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


# --- delivery -----------------------------------------------------------------------


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
        for entry in pending:
            reply = _deliver_one(url, entry, bearer, attempts, timeout)
            now = datetime.now(UTC).isoformat()
            if reply.status in (200, 202):
                entry.status, entry.answer, entry.done_at = "acknowledged", reply.body, now
                entry.last_error = None
                acknowledged += 1
                again = " (intake already had it)" if reply.status == 200 else ""
                ident = reply.body.get("report_id") or reply.body.get("event_id", "")
                click.echo(f"acknowledged {entry.kind} {entry.id}{again} {ident}".rstrip())
            elif reply.status in _TERMINAL:
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


# --- shared options -----------------------------------------------------------------


def _default_intake() -> str:
    from infra.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError:
        return "http://127.0.0.1:8080"
    return settings.intake_base_url


def _common(f: Any) -> Any:
    f = click.option("--intake", "intake_url", envvar="SONAE_INTAKE_URL", default=None,
                     help="Intake base URL [SONAE_INTAKE_URL; default from SONAE_HOST and "
                          "SONAE_INTAKE_PORT].")(f)
    f = click.option("--token", "bearer", envvar="SONAE_TOKEN", default=None,
                     help="Bearer token [SONAE_TOKEN].")(f)
    f = click.option("--attempts", type=click.IntRange(1, 100), default=5, show_default=True,
                     help="Tries per entry before leaving it pending.")(f)
    f = click.option("--team", default=None,
                     help="Reporting team as shown to HQ [default: the token's name].")(f)
    f = click.option("--reporter-name", default=None,
                     help="Your name (personal data: HQ only).")(f)
    return f


def _reporter(team: str | None, name: str | None) -> dict[str, str] | None:
    if team is None and name is None:
        return None
    if team is None:
        raise click.BadParameter("--reporter-name needs --team too", param_hint="--team")
    return {"team": team, **({"name": name} if name else {})}


def _queue_and_send(entry: Entry | None, intake_url: str | None, bearer: str | None,
                    attempts: int) -> None:
    outbox = FieldOutbox.default()
    if entry is not None:
        with outbox.locked() as entries:
            entries.append(entry)
        click.echo(f"queued {entry.kind} {entry.id}")
    if not bearer:
        raise click.ClickException("no token: pass --token or set SONAE_TOKEN (the input is "
                                   "kept in the outbox; send it later with --flush)")
    _, refused, still = deliver(outbox, intake_url or _default_intake(), bearer,
                                attempts=attempts)
    if still:
        click.echo(f"{still} input(s) still pending in {outbox.path}; "
                   "retry with `sonae report --flush`", err=True)
        raise SystemExit(EX_TEMPFAIL)
    if refused:
        raise SystemExit(1)


def _validate_locally(model: Any, body: dict[str, Any]) -> None:
    # Catch a typo on the device, before anything is queued, with the same model
    # intake uses (the reporter is filled in by intake when absent).
    try:
        model.model_validate(body)
    except ValidationError as e:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}"
                 for err in e.errors()]
        raise click.UsageError("the input is invalid:\n" + "\n".join(lines)) from None


def _now() -> str:
    return datetime.now(UTC).isoformat()


# --- sonae report --------------------------------------------------------------------


@click.command("report")
@click.option("--category", type=click.Choice([c.value for c in ReportCategory]))
@click.option("--severity", type=click.IntRange(1, 5), help="1 minor .. 5 life-threatening.")
@click.option("--lat", type=float, help="Latitude (WGS 84).")
@click.option("--lon", type=float, help="Longitude (WGS 84).")
@click.option("--area", "area_id", default=None, help="Area (district) id, if known.")
@click.option("--text", "description", default="", help="What you see.")
@click.option("--injured", type=click.IntRange(0), default=0)
@click.option("--dead", type=click.IntRange(0), default=0)
@click.option("--missing", type=click.IntRange(0), default=0)
@click.option("--trapped", type=click.IntRange(0), default=0)
@click.option("--pending", is_flag=True, help="List inputs not yet acknowledged, and exit.")
@click.option("--flush", is_flag=True, help="Retry pending inputs without adding one.")
@_common
def report(category: str | None, severity: int | None, lat: float | None, lon: float | None,
           area_id: str | None, description: str, injured: int, dead: int, missing: int,
           trapped: int, pending: bool, flush: bool, intake_url: str | None,
           bearer: str | None, attempts: int, team: str | None,
           reporter_name: str | None) -> None:
    """Send a damage report; it is kept locally until intake acknowledges it."""
    if pending:
        _list_pending()
        return
    if flush:
        _queue_and_send(None, intake_url, bearer, attempts)
        return
    if category is None or severity is None:
        raise click.UsageError("--category and --severity are required (or use --pending "
                               "/ --flush)")
    if (lat is None) != (lon is None):
        raise click.UsageError("give both --lat and --lon, or neither")
    entry_id = str(uuid.uuid4())
    body: dict[str, Any] = {"client_report_id": entry_id, "category": category,
                            "severity": severity, "description": description,
                            "occurred_at": _now()}
    if lat is not None:
        body["location"] = {"lat": lat, "lon": lon}
    if area_id:
        body["area_id"] = area_id
    if injured or dead or missing or trapped:
        body["casualties"] = {"injured": injured, "dead": dead, "missing": missing,
                              "trapped": trapped}
    reporter = _reporter(team, reporter_name)
    if reporter:
        body["reporter"] = reporter
    from schemas.intake import ReportRequest

    _validate_locally(ReportRequest, {"reporter": {"team": "local-check"}, **body})
    entry = Entry(id=entry_id, kind="report", path="/v1/reports", body=body,
                  created_at=body["occurred_at"])
    _queue_and_send(entry, intake_url, bearer, attempts)


def _list_pending() -> None:
    from rich.console import Console
    from rich.table import Table

    outbox = FieldOutbox.default()
    pending = [e for e in outbox.entries() if e.status == "pending"]
    if not pending:
        click.echo("nothing pending")
        return
    table = Table("id", "kind", "what", "created", "attempts", "last error")
    for e in pending:
        table.add_row(e.id, e.kind, e.summary(), e.created_at[:19], str(e.attempts),
                      e.last_error or "")
    Console(width=200).print(table)


# --- sonae shelter-status -------------------------------------------------------------


@click.command("shelter-status")
@click.argument("shelter_id")
@click.argument("action", type=click.Choice(["open", "close", "occupancy", "needs"]))
@click.option("--stage", default=None,
              help="open: opening|open; close: closing|closed.")
@click.option("--capacity", type=click.IntRange(0), default=None)
@click.option("--occupancy", "occupancy", type=click.IntRange(0), default=None,
              help="People present (action occupancy).")
@click.option("--water", type=click.Choice([n.value for n in NeedLevel]), default=None)
@click.option("--food", type=click.Choice([n.value for n in NeedLevel]), default=None)
@click.option("--medical", type=click.Choice([n.value for n in NeedLevel]), default=None)
@click.option("--sanitation", type=click.Choice([n.value for n in NeedLevel]), default=None)
@click.option("--power", type=click.Choice([p.value for p in PowerKind]), default=None)
@click.option("--fuel-hours", type=float, default=None, help="Generator fuel left (hours).")
@click.option("--note", default=None, help="Remark (open, needs) or reason (close).")
@_common
def shelter_status(shelter_id: str, action: str, stage: str | None, capacity: int | None,
                   occupancy: int | None, water: str | None, food: str | None,
                   medical: str | None, sanitation: str | None, power: str | None,
                   fuel_hours: float | None, note: str | None, intake_url: str | None,
                   bearer: str | None, attempts: int, team: str | None,
                   reporter_name: str | None) -> None:
    """Send a shelter's opening, closing, head count or needs (kept until acknowledged)."""
    body: dict[str, Any] = {"action": action, "occurred_at": _now()}
    if stage is not None:
        body["stage"] = stage
    if capacity is not None:
        body["capacity"] = capacity
    if occupancy is not None:
        body["occupancy"] = occupancy
    needs = {k: v for k, v in (("water", water), ("food", food), ("medical", medical),
                               ("sanitation", sanitation)) if v is not None}
    if needs:
        body["needs"] = needs
    if power is not None:
        body["power"] = {"kind": power, **({"fuel_hours_left": fuel_hours}
                                           if fuel_hours is not None else {})}
    if note:
        body["reason" if action == "close" else "note"] = note
    reporter = _reporter(team, reporter_name)
    if reporter:
        body["reported_by"] = reporter
    from schemas.intake import ShelterStatusRequest

    _validate_locally(ShelterStatusRequest, {"shelter_id": "local-check",
                                             "reported_by": {"team": "local-check"}, **body})
    entry_id = str(uuid.uuid4())
    entry = Entry(id=entry_id, kind="shelter", path=f"/v1/shelters/{shelter_id}/status",
                  body=body, created_at=body["occurred_at"],
                  headers={"Idempotency-Key": entry_id})
    _queue_and_send(entry, intake_url, bearer, attempts)
