"""The services of a drill namespace: the registered services, run for that namespace only.

``sonae drill run`` starts them itself (unless ``--no-services``: then run
``sonae up --namespace drill.NAME`` in another shell, against the same broker
and database). They are the same processes ``sonae up`` runs
(:func:`sonae.stack.service_process_specs`, one ``sonae service run NAME`` each,
supervised by :class:`infra.supervisor.Supervisor`), started with
``SONAE_NAMESPACE`` set to the drill's namespace against the broker and
database already running, and with their own:

- **HTTP ports**: free ports chosen at start, so they never collide with the
  live stack's (intake 8080, gateway 8765, dashboard 8000, CAP feed 8090);
- **data directory**: ``<data dir>/drills/<namespace>``;
- **intake URL** (the drill's gateway forwards field reports to the drill's
  intake, never to the live one) and **CAP directory** (when the live stack
  writes CAP files, the drill writes its own under its data directory).

Everything they read and write is in the namespace's topics; in PostgreSQL
their rows carry the namespace (intake outbox, broadcaster ledger and feeds,
event store), so live operations never see them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

from infra.embedded.processes import free_port
from infra.settings import Settings
from infra.supervisor import ProcessSpec, Supervisor
from infra.topics import ensure_topics
from schemas.topics import LIVE
from services.drill.errors import NotIsolated, ServicesFailed
from services.drill.ports import DECISION_SERVICES
from sonae import registry
from sonae.stack import service_addresses, service_process_specs

__all__ = ["DECISION_SERVICES", "DrillServices", "drill_settings", "running_services"]



def drill_settings(base: Settings, namespace: str) -> Settings:
    """``base`` (broker, database, region, secrets) for ``namespace``, with its own ports."""
    if namespace == LIVE:
        raise NotIsolated("drill services never run in the live namespace")
    host = base.host
    ports = {name: free_port(host) for name in ("intake_port", "gateway_port",
                                                "dashboard_port", "broadcaster_port")}
    return base.model_copy(update={
        "namespace": namespace,
        "data_dir": base.data_dir / "drills" / namespace,
        "intake_url": f"http://{host}:{ports['intake_port']}",
        # When the live stack writes CAP files, the drill writes its own, apart.
        "cap_dir": base.data_dir / "drills" / namespace / "cap" if base.cap_dir else None,
        # A drill replays its scenario's warnings; live JMA messages have no place in it.
        "jma_feed_enabled": False,
        **ports,
    })


@dataclass
class DrillServices:
    """The running services of one drill namespace."""

    settings: Settings
    names: tuple[str, ...]
    log_path: Path
    supervisor: Supervisor

    @property
    def addresses(self) -> dict[str, str]:
        """Dashboard, websocket, intake, CAP feed of the drill (as ``sonae up`` prints them)."""
        return {label: url for label, url in service_addresses(self.settings).items()
                if any(label in spec.addresses for spec in registry.SERVICES
                       if spec.name in self.names)}

    @property
    def runs_decisions(self) -> bool:
        """Whether the evacuation decision service is among them."""
        return "evacuation" in self.names

    @property
    def runs_tracker(self) -> bool:
        """Whether the shelter tracker is among them."""
        return any(name in self.names for name in ("shelter-tracker", "shelter_tracker"))

    def crashing(self) -> list[str]:
        """Services that have exited and been restarted."""
        return [name for name, count in self.supervisor.restarts().items() if count > 0]


def _specs(settings: Settings, names: Iterable[str] | None) -> list[ProcessSpec]:
    wanted = None if names is None else set(names)
    return [spec for spec in service_process_specs(settings)
            if wanted is None or spec.name in wanted]


@contextlib.asynccontextmanager
async def running_services(base: Settings, namespace: str, *,
                           names: Iterable[str] | None = None,
                           log_path: Path | None = None) -> AsyncIterator[DrillServices]:
    """Run the registered services (or those of ``names`` that are registered) for
    ``namespace`` during the block; stop them (SIGTERM, then SIGKILL) when it ends."""
    settings = drill_settings(base, namespace)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    specs = _specs(settings, names)
    if not specs:
        raise ServicesFailed(f"none of the services {sorted(names or [])} is registered yet "
                             "(sonae/registry.py)")
    await ensure_topics(settings)
    path = log_path if log_path is not None else settings.data_dir / "services.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        supervisor = Supervisor(specs, out=out, grace=10.0)
        running = DrillServices(settings, tuple(s.name for s in specs), path, supervisor)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(supervisor.run(), name=f"drill-services-{namespace}")
            try:
                yield running
            finally:
                supervisor.stop()
