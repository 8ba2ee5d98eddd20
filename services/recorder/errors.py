"""The recorder's exceptions: one base class, one subclass per rule broken.

Driver errors (asyncpg, aiokafka) are translated at the adapter that meets them
and chained as ``__cause__``.
"""

from __future__ import annotations


class RecorderError(RuntimeError):
    """Base of every error the recorder, export and rehydrate raise on purpose."""


class RecorderTablesMissing(RecorderError):
    """The event store's tables are missing: the database was never migrated."""


class StoreUnavailable(RecorderError):
    """The database cannot be reached right now (down, restarting, connection lost).

    Transient: the same batch is retried with backoff, and its offsets are not
    committed until it is written.
    """


class BatchRejected(RecorderError):
    """The database refused the batch's data (not the connection): retrying as is
    would fail forever, so the batch is split to find and dead-letter the bad record."""


class NotAnEvent(RecorderError):
    """A record cannot be stored as an event (e.g. its key is not UTF-8 text)."""


class BrokerNotEmpty(RecorderError):
    """Rehydration was asked for a broker that already holds events."""


class InvalidWindow(RecorderError):
    """An export window is empty or reversed."""


class PurgeBeforeInFuture(RecorderError):
    """``sonae people purge --before T`` was given a time after now (or without a timezone)."""
