"""Exceptions of the evacuation decision service: one base, named after the rule broken.

::

    EvacuationError
    └── CommandRefused      an HQ command that cannot be carried out; ``code`` names the
                            rule (forbidden_role, unknown_order, already_lifted, ...)
    └── EvacuationStartupError  the process cannot start (a bad region pack or rules file);
                                also a RuntimeError, as it was before the tree existed

:class:`CommandRefused` never leaves the engine: it becomes one
``evacuation.command_rejected`` event with its code and reason, so the
engine's contract (an event in, events out) holds for a refused command too.
The rules file and the region pack report their own problems through
:mod:`schemas.region.errors` (the file and field at fault).
"""

from __future__ import annotations

__all__ = ["CommandRefused", "EvacuationError", "EvacuationStartupError"]


class EvacuationError(Exception):
    """Base of every error the evacuation decision service raises on purpose."""


class CommandRefused(EvacuationError):
    """A command cannot be carried out (turned into ``evacuation.command_rejected``)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class EvacuationStartupError(EvacuationError, RuntimeError):
    """The decision service cannot start; the message says what to fix."""
