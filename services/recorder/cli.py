"""``sonae events export``, ``sonae rehydrate``, ``sonae people purge`` (added to ``sonae``
through the registry).

Progress goes to stderr (a rich bar), data to stdout or ``--output``, so
``sonae events export … > drill.jsonl`` works as expected.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from infra.redact import mask_passwords
from infra.settings import Settings
from services.common.cli import INSTANT, cli_settings
from services.recorder.errors import RecorderError

__all__ = ["events", "people", "rehydrate"]

T = TypeVar("T")



_namespace_option = click.option(
    "--namespace", metavar="NAME", default=None,
    help="The topic namespace, e.g. a drill's [SONAE_NAMESPACE; default: live].")
_database_option = click.option(
    "--database-url", metavar="URL", default=None,
    help="The PostgreSQL holding the event store [SONAE_DATABASE_URL].")
_kafka_option = click.option(
    "--kafka", "kafka", metavar="HOST:PORT", default=None,
    help="The Kafka bootstrap servers [SONAE_KAFKA_BOOTSTRAP].")


def _run(settings: Settings, main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning expected failures into one-line CLI errors."""
    try:
        return asyncio.run(main)
    except RecorderError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot reach PostgreSQL or Kafka ({mask_passwords(settings.database_url)}, "
            f"{settings.kafka_bootstrap}): {exc}") from None


@contextmanager
def _progress(description: str) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """A rich progress bar on stderr; yields (set_total, advance)."""
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=None)

        def set_total(total: int) -> None:
            progress.update(task, total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)

        yield set_total, advance


@click.group("events")
def events() -> None:
    """The event store: every event the recorder has stored."""


@events.command("export")
@click.option("--since", type=INSTANT, default=None,
              help="Only events that occurred at or after this time (ISO-8601 with a "
                   "timezone, e.g. 2025-08-21T14:00:00+09:00).")
@click.option("--until", type=INSTANT, default=None,
              help="Only events that occurred before this time (ISO-8601 with a timezone).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of stdout.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the personal-data manifest (which fields of which events are "
                   "personal, how many events hold them) here [default with --output: "
                   "OUTPUT.personal.json].")
@click.option("--without-personal", is_flag=True,
              help="Blank the personal fields (names, contacts, addresses, notes) in the "
                   "export, as `sonae people purge` would.")
@_namespace_option
@_database_option
def export(since: datetime | None, until: datetime | None, output: Path | None,
           manifest: Path | None, without_personal: bool, namespace: str | None,
           database_url: str | None) -> None:
    """Stream stored events as JSONL (one canonical event per line), in event-time order.

    Personal data is marked: stderr says how many exported events hold it, and the
    manifest (beside --output, or --manifest) lists the personal fields per event type.
    """
    import json

    from services.recorder.errors import InvalidWindow
    from services.recorder.export import PersonalTally, Window, export_window

    settings = cli_settings(database_url=database_url, namespace=namespace)
    try:
        window = Window(namespace=settings.namespace, since=since, until=until)
    except InvalidWindow as exc:
        raise click.UsageError(f"--since/--until: {exc}") from None
    tally = PersonalTally()

    async def run(out: BinaryIO) -> int:
        import asyncpg

        conn = await asyncpg.connect(settings.database_url)
        try:
            with _progress("exporting") as (set_total, advance):
                return await export_window(conn, window, out, on_total=set_total,
                                           on_progress=advance, personal=tally,
                                           without_personal=without_personal)
        finally:
            await conn.close()

    if output is None:
        count = _run(settings, run(sys.stdout.buffer))
    else:
        with open(output, "wb") as out:
            count = _run(settings, run(out))
    if manifest is None and output is not None:
        manifest = output.with_name(output.name + ".personal.json")
    where = f" to {output}" if output is not None else ""
    click.echo(f"exported {count} events{where}", err=True)
    click.echo(tally.summary(), err=True)
    if manifest is not None:
        document = tally.manifest(window, exported=count,
                                  file=output.name if output is not None else None)
        manifest.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n",
                            encoding="utf-8")
        click.echo(f"personal-data manifest: {manifest}", err=True)


@click.command("rehydrate")
@click.option("--force", is_flag=True,
              help="Republish even if the broker already holds events of the namespace "
                   "(consumers deduplicate by event_id; the topics would hold them twice).")
@_namespace_option
@_kafka_option
@_database_option
def rehydrate(force: bool, namespace: str | None, kafka: str | None,
              database_url: str | None) -> None:
    """Republish the event store into an empty broker, in order per key."""
    from services.recorder.rehydrate import rehydrate as republish

    settings = cli_settings(kafka_bootstrap=kafka, database_url=database_url, namespace=namespace)

    async def run() -> int:
        with _progress("rehydrating") as (set_total, advance):
            return await republish(settings, force=force, on_total=set_total,
                                   on_progress=advance)

    count = _run(settings, run())
    click.echo(f"rehydrated {count} events into {settings.kafka_bootstrap} "
               f"(namespace {settings.namespace or 'live'})", err=True)


@click.group("people")
def people() -> None:
    """People and supplies data: retention of its personal fields."""


@people.command("purge")
@click.option("--before", type=INSTANT, default=None,
              help="Purge the personal fields of events that occurred before this time "
                   "(ISO-8601 with a timezone) [default: now minus "
                   "SONAE_PEOPLE_RETENTION_DAYS].")
@click.option("--dry-run", is_flag=True,
              help="Report what would be purged and change nothing.")
@_namespace_option
@_database_option
def purge(before: datetime | None, dry_run: bool, namespace: str | None,
          database_url: str | None) -> None:
    """Remove names, contacts, addresses and notes of people and supplies events before T.

    Sizes, needs, areas and every count stay. Prints the rows touched per event type
    and table; a second run touches nothing.
    """
    from datetime import UTC, timedelta

    from services.recorder.errors import PurgeBeforeInFuture
    from services.recorder.purge import purge_personal_data
    from services.recorder.retention import check_before

    settings = cli_settings(database_url=database_url, namespace=namespace)
    now = datetime.now(UTC)
    if before is None:
        if settings.people_retention_days is None:
            raise click.UsageError(
                "--before is required when SONAE_PEOPLE_RETENTION_DAYS is not set")
        before = now - timedelta(days=settings.people_retention_days)
    try:
        check_before(before, now)
    except PurgeBeforeInFuture as exc:
        raise click.BadParameter(str(exc), param_hint="--before") from None

    async def run() -> list[str]:
        import asyncpg

        conn = await asyncpg.connect(settings.database_url)
        try:
            result = await purge_personal_data(conn, namespace=settings.namespace,
                                               before=before, now=now, dry_run=dry_run)
        finally:
            await conn.close()
        return result.lines()

    for line in _run(settings, run()):
        click.echo(line)
