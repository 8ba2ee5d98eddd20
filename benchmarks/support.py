"""What several benchmarks share: their own embedded stack, the services as their own
processes, and a lean HTTP load client.

Intake is measured as it is deployed: ``services.intake.main`` in a process of its
own (the service runtime, its collector settings, its own core when one is free),
unthrottled (``SONAE_INTAKE_RATE_*``), so the figures are the service's and not
those of a benchmark script sharing its event loop.

The load client speaks just enough HTTP/1.1 for ``POST`` with keep-alive and a
``Content-Length`` answer (which is all intake sends), so that generating the load
costs a small fraction of what serving it does: with aiohttp's client on the same
two cores, the client took about as much CPU as intake itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.db.migrate import migrate_database
from infra.embedded.broker import EmbeddedBroker
from infra.embedded.postgres import EmbeddedPostgres
from infra.embedded.processes import free_port, spawn, stop_group
from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
_INTAKE = ("from infra.settings import load_settings; from services.intake.main import main; "
           "main(load_settings())")
_GATEWAY = ("from infra.settings import load_settings; from services.gateway.main import main; "
            "main(load_settings())")


_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Stack:
    bootstrap: str
    dsn: str
    postgres_pid: int
    """The postmaster, parent of every backend."""
    broker_pid: int


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def postgres_cpu(postmaster: int) -> float:
    """CPU seconds of the postmaster and its live children (backends, WAL writer, ...).

    Children, not a process group: PostgreSQL puts each child in a group of its own.
    """
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


@contextlib.asynccontextmanager
async def embedded_stack(durable: bool) -> AsyncIterator[Stack]:
    """An embedded broker and PostgreSQL of the benchmark's own."""
    with tempfile.TemporaryDirectory(prefix="sonae-bench-") as tmp:
        broker = EmbeddedBroker(port=free_port(), log_path=Path(tmp) / "tansu.log")
        postgres = EmbeddedPostgres(data_dir=Path(tmp) / "pg", port=free_port(),
                                    durable=durable)
        await asyncio.to_thread(broker.start)
        try:
            await asyncio.to_thread(postgres.start)
            try:
                await migrate_database(postgres.url)
                assert postgres.pid is not None and broker.pid is not None
                yield Stack(broker.bootstrap, postgres.url, postgres.pid, broker.pid)
            finally:
                await asyncio.to_thread(postgres.stop)
        finally:
            await asyncio.to_thread(broker.stop)


@dataclass(frozen=True)
class RunningIntake:
    url: str
    pid: int


@contextlib.asynccontextmanager
async def _service_process(code: str, env: dict[str, str], health_port: int, name: str,
                           log: Path) -> AsyncIterator[int]:
    """A service process (``code`` run by Python), once GET /healthz on ``health_port`` is
    200; yields its pid and stops its process group afterwards."""
    with log.open("ab") as out:
        proc = spawn([sys.executable, "-c", code], log=out, cwd=ROOT,
                     env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not healthy in 60 s; see {log}")
            with contextlib.suppress(OSError, ConnectionError, ValueError):
                client = await HttpClient.connect("127.0.0.1", health_port)
                try:
                    status, _ = await client.request("GET", "/healthz", {})
                finally:
                    client.close()
                if status == 200:
                    break
            await asyncio.sleep(0.1)
        yield proc.pid
    finally:
        await asyncio.to_thread(stop_group, proc, timeout=15)


@contextlib.asynccontextmanager
async def intake_process(settings: Settings, log: Path) -> AsyncIterator[RunningIntake]:
    """``services.intake.main`` for ``settings``, unthrottled, answering /healthz."""
    port = free_port()
    env = {**settings.env(), "SONAE_INTAKE_PORT": str(port), "SONAE_HOST": "127.0.0.1",
           "SONAE_INTAKE_RATE_PER_SECOND": "1000000", "SONAE_INTAKE_RATE_BURST": "1000000",
           "SONAE_LOG_LEVEL": "WARNING"}
    async with _service_process(_INTAKE, env, port, "intake", log) as pid:
        yield RunningIntake(f"http://127.0.0.1:{port}", pid)


@dataclass(frozen=True)
class RunningGateway:
    websocket_url: str
    pid: int
    dashboard_url: str = ""
    """The gateway's HTTP side (page, public documents), ``http://host:port``."""


@contextlib.asynccontextmanager
async def gateway_process(settings: Settings, log: Path) -> AsyncIterator[RunningGateway]:
    """``services.gateway.main`` for ``settings``, once its /healthz says it caught up."""
    ws_port, http_port = free_port(), free_port()
    env = {**settings.env(), "SONAE_GATEWAY_PORT": str(ws_port),
           "SONAE_DASHBOARD_PORT": str(http_port), "SONAE_HOST": "127.0.0.1",
           "SONAE_LOG_LEVEL": "WARNING"}
    async with _service_process(_GATEWAY, env, http_port, "the gateway", log) as pid:
        yield RunningGateway(f"ws://127.0.0.1:{ws_port}", pid, f"http://127.0.0.1:{http_port}")


class HttpClient:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, host: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self._host = host
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> HttpClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(f"{host}:{port}", reader, writer)

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes = b"") -> tuple[int, bytes]:
        """Send one request and read its answer: (status, body)."""
        head = [f"{method} {path} HTTP/1.1", f"Host: {self._host}",
                f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        status_line = await self._reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while (line := await self._reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise ValueError("chunked answers are not supported by the load client")
        return status, await self._reader.readexactly(length)

    def close(self) -> None:
        self._writer.close()


def _serve_null(port: int, ready: Any) -> None:
    """Child process: an aiohttp app whose ``POST /v1/reports`` reads the body and answers
    202 with a small JSON body — the HTTP layer alone, intake's ceiling on this machine."""
    from aiohttp import web

    async def accept(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"status": "accepted", "bytes": len(body)}, status=202)

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/v1/reports", accept)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(serve())


@contextlib.asynccontextmanager
async def null_http_process() -> AsyncIterator[RunningIntake]:
    """The bare aiohttp server of :func:`_serve_null` in a process of its own."""
    context = mp.get_context("spawn")
    ready = context.Event()
    port = free_port()
    proc = context.Process(target=_serve_null, args=(port, ready), daemon=True)
    proc.start()
    try:
        if not await asyncio.to_thread(ready.wait, 30):
            raise RuntimeError("the bare HTTP server did not start in 30 s")
        assert proc.pid is not None
        yield RunningIntake(f"http://127.0.0.1:{port}", proc.pid)
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.join, 10)
