"""Strict reading of a request body and the JSON pointers of its errors.

:func:`parse_json` refuses what a lenient decoder would guess at (duplicate
keys, ``NaN``, lone surrogates); :func:`field_errors` turns a pydantic
validation into :class:`~services.intake.errors.FieldError` values whose
pointers are into the body as sent, and :func:`to_problems` into the dotted
:class:`~schemas.common.Problem` paths of the events. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError

from schemas.common import NonFiniteNumber, Problem, refuse_non_finite
from services.intake.errors import FieldError, MalformedInput

__all__ = ["check_client_id", "field_errors", "parse_json", "pointer", "to_problems"]

# Control characters cannot be stored in PostgreSQL jsonb (NUL) and have no place
# in an error message; a key full of them is replaced, not echoed.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MAX_POINTER = 500
_MAX_MESSAGE = 1000


class _DuplicateKey(ValueError):
    pass



def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"the key {_clean(key, 100)!r} appears twice in one object")
        out[key] = value
    return out



def parse_json(body: bytes) -> Any:
    """Decode a UTF-8 JSON body strictly; raise :class:`MalformedInput` with the reason.

    Refused as malformed: invalid UTF-8, invalid JSON, ``NaN``/``Infinity``, a key
    repeated in one object (ambiguous: which value did the sender mean?), lone
    UTF-16 surrogates (they cannot be re-encoded), and absurd nesting or numbers.
    """
    try:
        text = body.decode("utf-8")
        document = json.loads(
            text, parse_constant=refuse_non_finite, object_pairs_hook=_no_duplicates
        )
        # Lone surrogates ("\ud800") survive json.loads but not UTF-8 encoding,
        # which every later step (events, PostgreSQL) needs.
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedInput(f"the body is not valid UTF-8: {e.reason} at byte {e.start}") from e
    except UnicodeEncodeError as e:
        raise MalformedInput("the body contains a lone UTF-16 surrogate escape") from e
    except json.JSONDecodeError as e:
        raise MalformedInput(f"the body is not valid JSON: {e.msg} at line {e.lineno} "
                             f"column {e.colno}") from e
    except (_DuplicateKey, NonFiniteNumber) as e:
        raise MalformedInput(f"the body is not acceptable JSON: {e}") from e
    except RecursionError as e:
        raise MalformedInput("the body's JSON is nested too deeply") from e
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise MalformedInput(f"the body is not acceptable JSON: {e}") from e
    return document


def _clean(text: str, limit: int) -> str:
    cleaned = _CONTROL.sub("\ufffd", text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def pointer(loc: Iterable[int | str]) -> str:
    """An RFC 6901 JSON pointer for a pydantic error location (``("a", 0)`` → ``/a/0``)."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc]
    return _clean("".join("/" + p for p in parts), _MAX_POINTER)


def _message(msg: str) -> str:
    # pydantic prefixes errors raised by our validators; the reader needs only the rule.
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return _clean(msg, _MAX_MESSAGE) or "invalid"


def field_errors(
    error: ValidationError, *, tag: str | None = None, prefix: Sequence[str | int] = ()
) -> tuple[FieldError, ...]:
    """Every error of a pydantic validation as a :class:`FieldError` with a JSON pointer.

    ``tag``: a discriminated union puts the chosen tag first in each location; it
    is dropped so the pointer is into the body. ``prefix``: where the validated
    document sits inside the body (e.g. ``("data",)`` for the raw envelope).
    """
    out: list[FieldError] = []
    for e in error.errors(include_url=False, include_input=False):
        loc = tuple(e["loc"])
        if tag is not None and loc[:1] == (tag,):
            loc = loc[1:]
        code = "missing" if e["type"] == "missing" else "invalid"
        if e["type"] in ("union_tag_not_found", "union_tag_invalid"):
            # The union reports a bad discriminator at the object; point at the field.
            loc = (*loc, str(e.get("ctx", {}).get("discriminator", "")).strip("'"))
            code = "missing" if e["type"] == "union_tag_not_found" else "invalid"
        out.append(FieldError(pointer((*prefix, *loc)), _message(e["msg"]), code))
    return tuple(out)


def to_problems(errors: Sequence[FieldError]) -> tuple[Problem, ...]:
    """The errors as contract :class:`~schemas.common.Problem` values (dotted paths, ≤100)."""
    problems = []
    for e in errors[:100]:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in e.pointer.split("/")[1:]]
        dotted = _clean(".".join(parts).strip("."), 200) or None
        code = e.code if re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", e.code) else "invalid"
        problems.append(Problem(code=code, field=dotted, message=_clean(e.message, 1000)))
    return tuple(problems)


def check_client_id(value: str | None, *, what: str = "Idempotency-Key") -> str | None:
    """Validate a client-chosen id (header or envelope field) like a client_report_id."""
    if value is None:
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", value):
        raise MalformedInput(
            f"{what} must be 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return value
