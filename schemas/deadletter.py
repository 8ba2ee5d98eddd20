"""The dead-letter record: a message a service could not process, kept with its error.

Not an event of the union: the original bytes may not be an event at all, so
the record stores them verbatim (as text when they are UTF-8, else base64) next
to where they came from and why they failed. It travels on the ``deadletter``
topic, keyed by the original key, and a person or a repair tool can replay it.
The one exception to "verbatim": bearer tokens are removed before a letter is made
(:func:`services.common.deadletter.letter_for`).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, Strict, StringConstraints

from schemas.common import ContractModel, Problem, Source, UtcDatetime

__all__ = ["DeadLetter", "Encoding"]

# Kafka's default maximum message is 1 MiB; base64 grows it by a third.
_MAX_ORIGINAL_CHARS = 1_500_000


class Encoding(StrEnum):
    """How the original bytes are stored in a text field."""

    UTF8 = "utf-8"
    BASE64 = "base64"


def _encode(data: bytes) -> tuple[str, Encoding]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), Encoding.BASE64
    # NUL cannot be stored in PostgreSQL text; such input is kept as base64.
    if "\x00" in text:
        return base64.b64encode(data).decode("ascii"), Encoding.BASE64
    return text, Encoding.UTF8


def _decode(text: str, encoding: Encoding) -> bytes:
    if encoding is Encoding.UTF8:
        return text.encode("utf-8")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise ValueError(f"not valid base64: {e}") from e


class DeadLetter(ContractModel):
    """A record that failed processing, with the failure and where it came from."""

    topic: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,249}$")]
    """The (qualified) topic the record was read from."""
    partition: Annotated[int, Strict(), Field(ge=0, le=1_000_000)]
    """Its partition."""
    offset: Annotated[int, Strict(), Field(ge=0)]
    """Its offset."""
    key: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    """The original key (encoded as ``key_encoding``), null if it had none."""
    key_encoding: Encoding = Encoding.UTF8
    """How ``key`` is stored."""
    original: Annotated[str, StringConstraints(max_length=_MAX_ORIGINAL_CHARS)] | None = None
    """The original value (encoded as ``original_encoding``), null for a tombstone."""
    original_encoding: Encoding = Encoding.UTF8
    """How ``original`` is stored."""
    error: Annotated[str, StringConstraints(min_length=1, max_length=4000)]
    """The error, as text (exception type and message)."""
    problems: Annotated[tuple[Problem, ...], Field(max_length=100)] = ()
    """Field-level problems, when the error was a validation failure."""
    service: Source
    """The service that gave up on it."""
    failed_at: UtcDatetime
    """When it gave up."""

    @classmethod
    def from_record(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        error: str,
        service: str,
        failed_at: datetime,
        problems: tuple[Problem, ...] = (),
    ) -> DeadLetter:
        """Wrap a raw Kafka record, choosing text or base64 so no byte is lost."""
        key_text, key_enc = _encode(key) if key is not None else (None, Encoding.UTF8)
        value_text, value_enc = _encode(value) if value is not None else (None, Encoding.UTF8)
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key_text,
            key_encoding=key_enc,
            original=value_text,
            original_encoding=value_enc,
            # Exception text is arbitrary: keep it storable (no NUL) and bounded.
            error=error.replace("\x00", "\\x00")[:4000] or "unknown error",
            problems=problems,
            service=service,
            failed_at=failed_at,
        )

    def key_bytes(self) -> bytes | None:
        """The original key bytes."""
        return None if self.key is None else _decode(self.key, self.key_encoding)

    def original_bytes(self) -> bytes | None:
        """The original value bytes, exactly as read."""
        return None if self.original is None else _decode(self.original, self.original_encoding)
