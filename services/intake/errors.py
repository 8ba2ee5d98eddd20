"""Exceptions of intake: one base, named after the rule broken.

::

    IntakeError
    ├── InputRefused            an input is refused and nothing is recorded; .errors name the fields
    │   ├── MalformedInput      not JSON, not well-formed XML, not UTF-8
    │   ├── InvalidInput        well-formed but breaks the contract (every field in .errors)
    │   ├── NotPermitted        the token's role may not do this
    │   │   ├── SenderNotPermitted  the token may not speak for the sender the input names
    │   │   └── SiteNotPermitted    a shelter_staff token may not act at that site
    │   ├── UnknownReport       no report with that id is visible to the caller
    │   ├── UnknownShelter      the URL names no shelter of the region pack
    │   ├── UnknownSupplyRequest  the URL names no supply request of this namespace
    │   ├── UnknownGenerator    the URL names no generator registered in this namespace
    │   ├── TransitionRefused   the supply request's status does not allow the step
    │   ├── UnknownHousehold    no household with that code is checked in at that shelter
    │   ├── HouseholdAlreadyCheckedIn  a check-in of a code that is checked in already
    │   ├── UnknownAtHomeHousehold  a welfare check names no household reported at home
    │   ├── ClientIdConflict    the client id was already used for a different body
    │   ├── UnsupportedMediaType  the Content-Type (or charset) is not one the route reads
    │   ├── BodyTooSlow         the body did not arrive within the read timeout
    │   ├── BodyTooLarge        the body exceeds the route's size limit
    │   │   └── TooManyElements an XML document has more elements of a kind than allowed
    │   ├── RateLimited         a token subject's or an address's bucket is empty; .retry_after
    │   └── Overloaded          the parsing pool's queue is full; .retry_after in seconds
    ├── RawRejected             an ``intake.raw`` record cannot become an input (dead-lettered)
    ├── IntakeTablesMissing     the migrations that create intake's tables were not applied
    └── IntakeStartupError      intake cannot start: region pack, database or port

The classes carry what went wrong, never how it is answered: the HTTP status
and body of each :class:`InputRefused` are one table in
:mod:`services.intake.contract`. The raw-topic consumer turns an
:class:`InputRefused` into :class:`RawRejected` (the record is dead-lettered
and the consumer moves on); the last two stop the process with a message that
says what to fix. Driver errors are translated where they are caught
(``raise IntakeStartupError(...) from e``); a storage outage is not intake's
rule and propagates as the driver's error (answered 503, retried by the relay
and the raw consumer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BodyTooLarge",
    "BodyTooSlow",
    "ClientIdConflict",
    "FieldError",
    "HouseholdAlreadyCheckedIn",
    "InputRefused",
    "IntakeError",
    "IntakeStartupError",
    "IntakeTablesMissing",
    "InvalidInput",
    "MalformedInput",
    "NotPermitted",
    "Overloaded",
    "RateLimited",
    "RawRejected",
    "SenderNotPermitted",
    "SiteNotPermitted",
    "TooManyElements",
    "TransitionRefused",
    "UnknownAtHomeHousehold",
    "UnknownGenerator",
    "UnknownHousehold",
    "UnknownReport",
    "UnknownShelter",
    "UnknownSupplyRequest",
    "UnsupportedMediaType",
]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with the input: a JSON pointer (RFC 6901) into the body and a message."""

    pointer: str
    """``/severity``, ``/location/lat``; ``""`` for the whole body."""
    message: str
    code: str = "invalid"


class IntakeError(Exception):
    """Base of every error raised by :mod:`services.intake`."""


class InputRefused(IntakeError):
    """An input intake refuses without recording anything; ``errors`` lists the fields."""

    def __init__(self, message: str, *, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errors: tuple[FieldError, ...] = tuple(errors)


class MalformedInput(InputRefused):
    """The body is not JSON (or not well-formed XML, or not UTF-8)."""


class InvalidInput(InputRefused):
    """The body is well-formed but breaks the contract; ``errors`` lists every field."""


class NotPermitted(InputRefused):
    """The token's role may not do this."""


class SenderNotPermitted(NotPermitted):
    """The input names a sender (CAP ``sender``, JMA office, ``sender``) the token is not."""


class SiteNotPermitted(NotPermitted):
    """A shelter_staff token acts only at the sites of its ``shelters`` claim (else of its
    ``areas``); the URL names another."""


class UnknownReport(InputRefused):
    """No report with that id is visible to the caller."""


class UnknownShelter(InputRefused):
    """The URL names no shelter of the region pack."""


class UnknownSupplyRequest(InputRefused):
    """The URL names no supply request of this namespace."""


class UnknownGenerator(InputRefused):
    """The URL names no generator registered in this namespace."""


class TransitionRefused(InputRefused):
    """A supply request's current status does not allow the step (the message names both;
    :func:`schemas.supplies.next_status` is the table)."""


class UnknownHousehold(InputRefused):
    """No household with that code is checked in at the shelter the URL names."""


class HouseholdAlreadyCheckedIn(InputRefused):
    """A check-in names a household code that is checked in already (here or elsewhere)."""


class UnknownAtHomeHousehold(InputRefused):
    """A welfare check names a household no at-home report of this namespace has."""


class ClientIdConflict(InputRefused):
    """The client id was already used for a different body."""


class UnsupportedMediaType(InputRefused):
    """The request's Content-Type (or its charset) is not one the route reads."""


class BodyTooSlow(InputRefused):
    """The body did not arrive within the read timeout (a slow or stalled client)."""


class BodyTooLarge(InputRefused):
    """The body exceeds the route's size limit (refused while reading, not after)."""


class TooManyElements(BodyTooLarge):
    """An XML document has more elements of one kind (info, area, circle…) than allowed;
    ``errors`` names each kind with its count and limit."""


class RateLimited(InputRefused):
    """A bucket (a token subject's, or an address's without a valid token) is empty;
    ``retry_after`` is whole seconds to wait."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(InputRefused):
    """The pool that parses XML has as many documents waiting as it may; nothing was read
    into the record, and ``retry_after`` says when to try again."""

    def __init__(self, message: str, *, retry_after: int = 1,
                 errors: Sequence[FieldError] = ()) -> None:
        super().__init__(message, errors=errors)
        self.retry_after = retry_after


class RawRejected(IntakeError):
    """A raw record that cannot become an input; carries what goes into the dead letter."""

    def __init__(self, error: str, problems: tuple[FieldError, ...] = ()) -> None:
        super().__init__(error)
        self.problems = problems


class IntakeTablesMissing(IntakeError):
    """The database lacks intake's tables: migrations have not been applied."""


class IntakeStartupError(IntakeError):
    """Intake cannot start; the message says what to fix."""
