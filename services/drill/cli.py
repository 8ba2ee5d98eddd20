"""``sonae drill``: record, run, verify and report on drills (added to ``sonae`` by the registry).

Addresses: ``--kafka`` and ``--database-url`` (or ``SONAE_KAFKA_BOOTSTRAP`` /
``SONAE_DATABASE_URL``), else those of the stack ``sonae up`` runs on
``--data-dir``. Progress goes to stderr; Ctrl-C stops a replay cleanly, says
how far it got and stops the drill's services.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from infra.embedded.processes import process_alive
from infra.settings import Settings
from schemas.errors import InvalidNamespace
from schemas.topics import validate_namespace
from services.common.cli import INSTANT, cli_settings
from services.drill.errors import DrillError, NoStack
from services.drill.hq import HqMode
from services.drill.ports import DrillContext, ServicesLauncher
from services.drill.replay import Step, TimeMode, format_time
from services.drill.scenarios import SCENARIOS, scenario_path

__all__ = ["drill"]

T = TypeVar("T")

"""Shipped scenarios: ``sonae drill run chiyoda-heavy-rain`` finds ``<name>.jsonl`` here."""

_kafka_option = click.option(
    "--kafka", "kafka", metavar="HOST:PORT", default=None,
    help="Kafka bootstrap servers [SONAE_KAFKA_BOOTSTRAP; default: the running stack's].")
_database_option = click.option(
    "--database-url", metavar="URL", default=None,
    help="PostgreSQL holding the event store [SONAE_DATABASE_URL; default: the running "
         "stack's].")
_data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None,
    help="Data directory of the running stack (`sonae up`) [SONAE_DATA_DIR; default .sonae].")




def _stack_settings(kafka: str | None, database_url: str | None, data_dir: Path | None, *,
                    need_kafka: bool = True, need_database: bool = True) -> Settings:
    """Settings whose broker and database are the given ones, else the running stack's."""
    from infra.stackstate import StackState

    settings = cli_settings(kafka_bootstrap=kafka, database_url=database_url, data_dir=data_dir)
    kafka_given = settings.given("kafka_bootstrap")
    db_given = settings.given("database_url")
    if (kafka_given or not need_kafka) and (db_given or not need_database):
        return settings
    state = StackState.read(settings.data_dir)
    if state is None or not process_alive(state.pid):
        missing = " and ".join(n for n, need, given in (
            ("--kafka", need_kafka, kafka_given), ("--database-url", need_database, db_given))
            if need and not given)
        raise click.ClickException(str(NoStack(
            f"no Sonae stack is running on {settings.data_dir} (start one with `sonae up`, "
            f"or give {missing})")))
    return settings.model_copy(update={
        "kafka_bootstrap": settings.kafka_bootstrap if kafka_given else state.kafka_bootstrap,
        "database_url": settings.database_url if db_given else state.database_url,
    })


def _launcher() -> ServicesLauncher:
    """The composition root's way of running a namespace's services (see ``ports``)."""
    context = click.get_current_context().find_object(DrillContext)
    if context is None:
        raise click.ClickException(
            "this `drill` command was run without Sonae's service registry; run it as "
            "`sonae drill …`, or pass --no-services and run the services yourself")
    return context.launch_services


def _run(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``main(stop)``; Ctrl-C/SIGTERM set ``stop`` (a second Ctrl-C interrupts)."""

    async def wrapper() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                raise KeyboardInterrupt
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await main(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(wrapper())
    except DrillError as exc:
        raise click.ClickException(str(exc)) from None
    except (KafkaError, OSError) as exc:
        raise click.ClickException(f"cannot reach Kafka or PostgreSQL: {exc}") from None


def _log_path(value: str) -> Path:
    path = Path(value)
    if path.exists() or path.suffix:
        return path
    shipped = scenario_path(value)
    if shipped.exists():
        return shipped
    names = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.jsonl")))
    raise click.BadParameter(f"{value!r} is neither a file nor a shipped scenario ({names})",
                             param_hint="LOG")


def _read_log(value: str) -> Any:
    from services.drill.logformat import read_log

    try:
        return read_log(_log_path(value))
    except DrillError as exc:
        raise click.BadParameter(str(exc), param_hint="LOG") from None


def drill_namespace(value: str | None, log_name: str) -> str:
    """The drill namespace for ``--namespace`` (always ``drill.<id>``)."""
    if value is None:
        stem = re.sub(r"[^a-z0-9]+", "-", log_name.lower()).strip("-")[:24] or "drill"
        return f"drill.{stem}-{time.strftime('%m%d%H%M%S', time.gmtime())}"
    name = value.removeprefix("drill.").removeprefix("drill-")
    namespace = f"drill.{name}"
    try:
        return validate_namespace(namespace)
    except InvalidNamespace as exc:
        raise click.BadParameter(f"{exc}; give drill.NAME or NAME, e.g. drill.2025-08-21",
                                 param_hint="--namespace") from None


@contextlib.contextmanager
def _progress(console: Console, total: int, label: str
              ) -> Iterator[tuple[Progress, TaskID]]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("lag {task.fields[lag]}"), TextColumn("{task.fields[eta]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=total, lag="–", eta="")
        yield progress, task


def _eta(speed: float | None, started: float, last: Step | None, total_at: float,
         sent: int, total: int) -> str:
    elapsed = time.monotonic() - started
    if speed is not None:
        remaining = max(0.0, total_at - elapsed)
    elif sent:
        remaining = elapsed / sent * (total - sent)
    else:
        return "ETA –"
    minutes, seconds = divmod(int(remaining), 60)
    return f"ETA {minutes}:{seconds:02d}"


@click.group("drill")
def drill() -> None:
    """Drills: record a window of events, replay it in an isolated namespace, report on it."""


# --- record -----------------------------------------------------------------------


@drill.command("record")
@click.option("--since", type=INSTANT, default=None,
              help="Start of the window (event time, inclusive), e.g. 2025-08-21T13:00:00+09:00.")
@click.option("--until", type=INSTANT, default=None,
              help="End of the window (event time, exclusive).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The drill log to write (JSONL; `-` for stdout).")
@click.option("--namespace", metavar="NAME", default="",
              help="The namespace to record [default: live].")
@click.option("--region", default=None, help="Region pack named in the header [SONAE_REGION].")
@click.option("--description", default="", help="What the log is, in words.")
@_database_option
@_data_dir_option
def record_command(since: datetime | None, until: datetime | None, output: Path, namespace: str,
                   region: str | None, description: str, database_url: str | None,
                   data_dir: Path | None) -> None:
    """Export the inputs of a time window (reports, shelter updates, hazards, HQ commands)
    and the decisions they led to, as a drill log."""
    import asyncpg

    from services.drill.logformat import write_log
    from services.drill.record import database_label, record

    try:
        validate_namespace(namespace)
    except InvalidNamespace as exc:
        raise click.BadParameter(str(exc), param_hint="--namespace") from None
    settings = _stack_settings(None, database_url, data_dir, need_kafka=False)
    region_name = region or settings.region

    async def main(stop: asyncio.Event) -> Any:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await record(conn, namespace=namespace, since=since, until=until,
                                region=region_name,
                                database=database_label(settings.database_url),
                                description=description)
        finally:
            await conn.close()

    log = _run(main)
    if str(output) == "-":
        write_log(log, sys.stdout.buffer)
    else:
        with output.open("wb") as out:
            write_log(log, out)
    where = "" if str(output) == "-" else f" to {output}"
    click.echo(f"recorded {log.header.inputs} inputs and {log.header.references} reference "
               f"decisions{where}", err=True)


# --- run --------------------------------------------------------------------------


@drill.command("run")
@click.argument("log_name", metavar="LOG")
@click.option("--speed", type=click.FloatRange(min=0.001), default=None,
              help="Replay this many times faster than recorded (60: an hour a minute).")
@click.option("--max-speed", is_flag=True, help="Replay as fast as possible, in order.")
@click.option("--namespace", metavar="drill.NAME", default=None,
              help="The drill's namespace [default: drill.<log>-<time>].")
@click.option("--hq", type=click.Choice([m.value for m in HqMode]), default=HqMode.REPLAY.value,
              show_default=True,
              help="replay: the log's HQ commands; interactive: people decide on the dashboard.")
@click.option("--time", "time_mode", type=click.Choice([m.value for m in TimeMode]),
              default=TimeMode.SHIFT.value, show_default=True,
              help="shift: keep event-time gaps (the rules decide as recorded); scale: divide "
                   "them by the speed too (event time follows the wall clock).")
@click.option("--no-services", is_flag=True,
              help="Do not start the drill's services (run `sonae up --namespace drill.NAME`).")
@click.option("--sync/--no-sync", default=None,
              help="Keep the decision order (default: when a decision service runs).")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the after-action report [default: drill-reports/<ns>].")
@click.option("--no-report", is_flag=True, help="Do not write an after-action report.")
@click.option("--hold", is_flag=True,
              help="Keep the drill's services running after the replay until Ctrl-C "
                   "(always with --hq interactive).")
@_kafka_option
@_database_option
@_data_dir_option
def run_command(log_name: str, speed: float | None, max_speed: bool, namespace: str | None,
                hq: str, time_mode: str, no_services: bool, sync: bool | None,
                report_dir: Path | None, no_report: bool, hold: bool, kafka: str | None,
                database_url: str | None, data_dir: Path | None) -> None:
    """Replay a drill log (a file, or a shipped scenario's name) into its own namespace."""
    if (speed is None) == (not max_speed):
        raise click.UsageError("give exactly one of --speed N and --max-speed")
    log = _read_log(log_name)
    ns = drill_namespace(namespace, Path(log_name).stem)
    settings = _stack_settings(kafka, database_url, data_dir)
    from services.drill.runner import ReplayOptions

    options = ReplayOptions(speed=None if max_speed else speed, time_mode=TimeMode(time_mode),
                            hq=HqMode(hq), sync=sync)
    directory = None if no_report else (report_dir or Path("drill-reports") / ns)
    # People deciding on the dashboard need the services after the log has run out.
    hold = hold or (options.hq is HqMode.INTERACTIVE and not no_services)
    launch = None if no_services else _launcher()
    code = _run(lambda stop: _drill_run(settings, log, ns, options, stop=stop,
                                        launch=launch, report_dir=directory, hold=hold))
    sys.exit(code)


async def _drill_run(settings: Settings, log: Any, namespace: str, options: Any, *,
                     stop: asyncio.Event, launch: ServicesLauncher | None,
                     report_dir: Path | None, hold: bool) -> int:
    from services.drill.runner import replay

    console = Console(stderr=True)
    console.print(f"Drill [bold]{namespace}[/]: {log.header.inputs} inputs, "
                  f"{'max speed' if options.speed is None else f'{options.speed:g}×'}, "
                  f"HQ {options.hq.value}. Live topics and channels are not touched.")
    if launch is None:
        result = await _replay_with_progress(console, settings, log, namespace, options, stop,
                                             replay, None)
        return await _finish(console, settings, log, namespace, result, stop, report_dir, hold)
    log_path = settings.data_dir / "logs" / f"drill-{namespace}.log"
    async with launch(settings, namespace, log_path=log_path) as services:
        console.print(f"  services    {', '.join(services.names)} (log: {log_path})")
        for label, url in services.addresses.items():
            console.print(f"  {label:<11} {url}")
        result = await _replay_with_progress(
            console, settings, log, namespace, options, stop, replay,
            (services.runs_decisions, services.runs_tracker))
        code = await _finish(console, settings, log, namespace, result, stop, report_dir, hold)
        console.print("Stopping the drill's services…")
    console.print("Drill services stopped.")
    return code


async def _replay_with_progress(console: Console, settings: Settings, log: Any, namespace: str,
                                options: Any, stop: asyncio.Event, replay: Any,
                                services: tuple[bool, bool] | None) -> Any:
    from infra.status import consumer_lag

    total = len(log.inputs)
    span = ((log.end - log.start).total_seconds() / options.speed
            if options.speed is not None and log.inputs else 0.0)
    started = time.monotonic()
    with _progress(console, total, "replaying") as (progress, task):
        async def poll_lag() -> None:
            while True:
                try:
                    lag = await asyncio.wait_for(
                        consumer_lag(settings, namespace), 10)
                    progress.update(task, lag=str(sum(lag.values())) if lag else "0")
                except (TimeoutError, KafkaError, OSError):
                    progress.update(task, lag="?")
                await asyncio.sleep(2.0)

        def on_progress(sent: int, total: int, behind: float, last: Step | None) -> None:
            eta = _eta(options.speed, started, last, span, sent, total)
            if behind > 1.0:
                eta += f" (behind {behind:.0f}s)"
            progress.update(task, completed=sent, eta=eta)

        async with asyncio.TaskGroup() as tg:
            poller = tg.create_task(poll_lag())
            try:
                return await replay(settings, log, namespace, options, stop=stop,
                                    progress=on_progress, services=services)
            finally:
                poller.cancel()


async def _finish(console: Console, settings: Settings, log: Any, namespace: str, result: Any,
                  stop: asyncio.Event, report_dir: Path | None, hold: bool) -> int:
    from services.drill.report import build_report, collect, write_report
    from services.drill.verify import settle

    last = (f"; last event {format_time(result.last_original_at)} as recorded, "
            f"{format_time(result.last_replayed_at)} in the drill"
            if result.last_original_at is not None else "")
    if result.stopped:
        console.print(f"[yellow]Stopped[/] after {result.sent} of {result.total} events{last}.")
    else:
        console.print(f"Replayed {result.sent} of {result.total} events{last}.")
    if result.commands_replayed or result.skipped or result.commands_left_to_hq:
        console.print(f"  HQ commands: {result.commands_replayed} replayed, "
                      f"{len(result.skipped)} skipped, {result.commands_left_to_hq} left to HQ, "
                      f"{result.commands_unresolved} sent unmatched")
    for skipped in result.skipped:
        console.print(f"  skipped {skipped.action} #{skipped.index}: {skipped.reason}")
    if hold and not stop.is_set():
        console.print("Holding: the drill's services keep running. Press Ctrl-C to end.")
        await stop.wait()
    if report_dir is not None:
        if not stop.is_set() and result.decision_service:
            console.print("Waiting for the services to finish deciding…")
            await settle(settings, namespace, quiet=3.0, timeout=120.0, stop=stop)
        observed = await collect(settings, namespace)
        report = build_report(observed, namespace=namespace, region=log.header.region, log=log,
                              run=result.manifest())
        paths = write_report(report, report_dir)
        (report_dir / "run.json").write_text(json.dumps(result.manifest(), indent=2) + "\n",
                                             encoding="utf-8")
        console.print(f"After-action report: {paths['md']}, {paths['json']}, {paths['html']}")
    return 130 if result.stopped else 0


# --- verify -----------------------------------------------------------------------


@drill.command("verify")
@click.argument("log_name", metavar="LOG")
@click.option("--runs", type=click.IntRange(min=2, max=5), default=2, show_default=True,
              help="How many replays to compare.")
@click.option("--show", type=int, default=60, show_default=True,
              help="Lines of the difference to print.")
@_kafka_option
@_database_option
@_data_dir_option
def verify_command(log_name: str, runs: int, show: int, kafka: str | None,
                   database_url: str | None, data_dir: Path | None) -> None:
    """Replay a log twice at max speed into fresh namespaces and compare the decisions."""
    from services.drill.verify import verify

    log = _read_log(log_name)
    settings = _stack_settings(kafka, database_url, data_dir)
    console = Console(stderr=True)
    launcher = _launcher()

    async def main(stop: asyncio.Event) -> Any:
        return await verify(settings, log, runs=runs, stop=stop, launcher=launcher,
                            on_run=lambda i, ns: console.print(f"run {i}: replaying into {ns}…"))

    outcome = _run(main)
    for run in outcome.runs:
        summary = ", ".join(f"{k} {v}" for k, v in run.summary().items())
        skipped = len(run.result.skipped) if run.result is not None else 0
        console.print(f"  {run.namespace}: {len(run.decisions)} decisions ({summary}); "
                      f"{skipped} HQ commands skipped")
    if outcome.identical:
        console.print("[green]identical[/]: every run made the same decisions")
        return
    console.print(f"[red]different[/]: {len(outcome.differences)} diff lines")
    for line in outcome.differences[:show]:
        click.echo(line)
    sys.exit(1)


# --- report -----------------------------------------------------------------------


@drill.command("report")
@click.option("--namespace", metavar="drill.NAME", required=True, help="The drill namespace.")
@click.option("--log", "log_name", metavar="LOG", default=None,
              help="The log it replayed (for its header and the comparison with the original).")
@click.option("--run", "run_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="The run.json `sonae drill run` wrote.")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for report.md/json/html [default: drill-reports/<ns>].")
@click.option("--from-store", is_flag=True,
              help="Read the event store (the recorder's copy) instead of the topics.")
@click.option("--region", default=None, help="Region pack for names [default: the log's].")
@_kafka_option
@_database_option
@_data_dir_option
def report_command(namespace: str, log_name: str | None, run_file: Path | None,
                   output: Path | None, from_store: bool, region: str | None,
                   kafka: str | None, database_url: str | None, data_dir: Path | None) -> None:
    """Write the after-action report of a drill namespace."""
    from services.drill.report import build_report, collect, collect_from_store, write_report

    try:
        validate_namespace(namespace)
    except InvalidNamespace as exc:
        raise click.BadParameter(str(exc), param_hint="--namespace") from None
    log = _read_log(log_name) if log_name is not None else None
    run = json.loads(run_file.read_text(encoding="utf-8")) if run_file is not None else None
    settings = _stack_settings(kafka, database_url, data_dir, need_kafka=not from_store,
                               need_database=from_store)
    region_name = region or (log.header.region if log is not None else settings.region)

    async def main(stop: asyncio.Event) -> Any:
        if from_store:
            return await collect_from_store(settings.database_url, namespace)
        return await collect(settings, namespace)

    observed = _run(main)
    if not observed:
        raise click.ClickException(f"namespace {namespace} holds no events")
    report = build_report(observed, namespace=namespace, region=region_name, log=log, run=run)
    paths = write_report(report, output or Path("drill-reports") / namespace)
    click.echo(f"After-action report: {paths['md']}, {paths['json']}, {paths['html']}", err=True)
