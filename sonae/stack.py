"""``sonae up``: bring up whatever is not given externally, prepare it, run the services.

The order is: embedded broker and PostgreSQL (unless external addresses are
given), migrations, topics from the catalogue, a republish of the event store
into an empty broker, then every registered service under the supervisor.
"Ready" (and the addresses) come once every service serves (:mod:`infra.health`);
from then on :mod:`sonae.heal` replaces an embedded broker or PostgreSQL that dies.
The state file (:mod:`infra.stackstate`) tells ``sonae status`` and ``sonae down``
what runs; its lock keeps two stacks from sharing one data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from infra.db.migrate import migrate_database
from infra.embedded.broker import EmbeddedBroker
from infra.embedded.postgres import EmbeddedPostgres
from infra.health import beacon_path
from infra.redact import mask_passwords
from infra.settings import Settings
from infra.stackstate import STATE_FILE, StackState, stack_lock
from infra.supervisor import ProcessSpec, Supervisor
from infra.topics import ensure_topics
from services.drill.scenarios import DEFAULT as DEFAULT_DEMO
from services.recorder.rehydrate import rehydrate_if_empty
from sonae import registry
from sonae.demo import run_demo
from sonae.heal import Healer, wait_serving

__all__ = ["prepare", "run_up", "service_addresses", "service_process_specs"]


def service_process_specs(settings: Settings) -> list[ProcessSpec]:
    """One supervised process per registered service, configured through SONAE_* variables."""
    env = settings.env()
    return [
        ProcessSpec(spec.name, [sys.executable, "-m", "sonae.cli", "service", "run", spec.name],
                    env=env)
        for spec in registry.SERVICES
    ]


def service_health_checks(settings: Settings) -> dict[str, dict[str, str]]:
    """How each registered service is asked whether it serves (see :mod:`infra.health`)."""
    out: dict[str, dict[str, str]] = {}
    for spec in registry.SERVICES:
        if spec.health_port is not None:
            port = getattr(settings, spec.health_port)
            out[spec.name] = {"http": f"http://{settings.host}:{port}/healthz"}
        else:
            path = beacon_path(settings.data_dir.resolve(), spec.name, settings.namespace)
            out[spec.name] = {"beacon": str(path)}
    return out


def service_addresses(settings: Settings) -> dict[str, str]:
    """The addresses the registered services announce (dashboard, intake, websocket)."""
    out: dict[str, str] = {}
    for spec in registry.SERVICES:
        for label, attr in spec.addresses.items():
            port = getattr(settings, attr)
            scheme = "ws" if "websocket" in label else "http"
            out[label] = f"{scheme}://{settings.host}:{port}/"
    return out


async def prepare(settings: Settings, *, out: TextIO) -> None:
    """Apply migrations and create the catalogue's topics for the namespace."""
    applied = await migrate_database(settings.database_url)
    out.write(f"  migrations  {len(applied)} applied\n" if applied
              else "  migrations  up to date\n")
    created = await ensure_topics(settings)
    out.write(f"  topics      {len(created)} created\n" if created else "  topics      present\n")
    # The embedded broker forgets everything when it stops; the event store does not.
    await rehydrate_if_empty(settings, out=out)


async def _prepare(settings: Settings, out: TextIO) -> None:
    await prepare(settings, out=out)


async def run_up(
    settings: Settings,
    *,
    external_kafka: bool,
    external_database: bool,
    demo: bool = False,
    demo_scenario: str = DEFAULT_DEMO,
    out: TextIO = sys.stdout,
) -> None:
    """Run the stack in the foreground until SIGINT or SIGTERM."""
    data_dir = settings.data_dir
    with stack_lock(data_dir):
        logs = data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        broker: EmbeddedBroker | None = None
        postgres: EmbeddedPostgres | None = None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        state = StackState(pid=os.getpid(), status="starting", namespace=settings.namespace,
                           kafka_bootstrap=settings.kafka_bootstrap,
                           database_url=settings.database_url,
                           kafka_profile=settings.kafka_profile.value)
        began = time.monotonic()
        try:
            out.write("Starting Sonae\n")
            if not external_kafka:
                broker = EmbeddedBroker(port=settings.embedded_kafka_port,
                                        log_path=logs / "tansu.log")
                # Started from the main thread on purpose: the parent-death signal is tied
                # to the thread that forks, and a worker thread may exit before we do.
                broker.start()
                settings = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
                state.embedded_kafka_pid = broker.pid
            if not external_database:
                postgres = EmbeddedPostgres(data_dir=data_dir / "postgres",
                                            port=settings.embedded_postgres_port)
                postgres.start()
                settings = settings.model_copy(update={"database_url": postgres.url})
                state.embedded_postgres_pid = postgres.pid
            state.kafka_bootstrap = settings.kafka_bootstrap
            state.database_url = settings.database_url
            state.write(data_dir)
            kind = "embedded Tansu" if broker else "external"
            out.write(f"  Kafka       {settings.kafka_bootstrap} ({kind})\n")
            kind = "embedded" if postgres else "external"
            out.write(f"  PostgreSQL  {mask_passwords(settings.database_url)} ({kind})\n")
            await prepare(settings, out=out)
            supervisor = Supervisor(service_process_specs(settings), out=out)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(supervisor.run(), name="supervisor")
                state.health = service_health_checks(settings)
                state.services = supervisor.pids()
                state.write(data_dir)
                refresher = tg.create_task(_refresh_state(state, supervisor, data_dir),
                                           name="state-refresh")
                # "Ready" means every service serves, not that its process exists.
                if await wait_serving(state, supervisor, stop, out):
                    state.status = "ready"
                    state.ready_seconds = time.monotonic() - began
                    state.addresses = service_addresses(settings)
                    state.write(data_dir)
                    _announce(settings, state, out)
                healer = Healer(settings, state, data_dir, supervisor, broker, postgres, stop,
                                out, _prepare)
                tg.create_task(healer.watch(), name="heal")
                if demo and not stop.is_set():
                    tg.create_task(run_demo(settings, out=out, stop=stop,
                                            scenario=demo_scenario), name="demo")
                await stop.wait()
                refresher.cancel()
                out.write("Stopping Sonae…\n")
                state.status = "stopping"
                state.write(data_dir)
                supervisor.stop()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if postgres is not None:
                await asyncio.to_thread(postgres.stop)
            if broker is not None:
                await asyncio.to_thread(broker.stop)
            with contextlib.suppress(FileNotFoundError):
                (data_dir / STATE_FILE).unlink()
            out.write("Sonae stopped.\n")
            out.flush()


async def _refresh_state(state: StackState, supervisor: Supervisor, data_dir: Path) -> None:
    """Keep the state file's service pids current for `sonae status`."""
    while True:
        await asyncio.sleep(1.0)
        state.services = supervisor.pids()
        state.write(data_dir)


def _announce(settings: Settings, state: StackState, out: TextIO) -> None:
    ns = settings.namespace or "live"
    seconds = state.ready_seconds or 0.0
    out.write(f"Sonae is up (namespace: {ns}), ready in {seconds:.1f} s.\n")
    names = ", ".join(state.services) or "none registered yet"
    out.write(f"  services    {names}\n")
    for label, url in state.addresses.items():
        out.write(f"  {label:<11} {url}\n")
    out.write("Press Ctrl-C to stop (or run `sonae down` from another shell).\n")
    out.flush()
