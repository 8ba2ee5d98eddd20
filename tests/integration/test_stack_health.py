"""`sonae up` says ready, and `sonae status` healthy, only when every service serves."""

from __future__ import annotations

import os
import re
import signal
import urllib.error
import urllib.request

import pytest

from tests.support.stack import UpProcess, run_sonae, stack_env, wait_until

pytestmark = pytest.mark.integration


def _answers(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _plain_shell() -> dict[str, str]:
    """A shell with none of the stack's SONAE_* variables (no SONAE_DEVELOPMENT)."""
    env = stack_env()
    return {k: v for k, v in env.items() if not k.startswith("SONAE_")}


def test_ready_means_serving_and_status_names_what_does_not_serve(up: UpProcess) -> None:
    state = up.wait_ready()
    # The moment the ready line is out, every HTTP service answers its /healthz.
    health = state["health"]
    assert isinstance(health, dict)
    for name in ("intake", "gateway", "broadcaster"):
        assert _answers(health[name]["http"]) == 200, name
    assert re.search(r"ready in \d+\.\d s", up.output()), up.output()
    assert state["status"] == "ready"

    status = run_sonae("status", "--data-dir", str(up.data_dir), env=_plain_shell())
    assert status.returncode == 0, status.stdout + status.stderr
    assert "unhealthy" not in status.stdout
    for name in ("recorder", "shelter-tracker", "evacuation"):
        assert re.search(rf"service {name}.*member", status.stdout.replace("\n", " ")), \
            status.stdout

    services = state["services"]
    assert isinstance(services, dict)
    for name in ("recorder", "intake"):
        pid = int(services[name])
        os.kill(pid, signal.SIGSTOP)  # alive, but neither consuming nor answering
        try:
            def not_serving(name: str = name) -> bool:
                result = run_sonae("status", "--data-dir", str(up.data_dir),
                                   env=_plain_shell())
                return result.returncode == 1 and bool(re.search(
                    rf"not serving: .*service {name}", result.stdout.replace("\n", " ")))
            wait_until(not_serving, 60, f"status to name {name} as not serving")
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: run_sonae("status", "--data-dir", str(up.data_dir),
                                     env=_plain_shell()).returncode == 0,
                   90, f"status healthy again after {name} resumed")
