"""The one place a service, and each command a package adds to ``sonae``, is registered.

``sonae up`` runs every registered service as its own supervised process, in
the order given here, and stops them in reverse order. Each service package
exposes ``main(settings) -> None`` (blocking until SIGTERM) in the module named
by ``entrypoint``; ``sonae service run NAME`` is the process command line, in
the embedded stack and in each production container alike.

A package contributes subcommands to ``sonae`` by naming click commands in
``commands`` (``"package.module:attribute"``): a service in its spec, a package
that runs no process of its own (the field client, tokens) in :data:`TOOLS`.
This package is the composition root: the only code that imports every service.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import click

if TYPE_CHECKING:
    from infra.settings import Settings


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service."""

    name: str
    entrypoint: str  # "package.module:function", called with the process Settings
    description: str
    # SONAE_* settings the service cannot run without (checked by the compose test).
    requires: frozenset[str] = frozenset({"SONAE_KAFKA_BOOTSTRAP", "SONAE_DATABASE_URL"})
    # Addresses to print after start-up: label -> settings attribute holding the port.
    addresses: Mapping[str, str] = field(default_factory=dict)
    # click commands the package adds to `sonae`, as "package.module:attribute".
    commands: tuple[str, ...] = ()
    # The settings attribute of the port that answers GET /healthz; None: the process
    # listens on no port and writes a health beacon instead (infra.health).
    health_port: str | None = None

    def load(self) -> Callable[[Settings], None]:
        """Import and return the service's main function."""
        module_name, _, func = self.entrypoint.partition(":")
        module = importlib.import_module(module_name)
        return cast("Callable[[Settings], None]", getattr(module, func))


# Start order: producers of input first, consumers after; stop is the reverse.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        name="intake",
        entrypoint="services.intake.main:main",
        description="Field reports, shelter status, hazard observations and CAP in; "
                    "durable outbox to Kafka",
        requires=frozenset({"SONAE_KAFKA_BOOTSTRAP", "SONAE_DATABASE_URL",
                            "SONAE_TOKEN_SECRET"}),
        addresses={"intake": "intake_port"},
        health_port="intake_port",
    ),
    ServiceSpec(
        name="jma-feed",
        entrypoint="services.jma_feed.main:main",
        description="JMA disaster-prevention XML Atom feeds → intake's POST /v1/jma "
                    "(idle unless SONAE_JMA_FEED_ENABLED)",
        requires=frozenset({"SONAE_KAFKA_BOOTSTRAP", "SONAE_DATABASE_URL",
                            "SONAE_TOKEN_SECRET"}),
    ),
    ServiceSpec(
        name="recorder",
        entrypoint="services.recorder.main:main",
        description="Every event into the PostgreSQL event store once, with projections",
        commands=("services.recorder.cli:events", "services.recorder.cli:rehydrate",
                  "services.recorder.cli:people"),
    ),
    ServiceSpec(
        name="shelter-tracker",
        entrypoint="services.shelter_tracker.main:main",
        description="Shelter state machine, capacity and fuel alerts, area summaries",
        requires=frozenset({"SONAE_KAFKA_BOOTSTRAP"}),
    ),
    ServiceSpec(
        name="evacuation",
        entrypoint="services.evacuation.main:main",
        description="Rules over hazards, reports and shelters → recommendations; HQ "
                    "commands → orders on the 5-level scale",
        requires=frozenset({"SONAE_KAFKA_BOOTSTRAP"}),
    ),
    ServiceSpec(
        name="gateway",
        entrypoint="services.gateway.main:main",
        description="Common operating picture over websockets (snapshot, deltas, resume); "
                    "dashboard and public portal",
        requires=frozenset({"SONAE_KAFKA_BOOTSTRAP", "SONAE_TOKEN_SECRET"}),
        addresses={"dashboard": "dashboard_port", "websocket": "gateway_port"},
        health_port="dashboard_port",
    ),
    ServiceSpec(
        name="broadcaster",
        entrypoint="services.broadcaster.main:main",
        description="Orders and shelter changes to public messages in ja/en/zh/ko, CAP 1.2 "
                    "feed, signed webhooks",
        addresses={"cap feed": "broadcaster_port"},
        health_port="broadcaster_port",
    ),
)



@dataclass(frozen=True)
class ToolSpec:
    """A package that runs no service process but adds commands to ``sonae``."""

    name: str
    description: str
    commands: tuple[str, ...]


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="tokens",
        description="Bearer tokens for field teams, shelter staff, sensors and HQ",
        commands=("services.common.token_cli:token",),
    ),
    ToolSpec(
        name="push",
        description="Web Push for residents: the VAPID key pair (sonae push keys)",
        commands=("services.common.push_cli:push",),
    ),
    ToolSpec(
        name="field-client",
        description="Field reports, shelter status, household check-in/out and households "
                    "at home from a terminal, with a local outbox",
        commands=("services.field_client.cli:report", "services.field_client.cli:shelter_status",
                  "services.field_client.cli:checkin", "services.field_client.cli:checkout",
                  "services.field_client.cli:transfer", "services.field_client.cli:at_home"),
    ),
    ToolSpec(
        name="drill",
        description="Record, replay, verify and report on drills in their own namespaces",
        commands=("services.drill.cli:drill",),
    ),
)


def load_command(reference: str) -> click.Command:
    """The click command named by ``"package.module:attribute"``."""
    module_name, _, attribute = reference.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{reference} is not a click command")
    return command


def commands() -> list[click.Command]:
    """Every command the registered services and tools add to ``sonae``, in order."""
    refs = [ref for spec in SERVICES for ref in spec.commands]
    refs += [ref for tool in TOOLS for ref in tool.commands]
    return [load_command(ref) for ref in refs]


class UnknownService(KeyError):
    """No service of that name is registered."""

    def __str__(self) -> str:
        known = ", ".join(s.name for s in SERVICES) or "none yet"
        return f"no service named {self.args[0]!r} is registered (known: {known})"


def get(name: str) -> ServiceSpec:
    """The registered service called ``name``."""
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise UnknownService(name)
