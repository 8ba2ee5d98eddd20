"""気象庁防災情報XML in: a JMA message → ``hazard.*`` events, through the same outbox.

The format itself (safe parse, XSD validation, typed reading, the mapping to
payloads) is :mod:`schemas.jma`; this module is intake's adapter around it:

- :func:`map_bytes` parses, validates and maps (blocking: intake runs it in its
  bounded :class:`~services.intake.parsepool.ParsePool`, never on the event loop —
  a 500 kB message with its schema validation takes tens of milliseconds; the
  message's size and element count are bounded by :func:`schemas.jma.parse_jma`)
  and translates
  :class:`~schemas.jma.JmaError` into intake's refusals, pointer and all:
  too large 413, not well-formed 400, schema-invalid or unsupported 422 — the
  answers the CAP path gives;
- :func:`jma_scope` is *who* said it: the idempotency scope of every JMA input
  is the message's editorial office (``jma:<EditorialOffice>``), not the token
  that carried it, so a message pushed by one sensor and polled by the feed
  bridge is one input with one set of event ids;
- :func:`jma_events` builds the envelopes: one ``hazard.warning`` per warning
  (cancellations of a bodiless 取消 included), one ``hazard.seismic_intensity``
  (or, for a quake's 取消, its withdrawal),
  ``exercise`` set for 訓練 and 試験, event ids derived from the message identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from schemas.envelope import Envelope, new_event
from schemas.hazards import (
    HazardWarning,
    HazardWarningPayload,
    SeismicIntensity,
    SeismicIntensityPayload,
)
from schemas.jma import (
    DEFAULT_MAX_ELEMENTS,
    JmaAreaTable,
    JmaError,
    JmaNotWellFormed,
    JmaSignals,
    JmaTooLarge,
    map_message,
    read_jma,
)
from schemas.jma.mapping import cancellation_warnings, quake_withdrawals
from schemas.topics import LIVE
from services.intake.domain import SOURCE, SenderBinding, bound, input_id
from services.intake.errors import (
    BodyTooLarge,
    FieldError,
    InputRefused,
    InvalidInput,
    MalformedInput,
)

__all__ = ["JmaInput", "jma_events", "jma_scope", "map_bytes"]

_MAX_ERRORS: Final = 20


@dataclass(frozen=True)
class JmaInput:
    """What one message becomes: its signals and the warnings to write (cancellations too)."""

    signals: JmaSignals
    warnings: tuple[HazardWarningPayload, ...]
    notes: tuple[str, ...]
    """Parts not applied, each with why (the mapping's notes)."""
    withdrawals: tuple[SeismicIntensityPayload, ...] = ()
    """The quakes a 取消 withdraws."""


def jma_scope(signals: JmaSignals) -> str:
    """The sender a JMA input is recorded under: ``jma:<EditorialOffice>``.

    The idempotency scope and the sender its warnings are bound to (a message pushed
    by a sensor and polled from the feed is one input). A sender has no spaces: any
    (full-width ones included) are dropped from the office's name.
    """
    return "jma:" + re.sub(r"\s+", "", signals.editorial_office)


def _refusal(error: JmaError) -> InputRefused:
    errors = [FieldError(p.pointer if p.line is None else f"{p.pointer or '/'} (line {p.line})",
                         p.message[:1000], p.code)
              for p in error.problems[:_MAX_ERRORS]]
    if isinstance(error, JmaTooLarge):
        return BodyTooLarge(str(error), errors=errors)
    if isinstance(error, JmaNotWellFormed):
        return MalformedInput(str(error), errors=errors)
    return InvalidInput(str(error), errors=errors)


def map_bytes(data: bytes, table: JmaAreaTable, *, max_bytes: int,
              max_elements: int = DEFAULT_MAX_ELEMENTS) -> JmaInput:
    """Parse, validate and map one message (blocking: run it off the loop)."""
    try:
        signals = map_message(
            read_jma(data, max_bytes=max_bytes, max_elements=max_elements), table)
    except JmaError as e:
        raise _refusal(e) from None
    cancellations = cancellation_warnings(signals, table)
    return JmaInput(signals, (*signals.warnings, *cancellations), signals.notes,
                    quake_withdrawals(signals))


def jma_events(mapped: JmaInput, scope: str, client_id: str, now: datetime, *,
               binding: SenderBinding, namespace: str = LIVE) -> tuple[Envelope, ...]:
    """The events of one message, bound to ``binding``'s sender; ids derive from the
    message's identity (in ``namespace``), so a resend writes none."""
    signals = mapped.signals
    exercise = signals.exercise or signals.test
    occurred = signals.report_date_time
    events: list[Envelope] = [
        new_event(HazardWarning, bound(w, binding), occurred_at=occurred, source=SOURCE,
                  recorded_at=now, exercise=exercise,
                  event_id=input_id(namespace, "hazard.warning", scope, client_id, i))
        for i, w in enumerate(mapped.warnings)
    ]
    if signals.seismic is not None:
        events.append(new_event(
            SeismicIntensity, bound(signals.seismic, binding), occurred_at=occurred,
            source=SOURCE, recorded_at=now, exercise=exercise,
            event_id=input_id(namespace, "hazard.seismic_intensity", scope, client_id)))
    events += [
        new_event(SeismicIntensity, bound(w, binding), occurred_at=occurred, source=SOURCE,
                  recorded_at=now, exercise=exercise,
                  event_id=input_id(namespace, "hazard.seismic_intensity", scope, client_id,
                                    "withdrawn", i))
        for i, w in enumerate(mapped.withdrawals)
    ]
    return tuple(events)
