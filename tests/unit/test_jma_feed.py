"""The JMA feed poller's pure parts: the Atom reading, the data-type choice, the interval floor."""

from __future__ import annotations

import asyncio

import pytest

from infra.settings import load_settings
from schemas.jma import DataType
from services.jma_feed import poller as module
from services.jma_feed.errors import FeedUnreadable, IntakeUnavailable
from services.jma_feed.feed import read_feed, wanted
from services.jma_feed.poller import MIN_INTERVAL, Poller, Round
from sonae.drill_services import drill_settings

FEED = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>JMA</title><id>urn:x</id>
<updated>2026-01-01T00:00:00Z</updated>
<entry><id>urn:b</id><title>震度速報</title><updated>2026-01-01T00:05:00+09:00</updated>
<link type="application/xml" href="https://example.invalid/b.xml"/></entry>
<entry><id>urn:a</id><title>気象警報・注意報（Ｈ２７）</title>
<updated>2026-01-01T00:01:00+09:00</updated><link href="https://example.invalid/a.xml"/></entry>
<entry><id>urn:c</id><title>竜巻注意情報</title><updated>2026-01-01T00:09:00+09:00</updated>
<link href="https://example.invalid/c.xml"/></entry>
<entry><id>urn:d</id><title>震度速報</title><updated>2026-01-01T00:02:00+09:00</updated></entry>
</feed>""".encode()


def test_entries_come_oldest_first_with_their_data_type() -> None:
    """Entries with a link, oldest first, each typed by its title (None: not read by Sonae)."""
    entries = read_feed(FEED)
    assert [e.entry_id for e in entries] == ["urn:a", "urn:b", "urn:c"]
    assert [e.data_type for e in entries] == [DataType.VPWW54, DataType.VXSE51, None]


def test_only_the_data_types_the_pack_asks_for_are_wanted() -> None:
    """A region asking only for 震度速報 gets only those entries."""
    assert [e.entry_id for e in wanted(read_feed(FEED), [DataType.VXSE51])] == ["urn:b"]


@pytest.mark.parametrize("data", [
    b"<feed",
    b'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY x "y">]><feed/>',
    b"<rss/>",
])
def test_a_document_that_is_not_atom_is_refused(data: bytes) -> None:
    """Not XML, a DOCTYPE, or not an Atom feed: FeedUnreadable."""
    with pytest.raises(FeedUnreadable):
        read_feed(data)


def test_the_interval_cannot_be_shorter_than_a_minute() -> None:
    """Polling faster than every 60 s is refused at construction."""
    with pytest.raises(ValueError, match="at least"):
        Poller(session=None, store=None, feeds=[], data_types=[],  # type: ignore[arg-type]
               intake_url="http://x", token=str, dead_letter=None,  # type: ignore[arg-type]
               interval=MIN_INTERVAL - 1)


async def test_errors_back_off_boundedly_and_a_clean_round_resets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Failing rounds wait 60, 120, 240 … s (at most 900), a clean one the interval again."""
    outcomes = [False] * 6 + [True]
    waits: list[float] = []
    stop = asyncio.Event()

    class Scripted(Poller):
        async def poll(self, feed: str) -> Round:
            if not outcomes.pop(0):
                raise IntakeUnavailable("down")
            return Round()

    async def sleep(_: asyncio.Event, seconds: float) -> None:
        waits.append(seconds)
        if not outcomes:
            stop.set()

    monkeypatch.setattr(module, "sleep_until", sleep)
    p = Scripted(session=None, store=None, feeds=["f"], data_types=[],  # type: ignore[arg-type]
                 intake_url="http://x", token=str, dead_letter=None,  # type: ignore[arg-type]
                 jitter=0.0)
    await p.run(stop)
    assert waits == [60.0, 120.0, 240.0, 480.0, 900.0, 900.0, 60.0]


def test_a_drill_never_polls_jma() -> None:
    """A drill namespace's services run with the poller off, whatever the live stack says."""
    live = load_settings(jma_feed_enabled=True)
    assert drill_settings(live, "drill.test-1").jma_feed_enabled is False
