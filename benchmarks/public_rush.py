"""Public rush: the gateway's public snapshot over HTTP, beside a bare aiohttp handler.

    .venv/bin/python benchmarks/public_rush.py [--clients 64] [--seconds 5] [--rounds 2]

A ward-wide rush is residents' phones (or a CDN in front of the gateways)
asking for the public picture again and again. Starts an embedded broker and
PostgreSQL, writes a realistic picture (orders, every shelter's status, public
messages in four languages) to a fresh namespace, starts ``services.gateway.main``
as its own process, reads ``/v1/public/snapshot`` once (its bytes and ETag),
then starts a bare aiohttp server in a process of its own whose one handler
returns those very bytes (and 304 on a matching
``If-None-Match``): the HTTP layer alone, the ceiling on this machine.

For each target, ``--clients`` keep-alive connections send requests back to
back for ``--seconds`` in two modes:

- **revalidate**: ``If-None-Match`` with the tag → 304, no body (what a CDN or
  a phone with the page cached does);
- **cold**: no validator → 200 with the whole snapshot.

The bare server sends the gateway's very headers (ETag, Cache-Control and the
page's security headers), so both answers are the same bytes on the wire.

Prints requests/s per mode and target and the ratio gateway / bare (target ≥
50 %). The bare process runs with the services' collector settings
(``services.common.runtime.tune_gc``). Runs alternate which target goes first;
the best round of each is reported. The load client is
:class:`benchmarks.support.HttpClient` (just enough HTTP/1.1), so that making
the load costs less than serving it; all three processes share the machine's
cores, which the ratio cancels out only in part.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import HttpClient, embedded_stack, gateway_process
from infra.embedded.processes import free_port
from infra.kafka import clients as kafka_clients
from infra.settings import load_settings
from infra.topics import ensure_topics
from schemas.envelope import Envelope, new_event
from schemas.examples import example
from schemas.region import load_region
from services.common.bus import Publisher

PATH = "/v1/public/snapshot"
SECRET = "public-rush-benchmark-secret-0123456789abcdef"


def picture() -> list[Envelope]:
    """Orders for half the areas, a status for every shelter, a published message per order."""
    region = load_region()
    now = datetime.now(UTC)
    events: list[Envelope] = []
    statuses = ("open", "crowded", "full")
    for i, site in enumerate(s for s in region.sites if s.is_shelter):
        base = example("shelter.status_changed")
        body = {**base.payload.model_dump(mode="json"), "shelter_id": site.id,
                "name": site.names.ja,
                "status": statuses[i % 3], "previous_status": "closed"}
        events.append(new_event(type(base), body, occurred_at=now, source=base.source))
    for i, district in enumerate(region.districts[::2]):
        order = example("evacuation.order_issued")
        order_id = str(uuid.uuid4())
        body = {**order.payload.model_dump(mode="json"), "order_id": order_id,
                "area_ids": [district.id], "level": 3 + i % 3}
        events.append(new_event(type(order), body, occurred_at=now, source=order.source))
        for language in ("ja", "en", "zh", "ko"):
            message = example("broadcast.published")
            text = {**message.payload.model_dump(mode="json"), "order_id": order_id,
                    "message_id": str(uuid.uuid4()), "language": language,
                    "area_ids": [district.id]}
            events.append(new_event(type(message), text, occurred_at=now,
                                    source=message.source))
    return events


def _serve_bare(port: int, body: bytes, headers: dict[str, str], ready: Any) -> None:
    """Child process: one aiohttp handler answering the gateway's bytes and headers."""
    from aiohttp import web

    from services.common.runtime import tune_gc

    etag = headers["ETag"]

    async def snapshot(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def serve() -> None:
        app = web.Application()
        app.router.add_get(PATH, snapshot)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    tune_gc()  # the collector settings every service process runs with, the gateway's too
    asyncio.run(serve())


@contextlib.asynccontextmanager
async def bare_process(body: bytes, headers: dict[str, str]) -> AsyncIterator[int]:
    """The bare server in a process of its own; yields its port."""
    context = mp.get_context("spawn")
    ready = context.Event()
    port = free_port()
    proc = context.Process(target=_serve_bare, args=(port, body, headers, ready), daemon=True)
    proc.start()
    try:
        if not await asyncio.to_thread(ready.wait, 30):
            raise RuntimeError("the bare HTTP server did not start in 30 s")
        yield port
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.join, 10)


async def rush(port: int, clients: int, seconds: float, headers: dict[str, str],
               expect: int, size: int) -> float:
    """Requests/s of ``clients`` back-to-back keep-alive connections for ``seconds``."""
    connections = [await HttpClient.connect("127.0.0.1", port) for _ in range(clients)]
    done = 0
    deadline = time.monotonic() + seconds

    async def one(client: HttpClient) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            status, body = await client.request("GET", PATH, headers)
            if status != expect or (expect == 200 and len(body) != size):
                raise RuntimeError(f"unexpected answer {status} ({len(body)} bytes)")
            done += 1

    start = time.monotonic()
    try:
        await asyncio.gather(*(one(c) for c in connections))
    finally:
        for c in connections:
            c.close()
    return done / (time.monotonic() - start)


async def main(clients: int, seconds: float, rounds: int) -> None:
    """Run the benchmark and print its table."""
    async with embedded_stack(durable=False) as stack:
        settings = load_settings(kafka_bootstrap=stack.bootstrap, database_url=stack.dsn,
                                 namespace="rush", token_secret=SECRET)
        await ensure_topics(settings)
        producer = kafka_clients.producer(settings)
        await producer.start()
        try:
            events = picture()
            await Publisher(producer, settings.namespace).publish_many(events)
        finally:
            await producer.stop()
        logs = Path(tempfile.mkdtemp(prefix="sonae-bench-logs-"))
        async with gateway_process(settings, logs / "gateway.log") as gw:
            gateway_port = int(gw.dashboard_url.rsplit(":", 1)[1])
            probe = await HttpClient.connect("127.0.0.1", gateway_port)
            try:
                for _ in range(200):  # until the gateway has read what was written
                    status, body = await probe.request("GET", PATH, {})
                    if status == 200 and body.count(b'"order_id"') >= 2:
                        break
                    await asyncio.sleep(0.1)
                _, body = await probe.request("GET", PATH, {})
                headers = await _headers(gateway_port)
                etag = headers["ETag"]
            finally:
                probe.close()
            print(f"snapshot: {len(body):,} bytes, {len(events)} events, ETag {etag}; "
                  f"{clients} clients, {seconds:g} s per run, {rounds} round(s)")
            async with bare_process(body, headers) as bare_port:
                best: dict[tuple[str, str], float] = {}
                modes = {"revalidate": ({"If-None-Match": etag}, 304),
                         "cold": ({}, 200)}
                targets = [("gateway", gateway_port), ("bare", bare_port)]
                for _ in range(rounds):
                    for mode, (headers, expect) in modes.items():
                        targets.reverse()  # neither always runs first
                        for target, port in targets:
                            rate = await rush(port, clients, seconds, headers, expect,
                                              len(body))
                            key = (mode, target)
                            best[key] = max(best.get(key, 0.0), rate)
        print(f"{'mode':<11}{'gateway req/s':>15}{'bare req/s':>13}{'ratio':>8}")
        for mode in modes:
            g, b = best[(mode, "gateway")], best[(mode, "bare")]
            print(f"{mode:<11}{g:>15,.0f}{b:>13,.0f}{g / b:>8.2f}")


async def _headers(port: int) -> dict[str, str]:
    """The snapshot's own headers (ETag, caching, security) for the bare server to send too.

    Read with a plain request (the load client keeps no headers); those aiohttp sets
    itself on every response (date, server, length, type) are left out.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"HEAD {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode("latin-1"))
        head = (await reader.read()).decode("latin-1")
    finally:
        writer.close()
    own = {"date", "server", "content-length", "content-type", "connection"}
    found = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name and name.lower() not in own:
            found[name] = value.strip()
    if "ETag" not in found:
        raise RuntimeError(f"no ETag in the gateway's answer: {head[:200]!r}")
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.clients, args.seconds, args.rounds)))
