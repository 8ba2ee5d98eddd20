"""Kafka ingest of the namespace's ``intake.raw`` topic (machine sources).

Record format (UTF-8 JSON; the Kafka key is free, e.g. the gauge or feed id)::

    {
      "kind":   "report" | "shelter_status" | "gauge_reading" | "warning"
                | "seismic_intensity" | "cap",
      "source": "kandagawa-feed",        # the sending feed or bridge (a slug), required
      "id":     "reading-000123",        # optional idempotency key (client-id syntax)
      "token":  "<bearer token>",        # optional, see below
      "data":   {...}                    # the HTTP body of that kind; for "cap" the XML text
    }

``data`` is exactly what the matching HTTP endpoint takes: a report body for
``report``; a shelter status body including ``shelter_id`` for
``shelter_status``; a hazard observation body for the three hazard kinds (its
``observation`` field may be left out: the ``kind`` supplies it); the CAP XML
document as a string for ``cap``.

Trust: a record *with* a ``token`` is checked like an HTTP request (signature,
expiry, role permissions) — a bridge such as the gateway forwards the user's
token. A record *without* one is trusted as coming from inside the deployment:
whoever can produce to ``intake.raw`` can already produce to the event topics,
so a token would add no protection there. It acts with hq rights under the
subject ``raw:<source>`` (the idempotency scope and default reporter team).

Idempotency: reports use their ``client_report_id``, CAP its sender and
identifier; other kinds use ``id`` when given, else the record's own
``topic:partition:offset``, so re-reading a record after a crash never writes a
second event.

Failure handling: anything wrong with a record (bytes that are not JSON, an
invalid envelope or body, a bad token, a refused role, a conflict) sends it to
the namespace's ``deadletter`` topic with the error, the field problems and the
original bytes, and the consumer moves on. Unavailable broker or database is not
the record's fault: the batch is retried (offsets uncommitted) after a backoff.
Offsets are committed only after every record of a batch is durably recorded
or dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Container
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final

from aiokafka.structs import ConsumerRecord
from pydantic import JsonValue, StringConstraints, ValidationError

from infra.kafka import clients
from infra.settings import Settings
from schemas.common import ContractModel, Source
from schemas.reports import ClientReportId
from schemas.topics import qualified
from services.common.auth import AuthError, Principal, Role, TokenRevoked, verify_token
from services.common.bus import Publisher
from services.common.retry import sleep_until
from services.intake.errors import (
    FieldError,
    InputRefused,
    InvalidInput,
    MalformedInput,
    RawRejected,
)
from services.intake.parsing import field_errors, parse_json, to_problems
from services.intake.relay import BACKOFF_MAX, BACKOFF_MIN, TRANSIENT
from services.intake.service import Intake, Outcome

log = logging.getLogger(__name__)

__all__ = ["Ingest", "RawEnvelope", "RawKind"]

SERVICE: Final = "intake"
_MAX_RECORDS: Final = 200


class RawKind(StrEnum):
    """What a raw record carries."""

    REPORT = "report"
    SHELTER_STATUS = "shelter_status"
    GAUGE_READING = "gauge_reading"
    WARNING = "warning"
    SEISMIC_INTENSITY = "seismic_intensity"
    CAP = "cap"


class RawEnvelope(ContractModel):
    """One ``intake.raw`` record (see the module docstring)."""

    kind: RawKind
    """What ``data`` is."""
    source: Source
    """The sending feed or bridge."""
    id: ClientReportId | None = None
    """Idempotency key; default: the record's topic, partition and offset."""
    token: Annotated[str, StringConstraints(min_length=1, max_length=8192)] | None = None
    """A bearer token to act as; without one the record is trusted (hq rights)."""
    data: JsonValue
    """The body, as the matching HTTP endpoint takes it (CAP: the XML text)."""


_HAZARD_KINDS: Final = (RawKind.GAUGE_READING, RawKind.WARNING, RawKind.SEISMIC_INTENSITY)


def _prefixed(errors: tuple[FieldError, ...], prefix: str) -> tuple[FieldError, ...]:
    return tuple(FieldError(prefix + e.pointer, e.message, e.code) for e in errors)


class Ingest:
    """Consumes ``intake.raw`` into :class:`~services.intake.service.Intake`."""

    def __init__(self, intake: Intake, settings: Settings, *, group_id: str | None = None,
                 denylist: Container[str] = frozenset()) -> None:
        self.intake = intake
        self.settings = settings
        self.denylist = denylist
        self.topic = qualified("intake.raw", settings.namespace)
        # One group per namespace, so a drill's intake never steals live records.
        self.group_id = group_id or (
            f"sonae-intake.{settings.namespace}" if settings.namespace else "sonae-intake")

    async def handle(self, value: bytes | None, *, topic: str, partition: int,
                     offset: int) -> Outcome:
        """Turn one raw record into an input; raise :class:`RawRejected` for a bad one."""
        try:
            return await self._handle(value, f"{topic}:{partition}:{offset}")
        except InputRefused as e:
            raise RawRejected(f"{type(e).__name__}: {e.message}", e.errors) from e
        except AuthError as e:
            raise RawRejected(f"{type(e).__name__}: {e}",
                              (FieldError("/token", str(e), "unauthorized"),)) from e

    async def _handle(self, value: bytes | None, record_id: str) -> Outcome:
        if value is None:
            raise MalformedInput("the record has no value")
        try:
            envelope = RawEnvelope.model_validate(parse_json(value))
        except ValidationError as e:
            raise InvalidInput("the record is not a raw intake envelope",
                               errors=field_errors(e)) from None
        if envelope.token is not None:
            principal = verify_token(self.settings.token_secret, envelope.token,
                                     max_lifetime=self.settings.token_max_ttl)
            if principal.token_id in self.denylist:
                raise TokenRevoked("the token has been revoked")
        else:
            principal = Principal(subject=f"raw:{envelope.source}", role=Role.HQ,
                                  token_id="", expires_at=datetime.max.replace(tzinfo=UTC))
        client_id = envelope.id or record_id
        data = envelope.data
        try:
            if envelope.kind is RawKind.REPORT:
                outcome = await self.intake.submit_report(principal, data)
            elif envelope.kind is RawKind.SHELTER_STATUS:
                shelter_id = data.get("shelter_id") if isinstance(data, dict) else None
                if not isinstance(shelter_id, str):
                    raise InvalidInput("a shelter status needs data.shelter_id", errors=[
                        FieldError("/shelter_id", "Field required", "missing")])
                outcome = await self.intake.submit_shelter_status(
                    principal, shelter_id, data, client_id)
            elif envelope.kind in _HAZARD_KINDS:
                if isinstance(data, dict) and "observation" not in data:
                    data = {**data, "observation": envelope.kind.value}
                outcome = await self.intake.submit_hazard(principal, data, client_id)
            else:
                if not isinstance(data, str):
                    raise InvalidInput("a cap record's data is the XML document as a string",
                                       errors=[FieldError("", "expected a string")])
                outcome = await self.intake.submit_cap(principal, data.encode("utf-8"))
        except InputRefused as e:
            e.errors = _prefixed(e.errors, "/data")
            raise
        if outcome.status not in (200, 202):
            errors = tuple(
                FieldError("/data" + str(x.get("pointer", "")), str(x.get("message", "")),
                           str(x.get("code", "invalid")))
                for x in outcome.body.get("errors", ()) if isinstance(x, dict)
            )
            raise RawRejected(f"{outcome.status}: {outcome.body.get('message', '')}", errors)
        return outcome

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; reconnect with backoff when Kafka or PostgreSQL fail."""
        delay = BACKOFF_MIN
        failing = False
        while not stop.is_set():
            consumer = clients.consumer(self.settings, self.topic, group_id=self.group_id)
            producer = clients.producer(self.settings)
            try:
                await consumer.start()
                await producer.start()
                publisher = Publisher(producer, self.settings.namespace)
                if failing:
                    log.info("raw ingest reconnected")
                failing, delay = False, BACKOFF_MIN
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=500, max_records=_MAX_RECORDS)
                    for records in batches.values():
                        for record in records:
                            await self._process(record, publisher)
                    if batches:
                        # Every record above is in the outbox or dead-lettered.
                        await consumer.commit()
            except TRANSIENT as e:
                if not failing:
                    log.warning("raw ingest unavailable (%s: %s); retrying with backoff",
                                type(e).__name__, e)
                failing = True
                await sleep_until(stop, delay)
                delay = min(delay * 2, BACKOFF_MAX)
            finally:
                for client in (consumer, producer):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.stop(), 5.0)

    async def _process(self, record: ConsumerRecord[bytes, bytes], publisher: Publisher) -> None:
        try:
            outcome = await self.handle(record.value, topic=record.topic,
                                        partition=record.partition, offset=record.offset)
        except RawRejected as e:
            await publisher.dead_letter(record, str(e), service=SERVICE,
                                        problems=to_problems(e.problems))
            self.intake.metrics.raw_records.labels("dead_lettered").inc()
            return
        except TRANSIENT:
            raise
        except Exception as e:
            # A record that trips a bug must not block the partition behind it.
            log.exception("raw record %s[%d]@%d failed unexpectedly", record.topic,
                          record.partition, record.offset)
            await publisher.dead_letter(record, e, service=SERVICE)
            self.intake.metrics.raw_records.labels("dead_lettered").inc()
            return
        self.intake.metrics.raw_records.labels(
            "accepted" if outcome.status == 202 else "duplicate").inc()
