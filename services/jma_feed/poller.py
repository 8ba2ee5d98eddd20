"""Polite polling of JMA's Atom feeds, each new message handed to intake once.

Per feed, each round:

1. ``GET`` the feed with ``If-None-Match`` / ``If-Modified-Since`` from the last
   complete round; ``304 Not Modified`` ends the round (nothing is fetched);
2. keep the entries whose title is a data type the region pack asks for and whose
   link is not yet handled (:class:`~services.jma_feed.store.FeedStore`);
3. for each, oldest first: ``GET`` the message, ``POST`` it to intake's
   ``/v1/jma``; intake's 202/200 is the acknowledgement, and only then is the
   entry recorded as handled. A refusal (400/409/413/415/422, or the message's
   own 4xx) is dead-lettered with the message's bytes and recorded, and the
   round goes on with the next entry;
4. once every entry of that version of the feed is handled, save its validators.

Anything transient (a timeout, 429, 5xx, intake down) ends the round for that
feed without saving its validators; the next round, after a bounded backoff,
picks up where it stopped. Rounds are at least ``interval`` seconds apart (at
least 60: JMA asks clients not to poll faster), plus a random jitter so that
many clients do not poll in step.

A crash between fetching a message and intake's acknowledgement leaves the
entry unrecorded: it is fetched and posted again, and intake, whose idempotency
key is the message's identity, answers the second post as a replay. Nothing is
lost, and nothing is written twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from schemas.jma import DataType
from services.common.retry import TRANSIENT, Backoff, sleep_until
from services.jma_feed.errors import EntryRefused, FeedUnreadable, IntakeUnavailable
from services.jma_feed.feed import FeedEntry, read_feed, wanted
from services.jma_feed.store import FeedStore, Handled, Validators

log = logging.getLogger(__name__)

__all__ = ["MIN_INTERVAL", "DeadLetter", "Poller", "Round"]

MIN_INTERVAL: Final = 60.0
"""Seconds between rounds at the least."""
MAX_BACKOFF: Final = 900.0
"""Longest wait after repeated errors."""
USER_AGENT: Final = "sonae-jma-feed/1 (+docs/jma.md)"
_MAX_MESSAGE_BYTES: Final = 8 * 1024 * 1024

DeadLetter = Callable[[FeedEntry, bytes, EntryRefused], Awaitable[None]]
"""Dead-letter an entry: the entry, its bytes, why it was refused."""


@dataclass
class Round:
    """What one round of one feed did (logged, and read by tests)."""

    not_modified: bool = False
    fetched: int = 0
    accepted: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    complete: bool = True


_TRANSIENT_HTTP: Final = (aiohttp.ClientError, TimeoutError)


class Poller:
    """Follows ``feeds``, posting each new wanted message to intake."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        store: FeedStore,
        feeds: Sequence[str],
        data_types: Sequence[DataType],
        intake_url: str,
        token: Callable[[], str],
        dead_letter: DeadLetter,
        interval: float = MIN_INTERVAL,
        jitter: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if interval < MIN_INTERVAL:
            raise ValueError(f"interval must be at least {MIN_INTERVAL} s, not {interval}")
        self.session = session
        self.store = store
        self.feeds = tuple(feeds)
        self.data_types = tuple(data_types)
        self.intake_url = intake_url.rstrip("/")
        self.token = token
        self.dead_letter = dead_letter
        self.interval = interval
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._backoff = Backoff(interval, max(interval, MAX_BACKOFF))

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every feed, round after round, until ``stop`` is set."""
        while not stop.is_set():
            ok = True
            for feed in self.feeds:
                if stop.is_set():
                    return
                try:
                    done = await self.poll(feed)
                    ok = ok and done.complete
                except (IntakeUnavailable, FeedUnreadable, *_TRANSIENT_HTTP, *TRANSIENT) as e:
                    # The database or the broker (dead letters) down counts as transient too.
                    ok = False
                    log.warning("jma feed %s: %s", feed, e)
            if ok:
                self._backoff.reset()
                wait = self.interval
            else:
                wait = self._backoff.next()
            await sleep_until(stop, wait + self._rng.uniform(0, self.jitter))

    async def poll(self, feed: str) -> Round:
        """One round of one feed (see the module docstring)."""
        result = Round()
        saved = await self.store.validators(feed)
        headers = {"User-Agent": USER_AGENT}
        if saved.etag:
            headers["If-None-Match"] = saved.etag
        if saved.last_modified:
            headers["If-Modified-Since"] = saved.last_modified
        async with self.session.get(feed, headers=headers) as response:
            if response.status == 304:
                result.not_modified = True
                return result
            if response.status != 200:
                raise IntakeUnavailable(f"feed answered {response.status}")
            data = await response.read()
            fresh = Validators(response.headers.get("ETag"), response.headers.get("Last-Modified"))
        entries = wanted(read_feed(data), self.data_types)
        done = await self.store.handled([e.link for e in entries])
        for entry in entries:
            if entry.link in done:
                continue
            try:
                await self._handle(feed, entry, result)
            except (IntakeUnavailable, *_TRANSIENT_HTTP) as e:
                # Try again next round; entries after it wait, so versions stay in order.
                log.warning("jma feed entry %s: %s; retried next round", entry.link, e)
                result.complete = False
                break
        if result.complete:
            await self.store.save_validators(feed, fresh)
        if result.fetched:
            log.info("jma feed %s: %d fetched, %d accepted, %d ignored, %d dead-lettered",
                     feed, result.fetched, result.accepted, result.ignored,
                     result.dead_lettered)
        return result

    async def _handle(self, feed: str, entry: FeedEntry, result: Round) -> None:
        data = b""
        try:
            data = await self._fetch(entry)
            result.fetched += 1
            status, body = await self._post(data)
        except EntryRefused as refused:
            await self.dead_letter(entry, data, refused)
            await self.store.record(Handled(entry.link, feed, entry.title, "dead_lettered",
                                            refused.status, None))
            result.dead_lettered += 1
            return
        ignored = body.get("status") == "ignored"
        outcome = "ignored" if ignored else ("accepted" if status == 202 else "replayed")
        await self.store.record(Handled(entry.link, feed, entry.title, outcome, status,
                                        body.get("client_id")))
        if ignored:
            result.ignored += 1
        else:
            result.accepted += 1

    async def _fetch(self, entry: FeedEntry) -> bytes:
        async with self.session.get(entry.link, headers={"User-Agent": USER_AGENT}) as response:
            if response.status in (404, 410):
                raise EntryRefused(f"the message is gone ({response.status})",
                                   status=response.status)
            if response.status != 200:
                raise IntakeUnavailable(f"the message's host answered {response.status}")
            data = bytearray()
            # Read to the end, but never buffer more than the limit (+ one chunk).
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > _MAX_MESSAGE_BYTES:
                    raise EntryRefused(f"the message exceeds {_MAX_MESSAGE_BYTES} bytes",
                                       status=None)
        return bytes(data)

    async def _post(self, data: bytes) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/xml",
                   "Authorization": f"Bearer {self.token()}"}
        try:
            async with self.session.post(f"{self.intake_url}/v1/jma", data=data,
                                         headers=headers) as response:
                status = response.status
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = {}
        except _TRANSIENT_HTTP as e:
            raise IntakeUnavailable(f"intake did not answer: {e}") from e
        body = body if isinstance(body, dict) else {}
        if status in (200, 202):
            return status, body
        if status in (400, 409, 413, 415, 422):
            problems = tuple((str(p.get("pointer", "")), str(p.get("message", "")))
                             for p in body.get("errors") or () if isinstance(p, dict))
            raise EntryRefused(f"intake refused it ({status} {body.get('error', '')}): "
                               f"{body.get('message', '')}", status=status, problems=problems)
        # 401/403 is our configuration (the token), 429/5xx intake's load: not the entry's fault.
        raise IntakeUnavailable(f"intake answered {status}: {body.get('message', '')}")
