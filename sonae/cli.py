"""The ``sonae`` command: the stack's own commands, and every command the registry lists.

``up``/``down``/``status``, ``db``, ``topics`` and ``service`` are the stack's;
each service package (and each tool package, such as the field client)
contributes the rest through :mod:`sonae.registry`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import click

from infra.embedded.processes import EmbeddedError, process_alive
from infra.logs import configure_logging
from infra.redact import mask_passwords
from infra.settings import Settings, SettingsError, load_stack_location
from services.common.cli import cli_settings
from services.drill.ports import DrillContext, RunningServices
from services.drill.scenarios import DEFAULT as DEFAULT_DEMO
from services.drill.scenarios import SHIPPED as DEMO_SCENARIOS
from sonae import registry

log = logging.getLogger("sonae")


data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None,
    help="Where the embedded PostgreSQL data, logs and stack state live [SONAE_DATA_DIR; "
         "default .sonae].")
kafka_option = click.option(
    "--kafka", "kafka", metavar="HOST:PORT", default=None,
    help="Use this Kafka instead of starting the embedded broker [SONAE_KAFKA_BOOTSTRAP].")
database_option = click.option(
    "--database-url", metavar="URL", default=None,
    help="Use this PostgreSQL instead of the embedded one [SONAE_DATABASE_URL].")
namespace_option = click.option(
    "--namespace", metavar="NAME", default=None,
    help="Run in an isolated topic namespace, e.g. a drill [SONAE_NAMESPACE; default: live].")


def _running_services(base: Settings, namespace: str, *, names: Iterable[str] | None = None,
                      log_path: Path | None = None) -> AbstractAsyncContextManager[RunningServices]:
    # Imported when a drill starts services, not whenever `sonae` starts (every service
    # process is a `sonae service run`).
    from sonae.drill_services import running_services

    return running_services(base, namespace, names=names, log_path=log_path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Sonae (備え): emergency operations for a ward's disaster headquarters."""
    # The drill commands run a namespace's services through the registry's processes.
    ctx.obj = DrillContext(launch_services=_running_services)


@main.command()
@kafka_option
@database_option
@namespace_option
@data_dir_option
@click.option("--kafka-port", type=int, default=None,
              help="Port of the embedded broker [SONAE_EMBEDDED_KAFKA_PORT; default 19092].")
@click.option("--postgres-port", type=int, default=None,
              help="Port of the embedded PostgreSQL [SONAE_EMBEDDED_POSTGRES_PORT; "
                   "default 15432].")
@click.option("--detach", is_flag=True,
              help="Run in the background; stop it with `sonae down`.")
@click.option("--demo", is_flag=True,
              help="Once up, replay a shipped scenario (a 5-minute show, every event flagged "
                   "exercise) so the dashboard moves.")
@click.option("--demo-scenario", default=DEFAULT_DEMO, show_default=True,
              type=click.Choice(DEMO_SCENARIOS),
              help="Which shipped scenario --demo plays: the heavy-rain afternoon, or the "
                   "weekday earthquake with its stranded commuters.")
def up(kafka: str | None, database_url: str | None, namespace: str | None,
       data_dir: Path | None, kafka_port: int | None, postgres_port: int | None,
       detach: bool, demo: bool, demo_scenario: str) -> None:
    """Start the broker and database unless given, migrate, create topics, run every service."""
    settings = cli_settings(kafka_bootstrap=kafka, database_url=database_url, namespace=namespace,
                         data_dir=data_dir, embedded_kafka_port=kafka_port,
                         embedded_postgres_port=postgres_port)
    external_kafka = settings.given("kafka_bootstrap")
    external_db = settings.given("database_url")
    if detach:
        _up_detached(settings, sys.argv[1:])
        return
    configure_logging(settings)
    from sonae.stack import run_up

    try:
        asyncio.run(run_up(settings, external_kafka=external_kafka,
                           external_database=external_db, demo=demo,
                           demo_scenario=demo_scenario))
    except EmbeddedError as exc:
        raise click.ClickException(str(exc)) from None


def _up_detached(settings: Settings, argv: list[str]) -> None:
    from infra.stackstate import StackState

    data_dir = settings.data_dir
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    args = [a for a in argv if a != "--detach"]
    with open(logs / "up.log", "ab") as logfile:
        # A new session: the background stack must outlive this command.
        proc = subprocess.Popen([sys.executable, "-m", "sonae.cli", *args],
                                stdin=subprocess.DEVNULL, stdout=logfile,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = StackState.read(data_dir)
        if state is not None and state.pid == proc.pid and state.status == "ready":
            click.echo(f"Sonae is up in the background (pid {proc.pid}); log: {logs / 'up.log'}")
            click.echo(f"  Kafka       {state.kafka_bootstrap}")
            click.echo(f"  PostgreSQL  {mask_passwords(state.database_url)}")
            for label, url in state.addresses.items():
                click.echo(f"  {label:<11} {url}")
            click.echo("Stop it with `sonae down`.")
            return
        if proc.poll() is not None:
            tail = (logs / "up.log").read_text(errors="replace").splitlines()[-10:]
            raise click.ClickException("sonae up failed:\n" + "\n".join(tail))
        time.sleep(0.2)
    raise click.ClickException(f"sonae up was not ready within 120 s; see {logs / 'up.log'}")


@main.command()
@data_dir_option
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for a clean stop before killing.")
def down(data_dir: Path | None, timeout: float) -> None:
    """Stop a stack started with `sonae up` (in the background or another shell)."""
    from infra.stackstate import StackState

    try:
        where = load_stack_location(data_dir)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    state = StackState.read(where)
    if state is None:
        click.echo(f"No Sonae stack is running on {where}.")
        return
    try:
        os.kill(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        (where / "stack.json").unlink(missing_ok=True)
        click.echo(f"The stack (pid {state.pid}) was already gone; cleared its state file.")
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(state.pid):
            click.echo(f"Sonae stopped (pid {state.pid}).")
            return
        time.sleep(0.2)
    if process_alive(state.pid):
        os.killpg(state.pid, signal.SIGKILL)
    raise click.ClickException(f"the stack (pid {state.pid}) did not stop within {timeout:.0f}s "
                               "and was killed")


@main.command()
@kafka_option
@database_option
@namespace_option
@data_dir_option
def status(kafka: str | None, database_url: str | None, namespace: str | None,
           data_dir: Path | None) -> None:
    """Show the broker, the database, whether each service serves, and consumer lag.

    Exits 1 naming what does not serve. Reads only the data directory (and the options
    given), so it works from any shell, whatever its SONAE_* variables.
    """
    from infra.status import collect_status, render_status

    try:
        where = load_stack_location(data_dir)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    report = asyncio.run(collect_status(where, kafka=kafka, database_url=database_url,
                                        namespace=namespace))
    render_status(report)
    if not report.healthy:
        sys.exit(1)


@main.group()
def db() -> None:
    """Database administration."""


@db.command("migrate")
@database_option
def db_migrate(database_url: str | None) -> None:
    """Apply pending migrations (idempotent)."""
    from infra.db.migrate import migrate_database

    settings = cli_settings(database_url=database_url)

    async def run() -> list[str]:
        return [f"{m.version:04d}_{m.name}" for m in await migrate_database(settings.database_url)]

    try:
        applied = asyncio.run(run())
    except OSError as exc:
        raise click.ClickException(
            mask_passwords(f"cannot reach PostgreSQL at {settings.database_url}: {exc}")) from None
    click.echo("applied: " + ", ".join(applied) if applied else "database is up to date")


@main.group()
def topics() -> None:
    """Kafka topics from the catalogue."""


@topics.command("create")
@kafka_option
@namespace_option
def topics_create(kafka: str | None, namespace: str | None) -> None:
    """Create the catalogue's topics that are missing (idempotent)."""
    from infra.topics import ensure_topics

    settings = cli_settings(kafka_bootstrap=kafka, namespace=namespace)
    created = asyncio.run(ensure_topics(settings))
    for name in created:
        click.echo(f"created {name}")
    if not created:
        click.echo("all topics present")


@topics.command("list")
@kafka_option
@namespace_option
def topics_list(kafka: str | None, namespace: str | None) -> None:
    """List the namespace's topics with partitions and cleanup policy."""
    from rich.console import Console
    from rich.table import Table

    from infra.topics import describe_topics

    settings = cli_settings(kafka_bootstrap=kafka, namespace=namespace)
    infos = asyncio.run(describe_topics(settings))
    table = Table("topic", "partitions", "declared", "cleanup.policy")
    for t in infos:
        table.add_row(t.name, str(t.partitions), str(t.declared_partitions or "-"),
                      t.cleanup_policy or "?")
    Console().print(table)


@main.group()
def service() -> None:
    """Run one registered service (the process command of each service)."""


@service.command("run")
@click.argument("name")
def service_run(name: str) -> None:
    """Run the service NAME in the foreground until SIGTERM."""
    try:
        spec = registry.get(name)
    except registry.UnknownService as exc:
        raise click.ClickException(str(exc)) from None
    settings = cli_settings()
    configure_logging(settings)
    spec.load()(settings)


@service.command("list")
def service_list() -> None:
    """List the registered services."""
    if not registry.SERVICES:
        click.echo("no services registered yet")
    for spec in registry.SERVICES:
        click.echo(f"{spec.name:<22} {spec.description}")


# --- commands contributed by service and tool packages (sonae.registry) ---------------
for _command in registry.commands():
    main.add_command(_command)


if __name__ == "__main__":
    main()
