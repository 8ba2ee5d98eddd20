"""Exceptions of the shelter tracker: one base, named after the rule broken.

::

    ShelterTrackerError         the record cannot be applied (it is dead-lettered)
    ├── ShelterNotRegistered    the update names a shelter the region pack does not have
    └── ShelterUpdateRejected   an update's values break a rule; ``field`` names the one
                                at fault

The adapter (:mod:`services.shelter_tracker.app`) dead-letters every one of
these with its message and goes on; a failure to produce propagates instead.
The region pack and the thresholds report their own problems through
:mod:`schemas.region.errors` (the file and field at fault).
"""

from __future__ import annotations

__all__ = ["ShelterNotRegistered", "ShelterTrackerError", "ShelterUpdateRejected"]


class ShelterTrackerError(Exception):
    """Base of the tracker's errors: the record cannot be applied (it is dead-lettered)."""


class ShelterNotRegistered(ShelterTrackerError):
    """The update names a shelter that is not a shelter of the region pack."""


class ShelterUpdateRejected(ShelterTrackerError):
    """An update's values break a rule; ``field`` names the one at fault."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")
