"""`sonae up` brings the embedded stack up, reports it healthy, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from infra.embedded.processes import free_port, process_alive
from tests.support.stack import ROOT, UpProcess, run_sonae, stack_env, wait_until


def test_up_status_and_clean_stop_on_sigterm(up: UpProcess) -> None:
    """`sonae up` is healthy in `sonae status` and SIGTERM stops every process it started."""
    state = up.wait_ready()
    output = up.output()
    assert f"127.0.0.1:{up.kafka_port} (embedded Tansu)" in output
    assert re.search(r"migrations  \d+ applied", output), output
    status = run_sonae("status", "--data-dir", str(up.data_dir))
    assert status.returncode == 0, status.stdout + status.stderr
    assert "healthy" in status.stdout
    pids = [int(str(state["embedded_kafka_pid"])), int(str(state["embedded_postgres_pid"]))]
    assert all(process_alive(p) for p in pids)
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(30) == 0, up.output()
    assert "Sonae stopped." in up.output()
    assert not any(process_alive(p) for p in pids)
    assert not (up.data_dir / "stack.json").exists()


def test_sigkill_of_up_leaves_no_orphans(up: UpProcess) -> None:
    """If `sonae up` itself is killed, the broker and PostgreSQL die with it."""
    state = up.wait_ready()
    pids = [int(str(state["embedded_kafka_pid"])), int(str(state["embedded_postgres_pid"]))]
    up.proc.kill()
    up.proc.wait(10)
    wait_until(lambda: not any(process_alive(p) for p in pids), 20,
          "children to exit after parent death")


def test_second_up_on_same_data_dir_is_refused(up: UpProcess) -> None:
    """A second `sonae up` on a data directory in use is refused with what to do."""
    up.wait_ready()
    second = run_sonae("up", "--data-dir", str(up.data_dir), "--kafka-port", str(free_port()),
                    "--postgres-port", str(free_port()))
    assert second.returncode != 0
    assert "another `sonae up`" in second.stderr and "sonae down" in second.stderr


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    """A taken broker port fails fast with the port and the setting to change."""
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = run_sonae("up", "--data-dir", str(tmp_path / "d"), "--kafka-port", str(port),
                        "--postgres-port", str(free_port()))
    assert result.returncode == 1
    assert f"127.0.0.1:{port}: the port is in use" in result.stderr
    assert "SONAE_EMBEDDED_KAFKA_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_detached_up_and_down(tmp_path: Path) -> None:
    """`sonae up --detach` returns once ready and `sonae down` stops it completely.

    The stopping shell is an ordinary one (no development mode, no settings): stopping a
    development stack must not need the settings that running one does.
    """
    data = tmp_path / "bg"
    started = run_sonae("up", "--detach", "--data-dir", str(data), "--kafka-port",
                     str(free_port()), "--postgres-port", str(free_port()), timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    state = json.loads((data / "stack.json").read_text())
    pids = [state["pid"], state["embedded_kafka_pid"], state["embedded_postgres_pid"]]
    try:
        plain = {k: v for k, v in os.environ.items() if not k.startswith("SONAE_")}
        stopped = run_sonae("down", "--data-dir", str(data), env=plain)
        assert stopped.returncode == 0, stopped.stderr
        assert "Sonae stopped" in stopped.stdout
        wait_until(lambda: not any(process_alive(p) for p in pids), 20, "background stack to exit")
    finally:
        for pid in pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_bad_setting_names_the_variable(tmp_path: Path) -> None:
    """A bad SONAE_* variable stops `sonae up` at once, naming the variable."""
    env = stack_env() | {"SONAE_NAMESPACE": "Bad Name"}
    result = subprocess.run([sys.executable, "-m", "sonae.cli", "up", "--data-dir",
                             str(tmp_path / "x")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "SONAE_NAMESPACE" in result.stderr


async def test_store_rehydrates_an_empty_broker_on_the_next_up(tmp_path: Path) -> None:
    """Events recorded before the embedded broker was lost are back on it after `sonae up`."""
    import asyncpg

    from schemas.examples import example
    from tests.support import consume_events, produce_events, wait_for

    data = tmp_path / "durable"
    events = [example("report.submitted"), example("report.accepted")]
    first = UpProcess(data)
    try:
        state = first.wait_ready()
        await produce_events(f"127.0.0.1:{first.kafka_port}", "", events)
        conn = await asyncpg.connect(str(state["database_url"]))
        try:
            ids = [e.event_id for e in events]
            await wait_for(lambda: conn.fetchval(
                "select count(*) = $2 from events where event_id = any($1::uuid[])", ids,
                len(ids)), timeout=60, what="the recorder to store the events")
        finally:
            await conn.close()
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(60) == 0, first.output()
    finally:
        first.stop()
    second = UpProcess(data)
    try:
        second.wait_ready()
        assert "events republished from the event store" in second.output(), second.output()
        got = await consume_events(f"127.0.0.1:{second.kafka_port}", "", "reports", count=2)
        assert {e.event_id for e in got} == {e.event_id for e in events}
    finally:
        second.stop()
