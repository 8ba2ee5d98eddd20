"""docker-compose.yml runs every registered service with what it needs (parsed, not run)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click
import yaml

from sonae import registry
from sonae.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _resolves(argv: list[str]) -> bool:
    """True when argv (after `sonae`) names a command of the CLI."""
    group: click.Command = cli
    for word in argv:
        if word.startswith("-"):
            break
        if isinstance(group, click.Group):
            sub = group.commands.get(word)
            if sub is None:
                return False
            group = sub
        else:
            break  # remaining words are arguments
    return not isinstance(group, click.Group)


def test_brokers_are_apache_kafka_kraft_and_postgres_16() -> None:
    """Kafka runs the official image in KRaft mode and PostgreSQL is version 16."""
    services = _compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["postgres"]["image"] == "postgres:16"
    for name in ("kafka", "postgres"):
        assert "healthcheck" in services[name], f"{name} has no health check"


def test_every_registered_service_has_a_container() -> None:
    """Each registered service runs `sonae service run NAME` with its required settings."""
    services = _compose()["services"]
    for spec in registry.SERVICES:
        assert spec.name in services, f"no container for registered service {spec.name!r}"
        container = services[spec.name]
        assert container["command"] == ["service", "run", spec.name]
        env = container["environment"]
        missing = sorted(spec.requires - set(env))
        assert not missing, f"{spec.name} lacks {missing}"
        assert env["SONAE_KAFKA_PROFILE"] == "apache"
        assert container["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_every_container_command_is_a_cli_command() -> None:
    """Every `sonae ...` a container runs is a command the CLI knows."""
    services = _compose()["services"]
    commands: list[list[str]] = []
    for name, svc in services.items():
        if name in ("kafka", "postgres"):
            continue
        cmd = svc["command"]
        if svc.get("entrypoint") == ["/bin/sh", "-c"]:
            for part in " ".join(cmd).split("&&"):
                words = shlex.split(part)
                assert words[0] == "sonae", f"{name} runs {words[0]!r}, not sonae"
                commands.append(words[1:])
        else:
            commands.append(list(cmd))
    assert commands
    for argv in commands:
        assert _resolves(argv), f"`sonae {' '.join(argv)}` is not a CLI command"


def test_resolver_rejects_unknown_commands() -> None:
    """The command check itself fails on a command the CLI does not have."""
    assert not _resolves(["topics", "explode"])
    assert not _resolves(["db"])
    assert _resolves(["db", "migrate"])
