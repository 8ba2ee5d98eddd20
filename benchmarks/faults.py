"""Fault injection: SIGKILL each part of a running `sonae up` under steady field traffic.

A stack (embedded broker and PostgreSQL) runs through ``sonae up`` in a temporary
data directory. Reports are posted to intake at a steady rate (``--rate``, 40/s),
each resent with the same body (the same ``client_report_id``) until intake
answers 202, as a field client does. Meanwhile an HQ websocket client watches the
picture. Each service in turn, then the broker, then PostgreSQL, is killed with
SIGKILL; nobody restarts anything by hand. For each fault it prints:

- acknowledged: reports intake acknowledged from this kill to the next one;
- stored: of those, how many are in the event store exactly once (``report.accepted``);
- duplicated: stored more than once (two events for one report);
- lost: acknowledged but not stored once traffic stopped and the stack drained;
- healthy: seconds from the kill until ``sonae status`` is healthy again;
- delta: seconds from the kill until the websocket client receives the first delta
  carrying a report acknowledged after the kill.

    .venv/bin/python benchmarks/faults.py                 # one round, every fault
    .venv/bin/python benchmarks/faults.py --runs 3        # figures with their spread
    .venv/bin/python benchmarks/faults.py --faults broker --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from websockets.asyncio.client import connect

from infra.embedded.broker import EmbeddedBroker
from infra.embedded.postgres import EmbeddedPostgres
from infra.embedded.processes import free_port, process_alive
from infra.settings import load_settings
from infra.status import collect_status
from services.common.auth import Role, issue_token

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("intake", "jma-feed", "recorder", "shelter-tracker", "evacuation", "gateway",
            "broadcaster")
FAULTS = (*SERVICES, "broker", "postgres")


@dataclass
class Report:
    client_id: str
    sent_at: float
    report_id: str | None = None
    acked_at: float | None = None


@dataclass
class Fault:
    target: str
    killed_at: float
    healthy_after: float | None = None
    delta_after: float | None = None
    window_end: float = float("inf")
    counts: dict[str, int] = field(default_factory=dict)
    note: str = ""
    """What `sonae up` said about the heal (the republish), for a broker fault."""


class Traffic:
    """Posts reports at a steady rate, each until acknowledged."""

    def __init__(self, url: str, token: str, rate: float) -> None:
        self.url = url
        self.token = token
        self.rate = rate
        self.reports: list[Report] = []
        self.by_id: dict[str, Report] = {}
        self.stop = asyncio.Event()
        self.pending = 0
        self.drained = asyncio.Event()  # set once stopped and every report acknowledged

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http, asyncio.TaskGroup() as tg:
            interval = 1.0 / self.rate
            next_at = time.monotonic()
            while not self.stop.is_set():
                report = Report(str(uuid.uuid4()), time.monotonic())
                self.reports.append(report)
                self.pending += 1
                tg.create_task(self._deliver(http, report))
                next_at += interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), max(0.0, next_at - time.monotonic()))

    async def _deliver(self, http: aiohttp.ClientSession, report: Report) -> None:
        body = {"client_report_id": report.client_id, "category": "flooding", "severity": 3,
                "location": {"lat": 35.6975, "lon": 139.7705}, "description": "冠水 (fault run)",
                "reporter": {"team": "kanda-team-1"}}
        headers = {"Authorization": f"Bearer {self.token}"}
        delay = 0.2
        while True:  # a field client never gives up on an unacknowledged report
            try:
                async with http.post(self.url, json=body, headers=headers) as r:
                    if r.status == 202:
                        answer: dict[str, Any] = await r.json()
                        report.report_id = str(answer["report_id"])
                        report.acked_at = time.monotonic()
                        self.by_id[report.report_id] = report
                        self.pending -= 1
                        if self.stop.is_set() and self.pending == 0:
                            self.drained.set()
                        return
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            await asyncio.sleep(delay)  # the client's resend interval
            delay = min(delay * 2, 2.0)


class Watcher:
    """An HQ websocket client: when each report first appeared in a delta."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.seen: dict[str, float] = {}
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                async with connect(self.url, open_timeout=5) as ws:
                    await ws.send(json.dumps({"type": "hello", "token": self.token}))
                    while not self.stop.is_set():
                        try:
                            raw = await asyncio.wait_for(ws.recv(), 1.0)
                        except TimeoutError:
                            continue
                        message = json.loads(raw)
                        if message.get("type") == "delta":
                            now = time.monotonic()
                            for change in message["changes"]:
                                if change["kind"] == "report":
                                    self.seen.setdefault(change["id"], now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.2)


class Up:
    """``sonae up`` in a temporary data directory, as a child process."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SONAE_")}
        self.env.update({"PYTHONUNBUFFERED": "1", "SONAE_DEVELOPMENT": "true",
                         "SONAE_INTAKE_RATE_PER_SECOND": "100000",
                         "SONAE_INTAKE_RATE_BURST": "100000"})
        for name in ("INTAKE", "GATEWAY", "DASHBOARD", "BROADCASTER"):
            self.env[f"SONAE_{name}_PORT"] = str(free_port())
        self.log = data_dir.parent / "up.log"
        self._logfile = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sonae.cli", "up", "--data-dir", str(data_dir),
             "--kafka-port", str(free_port()), "--postgres-port", str(free_port())],
            cwd=ROOT, env=self.env, stdout=self._logfile, stderr=subprocess.STDOUT)

    def state(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.data_dir / "stack.json").read_text())
        return loaded

    async def ready(self) -> None:
        deadline = time.monotonic() + 120
        while "Sonae is up" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"sonae up did not come up; see {self.log}")
            await asyncio.sleep(0.2)

    def pid_of(self, target: str) -> int:
        state = self.state()
        if target == "broker":
            return int(state["embedded_kafka_pid"])
        if target == "postgres":
            return int(state["embedded_postgres_pid"])
        return int(state["services"][target])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._logfile.close()


async def _healthy(data_dir: Path) -> bool:
    try:
        return (await collect_status(data_dir)).healthy
    except Exception:
        return False


async def _until_healthy(up: Up, target: str, killed: int, since: float,
                         limit: float) -> float | None:
    """Seconds until the killed part runs again (a new pid) and the stack is healthy."""
    while time.monotonic() - since < limit:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if up.pid_of(target) != killed and await _healthy(up.data_dir):
                return time.monotonic() - since
        await asyncio.sleep(0.25)
    return None


async def one_round(faults: list[str], rate: float, settle: float, limit: float) -> list[Fault]:
    """Run a stack, inject ``faults`` in order under traffic; return each fault's figures."""
    secret = load_settings(development=True).token_secret.get_secret_value()
    field_token = issue_token(secret, Role.FIELD, "kanda-team-1", timedelta(hours=2),
                              areas=["kanda-koen"])
    hq = issue_token(secret, Role.HQ, "hq-duty-officer", timedelta(hours=2))
    with tempfile.TemporaryDirectory(prefix="sonae-faults-") as tmp:
        up = Up(Path(tmp) / "stack")
        try:
            await up.ready()
            intake = f"http://127.0.0.1:{up.env['SONAE_INTAKE_PORT']}/v1/reports"
            traffic = Traffic(intake, field_token, rate)
            watcher = Watcher(f"ws://127.0.0.1:{up.env['SONAE_GATEWAY_PORT']}/", hq)
            done: list[Fault] = []
            async with asyncio.TaskGroup() as tg:
                tg.create_task(traffic.run())
                tg.create_task(watcher.run())
                try:
                    await asyncio.sleep(settle)  # steady traffic before the first fault
                    for target in faults:
                        fault = await _inject(up, target, traffic, watcher, limit)
                        if done:
                            done[-1].window_end = fault.killed_at
                        done.append(fault)
                        await asyncio.sleep(settle)  # steady traffic after it healed
                finally:
                    traffic.stop.set()
                await _drain(traffic)
                counts = await _count(up.state()["database_url"], traffic, limit)
                watcher.stop.set()
            for fault in done:
                fault.counts = _attribute(fault, traffic, counts)
            return done
        finally:
            up.stop()


async def _inject(up: Up, target: str, traffic: Traffic, watcher: Watcher,
                  limit: float) -> Fault:
    pid = up.pid_of(target)
    os.kill(pid, signal.SIGKILL)
    fault = Fault(target, time.monotonic())
    # A delta for a report acknowledged after the kill: the whole path works again.
    deadline = fault.killed_at + limit
    healthy_task = asyncio.create_task(_until_healthy(up, target, pid, fault.killed_at, limit))
    while time.monotonic() < deadline:
        fresh = [watcher.seen[r.report_id] for r in traffic.reports
                 if r.acked_at is not None and r.acked_at > fault.killed_at
                 and r.report_id in watcher.seen]
        if fresh:
            fault.delta_after = min(fresh) - fault.killed_at
            break
        await asyncio.sleep(0.05)
    fault.healthy_after = await healthy_task
    if target == "broker":
        said = [line.strip() for line in up.log.read_text().splitlines()
                if line.startswith(("  rehydrate   the broker", "  republish", "  outbox"))]
        fault.note = "; ".join(said[-3:])
    if process_alive(pid):
        print(f"  warning: {target} (pid {pid}) still alive after SIGKILL", file=sys.stderr)
    return fault


async def _drain(traffic: Traffic) -> None:
    """Wait until every report sent has been acknowledged (they are resent until then)."""
    if traffic.pending == 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(traffic.drained.wait(), 120)


async def _count(dsn: str, traffic: Traffic, limit: float) -> dict[str, int]:
    """Stored ``report.accepted`` events per acknowledged report id, once the store caught
    up (or ``limit`` seconds passed without change)."""
    conn = await asyncpg.connect(dsn)
    try:
        wanted = [r.report_id for r in traffic.reports if r.report_id is not None]
        last: dict[str, int] = {}
        quiet_since = time.monotonic()
        while True:
            rows = await conn.fetch(
                "select envelope->'payload'->>'report_id' as id, count(*) as n from events "
                "where type = 'report.accepted' and envelope->'payload'->>'report_id' = "
                "any($1::text[]) group by 1", wanted)
            counts = {r["id"]: int(r["n"]) for r in rows}
            if len(counts) == len(set(wanted)):
                return counts
            if counts != last:
                last, quiet_since = counts, time.monotonic()
            elif time.monotonic() - quiet_since > limit:
                return counts
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def _attribute(fault: Fault, traffic: Traffic, counts: dict[str, int]) -> dict[str, int]:
    mine = {r.report_id for r in traffic.reports
            if r.report_id is not None and r.acked_at is not None
            and fault.killed_at <= r.acked_at < fault.window_end}
    return {"acknowledged": len(mine),
            "stored": sum(1 for r in mine if counts.get(r, 0) == 1),
            "duplicated": sum(1 for r in mine if counts.get(r, 0) > 1),
            "lost": sum(1 for r in mine if counts.get(r, 0) == 0)}


def raw_restarts(times: int = 3) -> dict[str, list[float]]:
    """The layer underneath: SIGKILL a bare Tansu / PostgreSQL and start it again on the
    same port (and data directory), timed until it accepts connections; no Sonae code."""
    out: dict[str, list[float]] = {"broker": [], "postgres": []}
    with tempfile.TemporaryDirectory(prefix="sonae-raw-") as tmp:
        broker = EmbeddedBroker(port=free_port(), log_path=Path(tmp) / "tansu.log")
        postgres = EmbeddedPostgres(data_dir=Path(tmp) / "pg", port=free_port())
        broker.start()
        postgres.start()
        try:
            for _ in range(times):
                for name, part in (("broker", broker), ("postgres", postgres)):
                    part.kill()
                    began = time.monotonic()
                    part.start()
                    out[name].append(time.monotonic() - began)
        finally:
            postgres.stop()
            broker.stop()
    return out


def _spread(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return (f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})")


def main() -> None:
    # The status probe's clients log every refused connection while a part is down.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--rate", type=float, default=40.0, help="reports per second")
    parser.add_argument("--faults", nargs="*", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds of steady traffic before each fault")
    parser.add_argument("--limit", type=float, default=120.0,
                        help="seconds a recovery may take before it counts as failed")
    args = parser.parse_args()
    rounds = []
    for run in range(args.runs):
        faults = asyncio.run(one_round(args.faults, args.rate, args.settle, args.limit))
        rounds.append(faults)
        print(f"run {run + 1}/{args.runs}")
        for f in faults:
            print(f"  {f.target:<15} acknowledged {f.counts['acknowledged']:>5}  stored "
                  f"{f.counts['stored']:>5}  duplicated {f.counts['duplicated']}  lost "
                  f"{f.counts['lost']}  healthy "
                  f"{'never' if f.healthy_after is None else f'{f.healthy_after:.1f} s'}  "
                  f"delta {'never' if f.delta_after is None else f'{f.delta_after:.1f} s'}"
                  + (f"\n    {f.note}" if f.note else ""), flush=True)
    raw = raw_restarts()
    print(f"\nraw restart after SIGKILL (3 runs): broker {_spread(raw['broker'])} s, "
          f"PostgreSQL {_spread(raw['postgres'])} s")
    print(f"summary over {args.runs} run(s) at {args.rate:.0f} reports/s "
          "(median (min–max) seconds from the SIGKILL)")
    print("| fault | acknowledged | stored once | duplicated | lost | healthy again "
          "| first new delta | healthy / raw restart |\n|---|---|---|---|---|---|---|---|")
    for i, target in enumerate(args.faults):
        runs = [r[i] for r in rounds]
        healthy = [f.healthy_after for f in runs if f.healthy_after is not None]
        delta = [f.delta_after for f in runs if f.delta_after is not None]
        never = sum(1 for f in runs if f.healthy_after is None)
        print(f"| {target} | {sum(f.counts['acknowledged'] for f in runs)} "
              f"| {sum(f.counts['stored'] for f in runs)} "
              f"| {sum(f.counts['duplicated'] for f in runs)} "
              f"| {sum(f.counts['lost'] for f in runs)} "
              f"| {_spread(healthy)}{f' ({never} never)' if never else ''} "
              f"| {_spread(delta)} "
              f"| {_ratio(healthy, raw.get(target, []))} |")


def _ratio(healed: list[float], raw: list[float]) -> str:
    if not healed or not raw:
        return "—"
    return f"{statistics.median(healed) / statistics.median(raw):.0f}×"


if __name__ == "__main__":
    main()
