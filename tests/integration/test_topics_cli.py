"""`sonae topics create|list` applies the catalogue to a real broker, per namespace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from infra.settings import load_settings
from infra.topics import describe_topics, ensure_topics
from schemas.topics import CATALOGUE, qualified

ROOT = Path(__file__).resolve().parents[2]


async def test_ensure_topics_creates_catalogue_once(kafka_bootstrap: str, namespace: str) -> None:
    """Every catalogue topic is created with its partitions and cleanup policy, once."""
    settings = load_settings(kafka_bootstrap=kafka_bootstrap, namespace=namespace)
    created = await ensure_topics(settings)
    assert sorted(created) == sorted(qualified(n, namespace) for n in CATALOGUE)
    assert await ensure_topics(settings) == []
    infos = {t.name: t for t in await describe_topics(settings)}
    for name, spec in CATALOGUE.items():
        info = infos[qualified(name, namespace)]
        assert info.partitions == spec.partitions
        assert info.cleanup_policy == spec.cleanup


def test_topics_cli_lists_the_namespace(kafka_bootstrap: str, namespace: str) -> None:
    """The CLI creates a namespace's topics and lists them with their cleanup policy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONAE_")}
    env["SONAE_DEVELOPMENT"] = "true"  # a development machine: the built-in token secret
    args = ["--kafka", kafka_bootstrap, "--namespace", namespace]
    made = subprocess.run([sys.executable, "-m", "sonae.cli", "topics", "create", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert made.returncode == 0, made.stderr
    assert f"created {namespace}.shelters.state" in made.stdout
    listed = subprocess.run([sys.executable, "-m", "sonae.cli", "topics", "list", *args],
                            cwd=ROOT, env=env | {"COLUMNS": "200"}, capture_output=True,
                            text=True, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    state_line = next(line for line in listed.stdout.splitlines()
                      if f"{namespace}.shelters.state " in line)
    assert "compact" in state_line
