"""A `sonae up` run as a child process of a test, on ports of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from infra.embedded.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def stack_env() -> dict[str, str]:
    """The test's environment without SONAE_* settings, with service ports of its own.

    It is a development stack (the built-in token secret, loopback), as `make demo` runs.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONAE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["SONAE_DEVELOPMENT"] = "true"
    # The services' own ports, so a stack under test never collides with another.
    for name in ("INTAKE", "GATEWAY", "DASHBOARD", "BROADCASTER"):
        env[f"SONAE_{name}_PORT"] = str(free_port())
    return env


def run_sonae(*args: str, timeout: float = 60,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``sonae ARGS`` as a child process, output captured (``env``: else :func:`stack_env`)."""
    return subprocess.run([sys.executable, "-m", "sonae.cli", *args], cwd=ROOT,
                          env=stack_env() if env is None else env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def wait_until(predicate: object, timeout: float, what: str) -> None:
    """Poll a (synchronous) predicate until it holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


READY_TIMEOUT = 150.0
"""How long a test waits for `sonae up` to say it is up: about 10 s on an idle 2-core
machine; a suite run beside other work on the same two cores was seen to take more
than 60 s, and a readiness wait is not what these tests measure."""


class UpProcess:
    """A `sonae up` running in the foreground as a child of the test."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.kafka_port = free_port()
        self.postgres_port = free_port()
        self.env = stack_env()
        self.log = data_dir.parent / f"{data_dir.name}-up.log"
        self._logfile = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sonae.cli", "up", "--data-dir", str(data_dir),
             "--kafka-port", str(self.kafka_port), "--postgres-port", str(self.postgres_port),
             *extra],
            cwd=ROOT, env=self.env, stdout=self._logfile, stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict[str, object]:
        try:
            wait_until(lambda: "Sonae is up" in self.output() or self.proc.poll() is not None,
                       timeout, "sonae up to be ready")
        except AssertionError as e:
            tail = "\n".join(self.output().splitlines()[-40:])
            raise AssertionError(f"{e} within {timeout:.0f} s; its output ends:\n{tail}") from None
        assert self.proc.poll() is None, self.output()
        state: dict[str, object] = json.loads((self.data_dir / "stack.json").read_text())
        return state

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._logfile.close()
