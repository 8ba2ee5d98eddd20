"""A health beacon counts only while fresh, from the pid `sonae up` runs, and serving."""

from __future__ import annotations

import os
import time
from pathlib import Path

from infra.health import BEACON_FRESH_SECONDS, beacon_path, check_service, write_beacon

NO_SUCH_PID = int(Path("/proc/sys/kernel/pid_max").read_text())
"""pid_max itself is never a process id: pids run from 1 to pid_max - 1."""


async def test_a_fresh_serving_beacon_of_the_running_pid_is_serving(tmp_path: Path) -> None:
    path = beacon_path(tmp_path, "recorder", "drill.x")
    write_beacon(path, serving=True, detail="group g: member, 4 partitions")
    result = await check_service({"beacon": str(path)}, os.getpid())
    assert result.serving, result.detail
    assert path == tmp_path / "health" / "drill.x" / "recorder.json"


async def test_a_beacon_that_says_not_in_the_group_is_not_serving(tmp_path: Path) -> None:
    path = beacon_path(tmp_path, "recorder")
    write_beacon(path, serving=False, detail="group g: no partitions assigned")
    result = await check_service({"beacon": str(path)}, os.getpid())
    assert not result.serving
    assert result.detail == "group g: no partitions assigned"


async def test_a_stale_beacon_is_not_serving(tmp_path: Path) -> None:
    path = beacon_path(tmp_path, "evacuation")
    write_beacon(path, serving=True, detail="ok")
    later = time.time() + BEACON_FRESH_SECONDS + 1
    result = await check_service({"beacon": str(path)}, os.getpid(), now=later)
    assert not result.serving
    assert "old" in result.detail


async def test_a_beacon_left_by_another_pid_is_not_serving(tmp_path: Path) -> None:
    """The service's pid is alive but the beacon is another process's."""
    path = beacon_path(tmp_path, "evacuation")
    write_beacon(path, serving=True, detail="ok")
    # The parent is a live process other than this one (pid + 1 need not exist, and
    # then the check rightly answers "restarting" before it reads the beacon).
    service_pid = os.getppid()
    result = await check_service({"beacon": str(path)}, service_pid)
    assert not result.serving
    assert f"health beacon is from pid {os.getpid()}, not {service_pid}" == result.detail


async def test_a_missing_beacon_or_process_is_not_serving(tmp_path: Path) -> None:
    missing = await check_service({"beacon": str(tmp_path / "none.json")}, os.getpid())
    assert not missing.serving and "no health beacon" in missing.detail
    restarting = await check_service({"beacon": str(tmp_path / "none.json")}, None)
    assert not restarting.serving and restarting.detail == "restarting"


async def test_the_beacon_of_a_process_that_died_is_not_serving(tmp_path: Path) -> None:
    """A SIGKILLed service leaves a fresh beacon behind; its dead pid must not count."""
    path = beacon_path(tmp_path, "recorder")
    write_beacon(path, serving=True, detail="ok")
    result = await check_service({"beacon": str(path)}, NO_SUCH_PID)
    assert not result.serving and result.detail == "restarting"
