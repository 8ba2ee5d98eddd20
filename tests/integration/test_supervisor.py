"""The supervisor restarts crashed services, prefixes their output, and stops them all."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

from infra.embedded.processes import process_alive
from infra.supervisor import Backoff, ProcessSpec, Supervisor
from tests.support import wait_for

_CRASH_ONCE = """
import pathlib, sys, time
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.write_text("crashed")
    print("crashing on purpose", flush=True)
    sys.exit(3)
print("steady", flush=True)
time.sleep(120)
"""

_IGNORE_TERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("stubborn", flush=True)
time.sleep(120)
"""


async def test_crashed_service_is_restarted_and_output_prefixed(tmp_path: Path) -> None:
    """A service that exits is started again after its backoff, with prefixed output."""
    out = io.StringIO()
    sup = Supervisor(
        [ProcessSpec("flaky", [sys.executable, "-c", _CRASH_ONCE, str(tmp_path / "m")])],
        backoff=Backoff(initial=0.1, maximum=0.2),
        out=out,
    )
    runner = asyncio.create_task(sup.run())
    try:
        await wait_for(lambda: "steady" in out.getvalue(), timeout=15, what="restart")
        assert sup.restarts() == {"flaky": 1}
        lines = out.getvalue().splitlines()
        assert "flaky | crashing on purpose" in lines
        assert any(line.startswith("flaky | exited with status 3") for line in lines)
    finally:
        sup.stop()
        await asyncio.wait_for(runner, 15)


async def test_stop_terminates_every_process_and_kills_stubborn_ones(tmp_path: Path) -> None:
    """Stop sends SIGTERM, then SIGKILL after the grace period; nothing survives."""
    out = io.StringIO()
    sup = Supervisor(
        [
            ProcessSpec("polite", [sys.executable, "-c", "import time; print('up', flush=True); "
                                   "time.sleep(120)"]),
            ProcessSpec("stubborn", [sys.executable, "-c", _IGNORE_TERM]),
        ],
        grace=1.0,
        out=out,
    )
    runner = asyncio.create_task(sup.run())
    # Names are padded to a common width so the columns line up.
    await wait_for(lambda: "stubborn | stubborn" in out.getvalue()
                   and "polite   | up" in out.getvalue(), timeout=15, what="both services up")
    pids = [p for p in sup.pids().values() if p is not None]
    assert len(pids) == 2
    sup.stop()
    await asyncio.wait_for(runner, 15)
    assert not any(process_alive(pid) for pid in pids)


def test_backoff_doubles_up_to_its_maximum() -> None:
    """Restart delays double from the initial value and stop at the maximum."""
    b = Backoff(initial=0.5, maximum=4.0)
    assert [b.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


async def test_hold_stops_every_process_until_release_starts_them_again() -> None:
    """A hold stops every process (a stubborn one killed after the grace) and keeps them
    down, counting no failure; release starts each again at once."""
    out = io.StringIO()
    sup = Supervisor(
        [
            ProcessSpec("polite", [sys.executable, "-c", "import time; print('up', flush=True); "
                                   "time.sleep(120)"]),
            ProcessSpec("stubborn", [sys.executable, "-c", _IGNORE_TERM]),
        ],
        backoff=Backoff(initial=30.0, maximum=30.0),  # a restart counted as failure would wait
        out=out,
    )
    runner = asyncio.create_task(sup.run())
    try:
        await wait_for(lambda: all(sup.pids().values()), timeout=15, what="both started")
        first = dict(sup.pids())
        await wait_for(lambda: "stubborn" in out.getvalue(), timeout=15, what="stubborn up")
        await sup.hold(grace=0.5)
        assert not any(process_alive(pid) for pid in first.values())
        await wait_for(lambda: not any(sup.pids().values()), timeout=5, what="both down")
        assert "exited with status" not in out.getvalue()  # a hold is not a crash
        sup.release()
        await wait_for(lambda: all(sup.pids().values()), timeout=15, what="both started again")
        assert all(sup.pids()[name] != first[name] for name in first)
        assert sup.restarts() == {"polite": 1, "stubborn": 1}
    finally:
        sup.stop()
        await asyncio.wait_for(runner, 30)
