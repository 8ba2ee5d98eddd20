"""``sonae events export`` and ``sonae rehydrate`` (contributed to ``sonae`` through the registry).

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

__all__ = ["events", "rehydrate"]

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
@_namespace_option
@_database_option
def export(since: datetime | None, until: datetime | None, output: Path | None,
           namespace: str | None, database_url: str | None) -> None:
    """Stream stored events as JSONL (one canonical event per line), in event-time order."""
    from services.recorder.errors import InvalidWindow
    from services.recorder.export import Window, export_window

    settings = cli_settings(database_url=database_url, namespace=namespace)
    try:
        window = Window(namespace=settings.namespace, since=since, until=until)
    except InvalidWindow as exc:
        raise click.UsageError(f"--since/--until: {exc}") from None

    async def run(out: BinaryIO) -> int:
        import asyncpg

        conn = await asyncpg.connect(settings.database_url)
        try:
            with _progress("exporting") as (set_total, advance):
                return await export_window(conn, window, out, on_total=set_total,
                                           on_progress=advance)
        finally:
            await conn.close()

    if output is None:
        count = _run(settings, run(sys.stdout.buffer))
    else:
        with open(output, "wb") as out:
            count = _run(settings, run(out))
    where = f" to {output}" if output is not None else ""
    click.echo(f"exported {count} events{where}", err=True)


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
