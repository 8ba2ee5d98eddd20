"""Dead-lettering, once: how a record a service gives up on becomes a :class:`DeadLetter`.

- :func:`error_text`: the error as the letter states it (``Type: message``, or
  just ``Type`` when the exception has no message; :class:`DeadLetter` bounds
  it to 4000 characters).
- :func:`field_problems`: an :class:`~schemas.errors.InvalidEvent`'s field
  problems as :class:`~schemas.common.Problem` values (at most 100, each field
  and message bounded as the record requires).
- :func:`letter_for`: the letter for one Kafka record (aiokafka's or faust's).
- :class:`FaustDeadLetters`: a faust agent's dead-letter topic; produces the
  letter at once and waits for the broker's acknowledgement. The aiokafka
  services dead-letter through :meth:`services.common.bus.Publisher.dead_letter`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from faust.types import Message

from schemas.common import Problem, utc_now
from schemas.deadletter import DeadLetter
from schemas.errors import InvalidEvent

__all__ = ["FaustDeadLetters", "Record", "error_text", "field_problems", "letter_for"]

log = logging.getLogger(__name__)

_MAX_PROBLEMS = 100
_MAX_FIELD = 200
_MAX_MESSAGE = 1000


class Record(Protocol):
    """What a dead letter keeps of the record it was read from."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def error_text(error: BaseException | str) -> str:
    """The error as a dead letter states it: the exception's type, then its message."""
    if isinstance(error, str):
        return error
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def field_problems(error: BaseException | str) -> tuple[Problem, ...]:
    """The field problems of an :class:`InvalidEvent` (code ``invalid``); none otherwise."""
    if not isinstance(error, InvalidEvent):
        return ()
    return tuple(
        Problem(code="invalid", field=p.field[:_MAX_FIELD] or None,
                message=p.message[:_MAX_MESSAGE] or "invalid")
        for p in error.problems[:_MAX_PROBLEMS]
    )


def letter_for(record: Record, error: BaseException | str, *, service: str,
               failed_at: datetime, problems: tuple[Problem, ...] | None = None) -> DeadLetter:
    """The dead letter for ``record``; ``problems`` defaults to :func:`field_problems`."""
    return DeadLetter.from_record(
        topic=record.topic, partition=record.partition, offset=record.offset,
        key=record.key, value=record.value, error=error_text(error), service=service,
        failed_at=failed_at, problems=field_problems(error) if problems is None else problems,
    )


class FaustDeadLetters:
    """A faust app's dead-letter topic, written by its agents for ``service``."""

    def __init__(self, topic: Any, service: str,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.topic = topic
        self.service = service
        self._clock = clock

    async def send(self, message: Message, error: BaseException | str, *,
                   problems: tuple[Problem, ...] | None = None) -> DeadLetter:
        """Dead-letter ``message`` with ``error`` and wait for the acknowledgement."""
        letter = letter_for(message, error, service=self.service, failed_at=self._clock(),
                            problems=problems)
        # force=True: produce now, not when the input offset is committed.
        pending = await self.topic.send(
            key=message.key, value=letter.model_dump_json().encode("utf-8"), force=True)
        await pending
        log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition,
                    message.offset, letter.error)
        return letter
