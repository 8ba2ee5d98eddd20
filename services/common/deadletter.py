"""Dead-lettering, once: how a record a service gives up on becomes a :class:`DeadLetter`.

- :func:`error_text`: the error as the letter states it (``Type: message``, or
  just ``Type`` when the exception has no message; :class:`DeadLetter` bounds
  it to 4000 characters).
- :func:`field_problems`: an :class:`~schemas.errors.InvalidEvent`'s field
  problems as :class:`~schemas.common.Problem` values (at most 100, each field
  and message bounded as the record requires).
- :func:`letter_for`: the letter for one Kafka record (aiokafka's or faust's),
  with every bearer token removed (:func:`without_tokens`).
- :class:`FaustDeadLetters`: a faust agent's dead-letter topic; produces the
  letter at once and waits for the broker's acknowledgement. The aiokafka
  services dead-letter through :meth:`services.common.bus.Publisher.dead_letter`.

A letter never keeps a bearer token: dead letters are read by people and repair tools,
stored for good in ``dead_letters``, and a token in one would let its reader act as the
sender until it expired. A raw intake record's ``"token"`` field keeps its key with the
value :data:`TOKEN_REMOVED` — a string no verifier accepts — so a replayed letter is
refused as unauthenticated instead of being trusted as a token-less (internal) record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from faust.types import Message

from schemas.common import Problem, utc_now
from schemas.deadletter import DeadLetter
from schemas.errors import InvalidEvent

__all__ = ["TOKEN_REMOVED", "FaustDeadLetters", "Record", "error_text", "field_problems",
           "letter_for", "without_tokens"]

log = logging.getLogger(__name__)

_MAX_PROBLEMS = 100
_MAX_FIELD = 200
_MAX_MESSAGE = 1000

TOKEN_REMOVED = "[token removed]"
"""What stands where a bearer token was."""

# The raw envelope's "token" field, whatever it holds (JSON text, even when malformed).
_TOKEN_FIELD = re.compile(rb'("token"\s*:\s*")(?:[^"\\]|\\.)*(")')
# A JWT anywhere (its header is base64url JSON, so it starts with "eyJ"), and
# whatever follows "Bearer " in a quoted Authorization header.
_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BEARER = re.compile(rb"(?i)(\bbearer\s+)[^\s\"',;]+")


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


def without_tokens(data: bytes) -> bytes:
    """``data`` with every bearer token replaced by :data:`TOKEN_REMOVED`."""
    removed = TOKEN_REMOVED.encode()
    data = _TOKEN_FIELD.sub(lambda m: m[1] + removed + m[2], data)
    data = _BEARER.sub(lambda m: m[1] + removed, data)
    return _JWT.sub(removed, data)


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
    """The dead letter for ``record`` without its bearer tokens; ``problems`` defaults to
    :func:`field_problems`."""
    key, value = record.key, record.value
    error_line = without_tokens(error_text(error).encode()).decode()
    return DeadLetter.from_record(
        topic=record.topic, partition=record.partition, offset=record.offset,
        key=None if key is None else without_tokens(key),
        value=None if value is None else without_tokens(value),
        error=error_line, service=service,
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
            key=letter.key_bytes(), value=letter.model_dump_json().encode("utf-8"),
            force=True)
        await pending
        log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition,
                    message.offset, letter.error)
        return letter
