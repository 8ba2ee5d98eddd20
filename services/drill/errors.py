"""Exceptions of the drill runner: one base, named after the rule broken.

::

    DrillError                  (a RuntimeError; the message says what to fix)
    ├── InvalidDrillLog         a file is not a valid drill log: not one, a bad line, a wrong count
    │   └── UnsupportedLogVersion  the log's format version is newer than this code (or unknown)
    ├── EmptyWindow             a recording window that holds no time (--since not before --until)
    ├── NotIsolated             a replay aimed at a namespace that is not a drill namespace
    ├── NoStack                 no broker or database to replay into
    └── ServicesFailed          the drill namespace's services could not start or stopped working

``sonae drill`` turns a :class:`DrillError` into a one-line usage or command
error; anything else is a bug and keeps its traceback. Argument checks of the
pure core (a non-positive speed, a naive anchor time) stay ``ValueError``.
"""

from __future__ import annotations

__all__ = [
    "DrillError",
    "EmptyWindow",
    "InvalidDrillLog",
    "NoStack",
    "NotIsolated",
    "ServicesFailed",
    "UnsupportedLogVersion",
]


class DrillError(RuntimeError):
    """Base of every error the drill runner raises on purpose; the message says what to fix."""


class InvalidDrillLog(DrillError):
    """A drill log file is not valid: not a drill log, a bad line, a wrong count."""


class UnsupportedLogVersion(InvalidDrillLog):
    """A drill log's format version is newer than this code reads (or unknown)."""


class EmptyWindow(DrillError):
    """A recording window holds no time: its start is not before its end."""


class NotIsolated(DrillError):
    """A replay was aimed at a namespace that is not a drill namespace (e.g. live)."""


class NoStack(DrillError):
    """No broker or database to replay into: no running stack and no addresses given."""


class ServicesFailed(DrillError):
    """The drill namespace's services could not be started or stopped working."""
