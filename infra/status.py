"""``sonae status``: is each part up, does each service serve, how far behind is each group.

A service is up when it serves (:mod:`infra.health`: its ``/healthz`` answers 200,
or its beacon says it is in its consumer group), not when its process exists.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from aiokafka.structs import TopicPartition

from infra.db.migrate import current_version
from infra.embedded.processes import process_alive
from infra.health import check_service
from infra.kafka import clients
from infra.kafka.compat import end_offsets
from infra.redact import mask_passwords
from infra.settings import KafkaProfile, Settings
from infra.stackstate import StackState
from schemas.topics import CATALOGUE, qualified


@dataclass
class PartStatus:
    """One row of the status table."""

    name: str
    ok: bool
    detail: str


@dataclass
class StatusReport:
    """Everything ``sonae status`` found."""

    parts: list[PartStatus] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)  # consumer group -> total lag

    @property
    def healthy(self) -> bool:
        """True when every part is up."""
        return bool(self.parts) and all(p.ok for p in self.parts)

    @property
    def failing(self) -> list[str]:
        """The names of the parts that are not up (what ``sonae status`` names)."""
        return [p.name for p in self.parts if not p.ok]


def probe_settings(bootstrap: str, profile: str = KafkaProfile.EMBEDDED.value) -> Settings:
    """Settings for the probes' Kafka clients, built from what ``sonae up`` recorded.

    ``sonae status`` reads only the data directory (like ``sonae down``): the shell
    that asks may lack the variables the stack runs with (``SONAE_DEVELOPMENT`` after
    ``make demo``), and the probes need no token secret. So no environment is read
    here; the values come from the state file a validated ``sonae up`` wrote.
    """
    return Settings.model_construct(kafka_bootstrap=bootstrap,
                                    kafka_profile=KafkaProfile(profile))


async def service_parts(state: StackState) -> list[PartStatus]:
    """One row per service: serving (its /healthz or its beacon), or why not."""
    names = sorted(state.services)
    checks = await asyncio.gather(*(
        check_service(state.health.get(name, {}), state.services[name]) for name in names))
    out = []
    for name, result in zip(names, checks, strict=True):
        pid = state.services[name]
        where = f"pid {pid}: " if pid else ""
        out.append(PartStatus(f"service {name}", result.serving, where + result.detail))
    return out


async def collect_status(data_dir: Path, *, kafka: str | None = None,
                         database_url: str | None = None,
                         namespace: str | None = None) -> StatusReport:
    """Probe the stack described by the state file in ``data_dir`` (or the given addresses)."""
    report = StatusReport()
    state = StackState.read(data_dir)
    bootstrap = kafka or (state.kafka_bootstrap if state else Settings.model_fields[
        "kafka_bootstrap"].default)
    dsn = database_url or (state.database_url if state else Settings.model_fields[
        "database_url"].default)
    if namespace is None:
        namespace = state.namespace if state else ""
    if state is not None:
        alive = process_alive(state.pid)
        ready = state.status == "ready"
        report.parts.append(PartStatus("sonae up", alive and ready,
                                       f"pid {state.pid}, {state.status}"
                                       if alive else f"pid {state.pid} gone"))
    elif not (kafka or database_url):
        report.parts.append(PartStatus("sonae up", False,
                                       f"no stack running on {data_dir}"))
    target = probe_settings(bootstrap, state.kafka_profile if state else "embedded")
    report.parts.append(await _kafka_part(target))
    report.parts.append(await _postgres_part(dsn))
    if state is not None:
        report.parts.extend(await service_parts(state))
    kafka_ok = any(p.name == "kafka" and p.ok for p in report.parts)
    if kafka_ok:
        try:
            report.lag = await asyncio.wait_for(consumer_lag(target, namespace), 15)
        except Exception as exc:
            report.parts.append(PartStatus("consumer lag", False, f"unavailable: {exc!r}"))
    return report


async def _kafka_part(settings: Settings) -> PartStatus:
    bootstrap = settings.kafka_bootstrap
    admin = clients.admin(settings, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        topics = await asyncio.wait_for(admin.list_topics(), 5)
        return PartStatus("kafka", True, f"{bootstrap}, {len(topics)} topics")
    except Exception as exc:
        return PartStatus("kafka", False, f"{bootstrap} unreachable: {exc or type(exc).__name__}")
    finally:
        await admin.close()


async def _postgres_part(dsn: str) -> PartStatus:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn), 5)
    except Exception as exc:
        return PartStatus("postgresql", False,
                          mask_passwords(f"{dsn} unreachable: {exc or type(exc).__name__}"))
    try:
        version = await current_version(conn)
        return PartStatus("postgresql", True, f"{mask_passwords(dsn)}, schema version {version}")
    finally:
        await conn.close()


async def consumer_lag(settings: Settings, namespace: str) -> dict[str, int]:
    """Total lag per consumer group over the namespace's catalogue topics."""
    topics = {qualified(spec.name, namespace) for spec in CATALOGUE.values()}
    admin = clients.admin(settings, request_timeout_ms=5000)
    consumer = clients.consumer(settings)
    await admin.start()
    await consumer.start()
    try:
        present = [t for t in await admin.list_topics() if t in topics]
        partitions = [
            TopicPartition(t, p)
            for t in present
            for p in sorted(consumer.partitions_for_topic(t) or set())
        ]
        if not partitions:
            return {}
        ends = await end_offsets(consumer, partitions, profile=settings.kafka_profile)
        groups = [g[0] for g in await admin.list_consumer_groups()]
        lag: dict[str, int] = {}
        for group in sorted(groups):
            # The embedded broker needs the partitions spelled out.
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            total = 0
            seen = False
            for tp, meta in committed.items():
                if meta is not None and meta.offset >= 0:
                    seen = True
                    total += max(0, ends.get(tp, 0) - meta.offset)
            if seen:
                lag[group] = total
        return lag
    finally:
        await consumer.stop()
        await admin.close()


def render_status(report: StatusReport) -> None:
    """Print the report as tables."""
    from rich.console import Console
    from rich.table import Table

    table = Table("part", "state", "detail")
    for p in report.parts:
        table.add_row(p.name, "[green]up[/]" if p.ok else "[red]DOWN[/]", p.detail)
    console = Console()
    console.print(table)
    if report.lag:
        lag = Table("consumer group", "lag")
        for group, value in sorted(report.lag.items()):
            lag.add_row(group, str(value))
        console.print(lag)
    if report.healthy:
        console.print("[green]healthy[/]")
    else:
        console.print(f"[red]unhealthy[/]: not serving: {', '.join(report.failing)}")
