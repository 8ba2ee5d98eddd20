"""Gateway limits against the real broker: messages per connection, connections per address."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.common import httpguard
from services.common.auth import Role
from services.gateway.hub import OVERLOAD
from tests.support import seconds_until_cut_off, wait_for
from tests.support.gateway import gateway, gateway_settings, peer, token

pytestmark = pytest.mark.integration


async def test_a_connection_sending_past_its_message_rate_is_closed_1008(
        kafka_bootstrap: str, namespace: str) -> None:
    """Past the burst (the hello counts) a connection gets error rate_limited and close 1008
    "message rate exceeded"; another connection keeps its own bucket."""
    settings = gateway_settings(kafka_bootstrap, namespace, gateway_message_burst=5,
                                gateway_message_rate_per_second=0.01)
    async with gateway(settings) as gw, peer(gw) as flooder, \
            peer(gw, token=token(Role.HQ)) as calm:
        await flooder.until(lambda m: m["type"] == "snapshot")
        await calm.until(lambda m: m["type"] == "snapshot")
        for i in range(4):  # hello + 4 = the burst
            await flooder.send({"type": "ping", "id": f"p{i}"})
            assert (await flooder.until(lambda m: m["type"] == "pong"))["id"] == f"p{i}"
        await flooder.send({"type": "ping", "id": "one-too-many"})
        error = await flooder.until(lambda m: m["type"] == "error")
        assert error["code"] == "rate_limited" and "5 messages at once" in error["message"]
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await flooder.next()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1008, "message rate exceeded")

        await calm.send({"type": "ping", "id": "calm"})
        assert (await calm.until(lambda m: m["type"] == "pong"))["id"] == "calm"


async def test_a_flood_before_the_hello_is_also_limited(kafka_bootstrap: str,
                                                        namespace: str) -> None:
    """Messages before a hello spend the same bucket: past it, rate_limited and 1008."""
    settings = gateway_settings(kafka_bootstrap, namespace, gateway_message_burst=2,
                                gateway_message_rate_per_second=0.01)
    async with gateway(settings) as gw, connect(gw.websocket_url) as ws:
        for _ in range(3):
            await ws.send('{"type": "ping"}')
        replies = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                replies.append(await ws.recv())
        assert any('"rate_limited"' in str(r) for r in replies), replies
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_connections_over_the_per_address_cap_are_closed_1013(
        kafka_bootstrap: str, namespace: str) -> None:
    """With a cap of 2, a third connection from the address gets error too_many_connections
    and close 1013; once one closes a new one is served."""
    settings = gateway_settings(kafka_bootstrap, namespace,
                                gateway_max_connections_per_address=2)
    async with gateway(settings) as gw, peer(gw) as first:
        await first.until(lambda m: m["type"] == "snapshot")
        async with peer(gw) as second:
            await second.until(lambda m: m["type"] == "snapshot")
            async with connect(gw.websocket_url) as third:
                error = await third.recv()
                assert '"too_many_connections"' in str(error)
                with pytest.raises(ConnectionClosed) as closed:
                    await third.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == OVERLOAD
        await wait_for(lambda: gw.gateway.connections_from("127.0.0.1") == 1,
                       what="the second connection counted out")
        async with peer(gw) as again:
            assert (await again.next())["type"] == "welcome"


async def test_the_dashboard_cuts_off_a_client_trickling_its_headers(
        kafka_bootstrap: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's HTTP server closes a connection whose headers are not all there by
    the header timeout (aiohttp's own default is an hour)."""
    monkeypatch.setattr(httpguard, "HEADER_TIMEOUT", 1.0)
    settings = gateway_settings(kafka_bootstrap, namespace)
    async with gateway(settings) as gw:
        host, port = gw.dashboard_url.removeprefix("http://").rstrip("/").split(":")
        elapsed = await seconds_until_cut_off(host, int(port))
        assert 0.8 <= elapsed < 6, elapsed
