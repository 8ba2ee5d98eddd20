"""``sonae report``, ``sonae shelter-status``, ``sonae checkin`` / ``checkout`` /
``transfer`` and ``sonae at-home``: field commands for a phone on a bad connection.

- a new input is validated locally (with intake's own request models,
  :mod:`schemas.intake`), given an id, and appended to the local outbox
  (:mod:`services.field_client.outbox`; ``SONAE_FIELD_OUTBOX``, default
  ``~/.sonae/field-outbox.jsonl``) *before* anything is sent, so a crash or a
  dead battery loses nothing;
- every pending entry (oldest first, the new one last) is then sent with the same
  id each time (:mod:`services.field_client.delivery`), retrying with backoff;
  intake answers 200 for an id it already has, so a reply lost on the way back
  never makes a second report;
- an entry leaves the pending list only when intake acknowledged it (200/202) or
  refused it for good (400/403/404/409/413/415/422, reported to the user); a 401
  (expired token) keeps it pending for a new token;
- ``sonae report --pending`` lists what is not yet acknowledged and ``--flush``
  retries it without adding anything (every kind of input: they share the outbox).

Households (docs/people.md): ``sonae checkin`` chooses the household code on the
device (:func:`~schemas.people.household_code_from` of a random id) and prints it
before anything is sent, so staff can write it on the household's card while the
connection is down; the check-in is delivered later under the same ``client_id``
and code (printed with its QR code drawn in the terminal under it). ``sonae checkout``
and ``sonae transfer`` name a code as it was printed (read as typed: lower case, O for
0, I or L for 1).

Exit status: 0 everything sent was acknowledged, 1 something was refused for
good, 75 (EX_TEMPFAIL) something is still pending.

Nothing here connects or reads files at import time; the composition root adds
:func:`report`, :func:`shelter_status`, :func:`checkin`, :func:`checkout`,
:func:`transfer` and :func:`at_home` to ``sonae``.
"""

from __future__ import annotations

import functools
import io
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, ParamSpec

import click
import segno
from pydantic import ValidationError

from infra.settings import Settings, SettingsError, load_settings
from schemas.intake import (
    AtHomeRequest,
    HouseholdCheckInRequest,
    HouseholdCheckOutRequest,
    HouseholdTransferRequest,
    ReportRequest,
    ShelterStatusRequest,
    read_household_code,
)
from schemas.people import AtHomeNeed, HouseholdNeed, household_code_from
from schemas.reports import ReportCategory
from schemas.shelters import NeedLevel, PowerKind
from services.field_client.delivery import deliver
from services.field_client.errors import FieldClientError
from services.field_client.outbox import Entry, FieldOutbox

__all__ = ["EX_TEMPFAIL", "at_home", "checkin", "checkout", "report", "shelter_status",
           "transfer"]

EX_TEMPFAIL: Final = 75
P = ParamSpec("P")


# --- shared options -----------------------------------------------------------------


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as e:
        raise click.ClickException(str(e)) from None


def _field_client_errors(command: Callable[P, None]) -> Callable[P, None]:
    """Print a field client error as a one-line click error (exit 1)."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except FieldClientError as e:
            raise click.ClickException(str(e)) from e

    return run


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
    settings = _settings()
    outbox = FieldOutbox.from_settings(settings)
    if entry is not None:
        with outbox.locked() as entries:
            entries.append(entry)
        click.echo(f"queued {entry.kind} {entry.id}")
    if not bearer:
        raise click.ClickException("no token: pass --token or set SONAE_TOKEN (the input is "
                                   "kept in the outbox; send it later with --flush)")
    _, refused, still = deliver(outbox, intake_url or settings.intake_base_url, bearer,
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
@_field_client_errors
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
    _validate_locally(ReportRequest, {"reporter": {"team": "local-check"}, **body})
    entry = Entry(id=entry_id, kind="report", path="/v1/reports", body=body,
                  created_at=body["occurred_at"])
    _queue_and_send(entry, intake_url, bearer, attempts)


def _list_pending() -> None:
    from rich.console import Console
    from rich.table import Table

    outbox = FieldOutbox.from_settings(_settings())
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
@_field_client_errors
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
    _validate_locally(ShelterStatusRequest, {"shelter_id": "local-check",
                                             "reported_by": {"team": "local-check"}, **body})
    entry_id = str(uuid.uuid4())
    entry = Entry(id=entry_id, kind="shelter", path=f"/v1/shelters/{shelter_id}/status",
                  body=body, created_at=body["occurred_at"],
                  headers={"Idempotency-Key": entry_id})
    _queue_and_send(entry, intake_url, bearer, attempts)


# --- sonae checkin / checkout / transfer -------------------------------------------------


def household_qr_text(code: str) -> str:
    """``code`` as a QR code drawn in the terminal (half-block characters, the code only:
    the same QR the dashboard shows, for a phone's camera at check-out)."""
    out = io.StringIO()
    segno.make(code, error="m", micro=False).terminal(out=out, compact=True, border=2)
    return out.getvalue()



def _household_entry(kind: str, path: str, body: dict[str, Any]) -> Entry:
    return Entry(id=body["client_id"], kind=kind, path=path, body=body,
                 created_at=body["occurred_at"])


@click.command("checkin")
@click.argument("shelter_id")
@click.option("--size", type=click.IntRange(1, 50), required=True,
              help="People in the household.")
@click.option("--need", "needs", multiple=True,
              type=click.Choice([n.value for n in HouseholdNeed]),
              help="A need beyond a place (repeat for several).")
@click.option("--language", default=None,
              help="The language it speaks if not Japanese (BCP 47: en, vi, zh-Hant…).")
@click.option("--name", default=None, help="The name the household gave (personal data).")
@click.option("--contact", default=None,
              help="How to reach it: a phone number, a room (personal data).")
@click.option("--code", default=None,
              help="The household code, if it already has one [default: a new code].")
@_common
@_field_client_errors
def checkin(shelter_id: str, size: int, needs: tuple[str, ...], language: str | None,
            name: str | None, contact: str | None, code: str | None, intake_url: str | None,
            bearer: str | None, attempts: int, team: str | None,
            reporter_name: str | None) -> None:
    """Check a household in at a shelter; its code is printed at once (works offline)."""
    entry_id = str(uuid.uuid4())
    household_code = read_household_code(code) if code else household_code_from(uuid.uuid4())
    body: dict[str, Any] = {"client_id": entry_id, "household_code": household_code,
                            "size": size, "occurred_at": _now()}
    if needs:
        body["needs"] = list(dict.fromkeys(needs))
    if language:
        body["language"] = language
    if name:
        body["name"] = name
    if contact:
        body["contact"] = contact
    reporter = _reporter(team, reporter_name)
    if reporter:
        body["reported_by"] = reporter
    _validate_locally(HouseholdCheckInRequest, {"shelter_id": "local-check",
                                                "reported_by": {"team": "local-check"},
                                                **body})
    # Printed before anything is sent: staff write it on the household's card now.
    click.echo(f"household code: {household_code}")
    click.echo(household_qr_text(household_code), nl=False)
    _queue_and_send(_household_entry("checkin", f"/v1/shelters/{shelter_id}/households", body),
                    intake_url, bearer, attempts)


@click.command("checkout")
@click.argument("shelter_id")
@click.argument("code")
@_common
@_field_client_errors
def checkout(shelter_id: str, code: str, intake_url: str | None, bearer: str | None,
             attempts: int, team: str | None, reporter_name: str | None) -> None:
    """Check a household out of a shelter by its code (kept until acknowledged)."""
    household_code = read_household_code(code)
    body: dict[str, Any] = {"client_id": str(uuid.uuid4()), "occurred_at": _now()}
    reporter = _reporter(team, reporter_name)
    if reporter:
        body["reported_by"] = reporter
    _validate_locally(HouseholdCheckOutRequest, {
        "shelter_id": "local-check", "household_code": household_code,
        "reported_by": {"team": "local-check"}, **body})
    path = f"/v1/shelters/{shelter_id}/households/{household_code}/checkout"
    _queue_and_send(_household_entry("checkout", path, body), intake_url, bearer, attempts)


@click.command("transfer")
@click.argument("shelter_id")
@click.argument("code")
@click.option("--to", "destination", required=True, help="The shelter it moves to.")
@_common
@_field_client_errors
def transfer(shelter_id: str, code: str, destination: str, intake_url: str | None,
             bearer: str | None, attempts: int, team: str | None,
             reporter_name: str | None) -> None:
    """Move a household to another shelter: both occupancies move once (kept until
    acknowledged)."""
    household_code = read_household_code(code)
    if destination == shelter_id:
        raise click.BadParameter("is the shelter the household is at; name another",
                                 param_hint="--to")
    body: dict[str, Any] = {"client_id": str(uuid.uuid4()), "to": destination,
                            "occurred_at": _now()}
    reporter = _reporter(team, reporter_name)
    if reporter:
        body["reported_by"] = reporter
    _validate_locally(HouseholdTransferRequest, {"reported_by": {"team": "local-check"},
                                                 **body})
    _validate_locally(HouseholdCheckOutRequest, {
        "client_id": body["client_id"], "shelter_id": "local-check",
        "household_code": household_code, "reported_by": {"team": "local-check"}})
    path = f"/v1/shelters/{shelter_id}/households/{household_code}/transfer"
    _queue_and_send(_household_entry("transfer", path, body), intake_url, bearer, attempts)


# --- sonae at-home ------------------------------------------------------------------------


@click.command("at-home")
@click.argument("area_id")
@click.argument("size", type=click.IntRange(1, 50))
@click.option("--need", "needs", multiple=True, type=click.Choice([n.value for n in AtHomeNeed]),
              help="What the household needs (repeat for several).")
@click.option("--contact", default=None, help="Phone or how to reach it (personal data).")
@click.option("--address", default=None, help="Where it is (personal data: HQ only).")
@click.option("--note", default="", help="Anything else it said (personal data).")
@_common
@_field_client_errors
def at_home(area_id: str, size: int, needs: tuple[str, ...], contact: str | None,
            address: str | None, note: str, intake_url: str | None, bearer: str | None,
            attempts: int, team: str | None, reporter_name: str | None) -> None:
    """Report a household sheltering at home (在宅避難), kept until acknowledged."""
    entry_id = str(uuid.uuid4())
    body: dict[str, Any] = {"client_id": entry_id, "area_id": area_id, "size": size,
                            "needs": list(dict.fromkeys(needs)), "occurred_at": _now()}
    for name, value in (("contact", contact), ("address", address), ("note", note)):
        if value:
            body[name] = value
    reporter = _reporter(team, reporter_name)
    if reporter:
        body["reported_by"] = reporter
    _validate_locally(AtHomeRequest, {"household_id": str(uuid.UUID(int=0)), "via": "field",
                                      **body})
    entry = Entry(id=entry_id, kind="at_home", path="/v1/people/at-home", body=body,
                  created_at=body["occurred_at"])
    _queue_and_send(entry, intake_url, bearer, attempts)
