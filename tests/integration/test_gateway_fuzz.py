"""Property-based garbage into the gateway's websocket (hypothesis, the real server).

Each generated case opens a connection, optionally says a valid hello, and sends a
sequence of frames: arbitrary text, arbitrary JSON, protocol-shaped objects with
wrong types and unknown fields, binary frames, an oversized frame. The property:
the connection ends up answering a ping or closed with a documented close code
within a deadline (never hung, never 1011 or an abnormal close), nothing in the
gateway logs an unhandled error, and a well-behaved client is served afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.common.auth import Role
from services.gateway.main import Running
from services.gateway.server import MAX_MESSAGE_BYTES
from tests.support.gateway import gateway, gateway_settings, peer, token

pytestmark = pytest.mark.integration

DOCUMENTED_CLOSES = frozenset({1000, 1008, 1009, 1013, 4401, 4403})
"""docs/gateway-protocol.md, "Errors and close codes" (1012 needs a replaced log)."""
CASE_DEADLINE = 20.0
"""Seconds a case may take to be answered or closed (the server's own limits are 10 s)."""

TOKENS = [token(Role.HQ), token(Role.FIELD, "kanda-team-1", ("kanda-koen",)),
          token(Role.SENSOR, "jma"), token(Role.HQ)[:-4] + "AAAA", "not-a-token"]
TYPES = ["hello", "ping", "command", "report", "subscribe", "welcome", "", "HELLO"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10),
                                                                inner, max_size=5),
    max_leaves=20)
protocol_shaped = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | json_values},
    optional={
        "token": st.sampled_from(TOKENS) | json_values,
        "id": st.text(max_size=70) | json_values,
        "position": st.text(max_size=60) | json_values,
        "areas": st.lists(st.sampled_from(["kanda-koen", "fujimi", "nowhere"]) | json_values,
                          max_size=4) | json_values,
        "action": st.sampled_from(["approve", "reject", "issue", "lift"]) | json_values,
        "level": st.integers(-2, 8) | json_values,
        "area_ids": st.lists(st.sampled_from(["kanda-koen", "x"]), max_size=3) | json_values,
        "report": st.dictionaries(st.sampled_from(["client_report_id", "category",
                                                   "severity", "area_id"]),
                                  json_values, max_size=4) | json_values,
    })
frames = (
    st.text(max_size=200)
    | json_values.map(json.dumps)
    | protocol_shaped.map(lambda m: json.dumps(m, ensure_ascii=False))
    | st.binary(max_size=200)
    | st.integers(MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES + 1024).map(lambda n: "x" * n)
)
cases = st.tuples(st.sampled_from([None, *TOKENS[:2]]), st.lists(frames, min_size=1,
                                                                 max_size=8))


async def _answer_or_close(url: str, hello_token: str | None, sent: list[str | bytes]) -> None:
    """Send one case; assert the connection still serves, or closed with a documented code.

    Before a session exists the server answers anything but a hello with the error
    ``hello_expected`` (and closes after a few, or after 10 s); the probe then says a
    public hello itself, so either way a ping must finally be answered.
    """
    async with connect(url, max_size=None, open_timeout=10) as ws:
        try:
            if hello_token is not None:
                await ws.send(json.dumps({"type": "hello", "token": hello_token}))
            for frame in sent:
                await ws.send(frame)
            await ws.send(json.dumps({"type": "ping", "id": "probe"}))
            said_hello = False
            while True:
                message = json.loads(await ws.recv())
                if message.get("type") == "pong" and message.get("id") == "probe":
                    return
                if message.get("code") == "hello_expected" and not said_hello:
                    said_hello = True
                    await ws.send(json.dumps({"type": "hello"}))
                    await ws.send(json.dumps({"type": "ping", "id": "probe"}))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
            assert code in DOCUMENTED_CLOSES, (code, closed.rcvd and closed.rcvd.reason)


# The gateway runs in this process on the event loop's thread while Hypothesis draws
# in another; the random module used there (client ids, retry jitter) is what
# Hypothesis notices, not the strategies, which draw only from Hypothesis.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@pytest.mark.timeout(300)
async def test_garbage_gets_an_answer_or_a_documented_close(
        kafka_bootstrap: str, namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    """No hung connection, no crash, and the gateway keeps serving a proper client."""
    caplog.set_level(logging.ERROR)
    loop = asyncio.get_running_loop()

    async with gateway(gateway_settings(kafka_bootstrap, namespace)) as gw:

        @settings(max_examples=200, derandomize=True, database=None, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(case=cases)
        def garbage_is_contained(case: tuple[str | None, list[Any]]) -> None:
            hello_token, sent = case
            asyncio.run_coroutine_threadsafe(
                asyncio.wait_for(_answer_or_close(gw.websocket_url, hello_token, sent),
                                 CASE_DEADLINE), loop).result()

        await asyncio.to_thread(garbage_is_contained)
        await _still_serving(gw)

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def _still_serving(gw: Running) -> None:
    async with peer(gw) as public:
        await public.until(lambda m: m["type"] == "snapshot")
        await public.send({"type": "ping", "id": "after"})
        assert (await public.until(lambda m: m["type"] == "pong"))["id"] == "after"
