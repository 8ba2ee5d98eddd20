"""The drill runner's exceptions: one base class, one subclass per rule broken."""

from __future__ import annotations


class DrillError(RuntimeError):
    """Base of every error the drill runner raises on purpose; the message says what to fix."""


class InvalidDrillLog(DrillError):
    """A drill log file is not valid: not a drill log, a bad line, a wrong count."""


class UnsupportedLogVersion(InvalidDrillLog):
    """A drill log's format version is newer than this code reads (or unknown)."""


class NotIsolated(DrillError):
    """A replay was aimed at a namespace that is not a drill namespace (e.g. live)."""


class NoStack(DrillError):
    """No broker or database to replay into: no running stack and no addresses given."""


class ServicesFailed(DrillError):
    """The drill namespace's services could not be started or stopped working."""
