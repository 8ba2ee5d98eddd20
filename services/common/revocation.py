"""The token deny list: revoked ``jti`` in PostgreSQL, honoured by intake and every gateway.

``sonae token revoke`` calls :func:`revoke`, which inserts the token's id into
``revoked_tokens`` (migration 0007) and thereby notifies ``sonae_token_revoked``.
Each process that verifies tokens holds one :class:`DenyList`: it reads the whole
list at start, then only rows newer than the last it saw (``seq``) whenever the
notification wakes it and at least every ``poll_seconds`` (a lost LISTEN
connection only costs the poll interval). ``on_revoked`` hears the new ids, so the
gateway can close the websockets of a revoked token.

The list fails open: while the database is unreachable the ids already read are
still refused, new revocations wait for the database, and one warning says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Final

import asyncpg

from services.common.retry import TRANSIENT_DB, Backoff, sleep_until

__all__ = ["CHANNEL", "DenyList", "revoke"]

log = logging.getLogger(__name__)

CHANNEL: Final = "sonae_token_revoked"
"""Notified (payload: the schema) by the insert trigger of ``revoked_tokens``."""

Connect = Callable[[], Awaitable[asyncpg.Connection]]


async def revoke(conn: asyncpg.Connection, jti: str, *, revoked_by: str,
                 expires_at: datetime | None = None, reason: str = "") -> bool:
    """Put ``jti`` on the deny list; False if it was already there."""
    status = await conn.execute(
        "insert into revoked_tokens (jti, expires_at, revoked_by, reason) "
        "values ($1, $2, $3, $4) on conflict (jti) do nothing",
        jti, expires_at, revoked_by, reason)
    return bool(status.endswith(" 1"))


class DenyList:
    """The revoked token ids of one schema, kept fresh by LISTEN and a short poll."""

    def __init__(self, connect: Connect, *, poll_seconds: float = 2.0,
                 on_revoked: Callable[[frozenset[str]], None] | None = None) -> None:
        self._connect = connect
        self._poll = poll_seconds
        self._on_revoked = on_revoked
        self._revoked: set[str] = set()
        self._seq = 0
        self._wake = asyncio.Event()
        self.loaded = asyncio.Event()
        """Set once the whole list has been read (a test waits for it)."""

    def __contains__(self, jti: object) -> bool:
        return jti in self._revoked

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the list fresh until ``stop``; reconnect with backoff when the database fails."""
        backoff = Backoff()
        warned = False
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await self._connect()
                schema = await conn.fetchval("select current_schema()")
                await conn.add_listener(CHANNEL, functools.partial(self._woken, schema))
                while not stop.is_set():
                    self._wake.clear()
                    await self._refresh(conn)
                    if warned:
                        log.info("token deny list readable again")
                        warned = False
                    backoff.reset()
                    await sleep_until(stop, self._poll, self._wake)
            except (*TRANSIENT_DB, asyncpg.UndefinedTableError) as e:
                if not warned:
                    log.warning("token deny list unreadable (%s): refusing only the %d ids "
                                "already known until it is back", type(e).__name__,
                                len(self._revoked))
                    warned = True
                await sleep_until(stop, backoff.next())
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2.0)

    def _woken(self, schema: str, conn: object, pid: object, channel: object,
               payload: object) -> None:
        if payload == schema:
            self._wake.set()

    async def _refresh(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch("select seq, jti from revoked_tokens where seq > $1 "
                                "order by seq", self._seq)
        new = frozenset(r["jti"] for r in rows) - self._revoked
        if rows:
            self._seq = rows[-1]["seq"]
        self._revoked |= new
        self.loaded.set()
        if new:
            log.info("token deny list: %d token(s) revoked", len(new))
            if self._on_revoked is not None:
                self._on_revoked(new)
