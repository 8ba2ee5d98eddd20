"""Exceptions of the JMA feed poller: one base, named after the rule broken.

::

    JmaFeedError
    ├── FeedUnreadable          a feed document is not an Atom feed the poller can read
    ├── EntryRefused            intake refused an entry for good (dead-lettered, then skipped)
    ├── IntakeUnavailable       intake did not answer or answered "later" (retried with backoff)
    ├── JmaFeedTablesMissing    migration 0008_jma_feed was not applied
    └── JmaFeedStartupError     the poller cannot start: region pack, database

Driver errors (aiohttp, asyncpg, aiokafka) are translated where they are caught.
"""

from __future__ import annotations

__all__ = [
    "EntryRefused",
    "FeedUnreadable",
    "IntakeUnavailable",
    "JmaFeedError",
    "JmaFeedStartupError",
    "JmaFeedTablesMissing",
]


class JmaFeedError(Exception):
    """Base of every error raised by :mod:`services.jma_feed`."""


class FeedUnreadable(JmaFeedError):
    """A feed document is not well-formed Atom (or carries a DOCTYPE)."""


class EntryRefused(JmaFeedError):
    """Intake refused an entry for good: its status, error code and the answer's problems."""

    def __init__(self, message: str, *, status: int | None,
                 problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.problems = problems
        """(pointer, message) pairs from intake's answer."""


class IntakeUnavailable(JmaFeedError):
    """Intake (or the entry's host) did not answer, or answered 429/5xx: try again later."""


class JmaFeedTablesMissing(JmaFeedError):
    """The database lacks the poller's tables: migrations have not been applied."""


class JmaFeedStartupError(JmaFeedError):
    """The poller cannot start; the message says what to fix."""
