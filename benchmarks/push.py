"""Push fan-out beside the raw layer underneath it, in one run.

Starts its own embedded broker and PostgreSQL (durable: fsync on), a local push
service in a process of its own (aiohttp on 127.0.0.1: reads each request's body
and answers 201, counting arrivals per run), and ``--subs`` subscriptions in one
area (Chiyoda's kanda-koen, Japanese; their keys made here, a thousand distinct
pairs cycled), then measures:

- **raw**: the layer the push channel stands on and nothing else — for each
  subscription an ephemeral key and ``http_ece`` aes128gcm encryption of the same
  payload, and an aiohttp POST to the same push service with the same headers,
  ``--concurrency`` in flight (the push channel's bound per origin); no Sonae code;
- **sonae**: the broadcaster as its own process (``services.broadcaster.main``,
  ``SONAE_PUSH_CONCURRENCY`` = ``--concurrency``); one ``evacuation.order_issued``
  for the area is produced to Kafka, and the clock runs until the push service has
  received every subscription's push (planning, the ledger, reading subscriptions,
  encryption, VAPID, outcomes in ``push_sent``, the counts).

Printed: time from the order to the last push, pushes/s over the fan-out (first
to last arrival), and the ratio to raw (target ≥ 0.5), and whether every push
arrived within 60 s. Run:

    .venv/bin/python benchmarks/push.py                 # 100,000 subscriptions
    .venv/bin/python benchmarks/push.py --subs 5000     # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import http_ece
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import _service_process, embedded_stack
from infra.embedded.processes import free_port
from infra.kafka import clients
from infra.settings import load_settings
from infra.topics import ensure_topics
from schemas.envelope import new_event
from schemas.evacuation import OrderIssued
from schemas.examples import example
from services.common.bus import Publisher
from services.common.webpush import b64url_encode, origin_of

_BROADCASTER = ("from infra.settings import load_settings; "
                "from services.broadcaster.main import main; main(load_settings())")
NAMESPACE = "bench"
AREA = "kanda-koen"
KEYS = 1000
RUNS = ("raw", "sonae")


def _serve_sink(port: int, ready: Any, counters: Any) -> None:
    """Child process: the push service. ``counters`` per run: arrivals, first, last."""
    from aiohttp import web

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        now = time.monotonic()
        base = 3 * RUNS.index(request.match_info["run"])
        with counters.get_lock():
            if counters[base] == 0:
                counters[base + 1] = now
            counters[base] += 1
            counters[base + 2] = now
        return web.Response(status=201)

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/{run}/{sub}", receive)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(serve())


@dataclass(frozen=True)
class Subscriber:
    endpoint: str
    p256dh: bytes
    auth: bytes


def subscribers(port: int, run: str, n: int) -> list[Subscriber]:
    pairs = []
    for _ in range(KEYS):
        key = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
        pairs.append((b"\x04" + key.x.to_bytes(32, "big") + key.y.to_bytes(32, "big"),
                      os.urandom(16)))
    return [Subscriber(f"http://127.0.0.1:{port}/{run}/{i}", *pairs[i % KEYS])
            for i in range(n)]


async def wait_arrivals(counters: Any, run: str, n: int, timeout: float) -> tuple[int, float,
                                                                                   float]:
    base = 3 * RUNS.index(run)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if counters[base] >= n:
            break
        await asyncio.sleep(0.05)  # the counters live in the push service's process
    return int(counters[base]), counters[base + 1], counters[base + 2]


async def raw(subs: list[Subscriber], concurrency: int, payload: bytes) -> None:
    """Encrypt and POST every push: http_ece + aiohttp, nothing of Sonae's."""
    headers = {"TTL": "43200", "Urgency": "high", "Topic": uuid.uuid4().hex,
               "Content-Encoding": "aes128gcm", "Content-Type": "application/octet-stream",
               "Authorization": "vapid t=x,k=y"}
    queue: asyncio.Queue[Subscriber] = asyncio.Queue()
    for sub in subs:
        queue.put_nowait(sub)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=0, limit_per_host=concurrency)) as session:
        async def worker() -> None:
            while not queue.empty():
                sub = queue.get_nowait()
                body = http_ece.encrypt(payload, private_key=ec.generate_private_key(
                    ec.SECP256R1()), dh=sub.p256dh, auth_secret=sub.auth, version="aes128gcm")
                async with session.post(sub.endpoint, data=body, headers=headers,
                                        timeout=timeout) as response:
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def load_subscriptions(dsn: str, subs: list[Subscriber]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "push_subscriptions",
            columns=["namespace", "endpoint", "origin", "p256dh", "auth", "areas", "lang"],
            records=[(NAMESPACE, s.endpoint, origin_of(s.endpoint), b64url_encode(s.p256dh),
                      b64url_encode(s.auth), [AREA], "ja") for s in subs])
    finally:
        await conn.close()


def order() -> OrderIssued:
    base = example("evacuation.order_issued")
    assert isinstance(base, OrderIssued)
    body = base.payload.model_copy(update={"order_id": uuid.uuid4(), "area_ids": (AREA,)})
    event = new_event(OrderIssued, body, occurred_at=datetime.now(UTC),
                      source="evacuation-decision")
    assert isinstance(event, OrderIssued)
    return event


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subs", type=int, default=100_000, help="subscriptions in the area")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="pushes in flight (per origin: the one local push service)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after (s)")
    args = parser.parse_args()

    context = mp.get_context("spawn")
    counters = context.Array("d", 3 * len(RUNS))
    ready = context.Event()
    port = free_port()
    sink = context.Process(target=_serve_sink, args=(port, ready, counters), daemon=True)
    sink.start()
    try:
        if not await asyncio.to_thread(ready.wait, 30):
            raise RuntimeError("the push service did not start in 30 s")
        async with embedded_stack(durable=True) as stack:
            results = await measure(args, stack.bootstrap, stack.dsn, port, counters)
    finally:
        sink.terminate()
        await asyncio.to_thread(sink.join, 10)
    print(results)


async def measure(args: argparse.Namespace, bootstrap: str, dsn: str, port: int,
                  counters: Any) -> str:
    n = args.subs
    lines = [f"push fan-out: {n:,} subscriptions in {AREA} (ja), {args.concurrency} in flight, "
             f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"]
    # The raw run's payload: the size of a real push (Japanese title and text).
    payload = json.dumps({"title": "警戒レベル4 避難指示（洪水）神田公園地区",
                          "body": "千代田区：神田公園地区に警戒レベル4 避難指示（洪水）。"
                                  "危険な場所から全員避難。",
                          "url": f"/?area={AREA}&lang=ja", "level": 4,
                          "tag": str(uuid.uuid4())}, ensure_ascii=False).encode()

    raw_subs = subscribers(port, "raw", n)
    started = time.monotonic()
    await raw(raw_subs, args.concurrency, payload)
    got, first, last = await wait_arrivals(counters, "raw", n, args.timeout)
    raw_rate = got / max(last - first, 1e-9)
    lines.append(f"  raw    {got:,}/{n:,} received in {last - started:6.1f} s, "
                 f"{raw_rate:7,.0f} pushes/s")

    await load_subscriptions(dsn, subscribers(port, "sonae", n))
    settings = load_settings(kafka_bootstrap=bootstrap, database_url=dsn, namespace=NAMESPACE,
                             development=True, host="127.0.0.1", broadcaster_port=free_port(),
                             push_concurrency=args.concurrency, log_level="WARNING")
    await ensure_topics(settings)
    with tempfile.TemporaryDirectory(prefix="sonae-bench-push-") as tmp:
        async with _service_process(_BROADCASTER, settings.env(), settings.broadcaster_port,
                                    "the broadcaster", Path(tmp) / "broadcaster.log"):
            producer = clients.producer(settings)
            await producer.start()
            try:
                started = time.monotonic()
                await Publisher(producer, NAMESPACE).publish(order())
            finally:
                await producer.stop()
            got, first, last = await wait_arrivals(counters, "sonae", n, args.timeout)
    rate = got / max(last - first, 1e-9)
    within = got == n and last - started <= 60
    lines.append(f"  sonae  {got:,}/{n:,} received in {last - started:6.1f} s after the order, "
                 f"{rate:7,.0f} pushes/s, ratio {rate / raw_rate:.2f} (target ≥ 0.50); all "
                 f"within 60 s: {'yes' if within else 'no'}")
    return "\n".join(lines)


if __name__ == "__main__":
    asyncio.run(main())
