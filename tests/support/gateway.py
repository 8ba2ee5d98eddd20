"""Helpers for the gateway tests (no tests here): settings, tokens, events, a client."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from websockets.asyncio.client import ClientConnection, connect

from infra.embedded.processes import free_port
from infra.settings import Settings, load_settings
from schemas.envelope import Envelope, new_event
from schemas.examples import example
from schemas.reports import ReportAccepted
from services.common.auth import Role, issue_token
from services.common.revocation import Connect
from services.gateway.hub import CLIENT_QUEUE_SIZE
from services.gateway.main import Running, running
from services.gateway.server import IntakeCalls, ReportSink
from tests.support import wait_for

SECRET = "gateway-test-secret-0123456789abcdef0123"


def gateway_settings(kafka_bootstrap: str, namespace: str, **overrides: Any) -> Settings:
    """Settings for one test's gateway."""
    return load_settings(kafka_bootstrap=kafka_bootstrap, namespace=namespace,
                         token_secret=SECRET, host="127.0.0.1", **overrides)


def token(role: Role, name: str = "hq-duty-officer", areas: tuple[str, ...] = ()) -> str:
    """A token signed with the tests' secret (a field token may name its areas)."""
    return issue_token(SECRET, role, name, timedelta(hours=1), areas=areas)


def report(area: str = "kanda-koen", description: str = "冠水", severity: int = 3,
           name: str | None = "佐藤 花子") -> ReportAccepted:
    """A fresh accepted report in ``area``."""
    base = example("report.accepted")
    assert isinstance(base, ReportAccepted)
    body = base.payload.model_dump(mode="json")
    body["report_id"] = str(uuid.uuid4())
    body["area_id"] = area
    body["report"] = {**body["report"], "area_id": area, "description": description,
                      "severity": severity, "client_report_id": uuid.uuid4().hex,
                      "reporter": {"team": "神田公園地区 防災会", "name": name}}
    return new_event(ReportAccepted, body, occurred_at=datetime.now(UTC), source="intake")


def fresh(event_type: str, **payload: Any) -> Envelope:
    """The schema example of ``event_type`` with a new event id and payload overrides."""
    base = example(event_type)
    body = {**base.payload.model_dump(mode="json"), **payload}
    return new_event(type(base), body, occurred_at=datetime.now(UTC), source=base.source)


@asynccontextmanager
async def gateway(settings: Settings, *, pool: asyncpg.Pool | None = None,
                  reports: ReportSink | None = None, intake: IntakeCalls | None = None,
                  queue_size: int = CLIENT_QUEUE_SIZE,
                  revocation: Connect | None = None) -> AsyncIterator[Running]:
    """A gateway on free ports, ready (caught up with the log)."""
    async with running(settings, pool=pool, reports=reports, intake=intake,
                       websocket_port=free_port(),
                       dashboard_port=free_port(), queue_size=queue_size,
                       revocation=revocation) as gw:
        await wait_for(gw.hub.ready.is_set, timeout=30, what="gateway ready")
        yield gw


class Peer:
    """A protocol client that keeps every message it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.position: str | None = None
        self.state: dict[str, dict[str, Any]] = {}

    async def next(self, timeout: float = 15.0) -> dict[str, Any]:
        """The next message (also applied to :attr:`state` and :attr:`position`)."""
        raw = await wait_for_message(self.ws, timeout)
        message: dict[str, Any] = json.loads(raw)
        self.messages.append(message)
        if message["type"] == "snapshot":
            self.state = message["state"]
        elif message["type"] == "delta":
            for change in message["changes"]:
                kind = self.state.setdefault(change["kind"], {})
                if change["value"] is None:
                    kind.pop(change["id"], None)
                else:
                    kind[change["id"]] = change["value"]
        if "position" in message:
            self.position = message["position"]
        return message

    async def until(self, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        """Read messages until one satisfies ``predicate``; return it."""
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        while True:
            left = (deadline - datetime.now(UTC)).total_seconds()
            if left <= 0:
                raise AssertionError(f"no matching message; last: {self.messages[-3:]}")
            message = await self.next(left)
            if predicate(message):
                return message

    async def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message."""
        await self.ws.send(json.dumps(message))


async def wait_for_message(ws: ClientConnection, timeout: float) -> str | bytes:
    """``ws.recv()`` with a deadline."""
    import asyncio

    return await asyncio.wait_for(ws.recv(), timeout)


@asynccontextmanager
async def peer(gw: Running, *, token: str | None = None, position: str | None = None,
               areas: list[str] | None = None, **connect_args: Any) -> AsyncIterator[Peer]:
    """A client that has said hello; its welcome is the first message read."""
    async with connect(gw.websocket_url, **connect_args) as ws:
        p = Peer(ws)
        hello: dict[str, Any] = {"type": "hello", "token": token, "position": position}
        if areas is not None:
            hello["areas"] = areas
        await p.send(hello)
        yield p
