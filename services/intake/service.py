"""Intake's handlers: one path from a validated input to a committed outbox write.

HTTP (:mod:`services.intake.http`) and the raw topic
(:mod:`services.intake.ingest`) both call :class:`Intake`, so an input gets the
same validation, permissions, enrichment and idempotency whichever way it came.
Each ``submit_*`` returns an :class:`Outcome` (202 written, 200 identical
resend, 409 conflict, 422 a *recorded* rejection) or raises an
:class:`~services.intake.errors.InputRefused` for refusals that record nothing.
The bodies are the models of :mod:`services.intake.contract`, built here because
the idempotency record stores the answer an identical resend gets again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

from schemas.common import Problem, utc_now
from schemas.envelope import Envelope, new_event
from schemas.hazards import HazardWarning
from schemas.jma import DEFAULT_MAX_BYTES, DEFAULT_MAX_ELEMENTS, JmaAreaTable, load_jma_table
from schemas.region import Region
from schemas.shelters import ClosingStage, ShelterClosed
from services.common.auth import Principal
from services.intake import cap
from services.intake.athome import (
    at_home_event,
    validate_at_home,
    validate_welfare_check,
    welfare_event,
)
from services.intake.athome_store import AtHomeStore
from services.intake.contract import (
    Acknowledgement,
    Ignored,
    ReportView,
    WarningSummary,
    conflict,
    rejected_report,
    report_link,
)
from services.intake.domain import (
    MAX_FUTURE_SKEW,
    SOURCE,
    Action,
    Decision,
    Kind,
    bind_sender,
    bound,
    canonical_hash,
    hazard_event,
    input_id,
    permitted,
    readable_client_report_id,
    report_events,
    report_id_for,
    report_rejected,
    require,
    shelter_event,
    validate_hazard,
    validate_report,
    validate_shelter,
)
from services.intake.errors import (
    ClientIdConflict,
    FieldError,
    InputRefused,
    InvalidInput,
    UnknownReport,
)
from services.intake.households import Households, closing_check_outs
from services.intake.jma import jma_events, jma_scope, map_bytes
from services.intake.metrics import IntakeMetrics
from services.intake.parsepool import ParsePool
from services.intake.store import Recorded, ReportRow, ShelterCloseWrite, Store, Write
from services.intake.supplies import Supplies
from services.intake.supplies_store import SupplyStore

__all__ = ["Intake", "Outcome"]

# Natural keys (a CAP sender + identifier) are unbounded text; a btree entry must
# stay small, so long ones are stored as their hash.
_MAX_CLIENT_ID = 200
# What a stored team name may be (schemas.common.Name): the rejected body's team is
# kept only if it would have been valid, so no NUL ever reaches a text column.
_TEAM = re.compile(r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]{1,100}")


@dataclass(frozen=True)
class Outcome:
    """An answer about one submission."""

    status: int
    """202 first receipt, 200 identical resend, 409 conflict, 422 recorded rejection."""
    body: Mapping[str, Any]


def _bounded(client_id: str) -> str:
    if len(client_id) <= _MAX_CLIENT_ID:
        return client_id
    return "sha256:" + hashlib.sha256(client_id.encode("utf-8")).hexdigest()


class Intake:
    """Validate, authorise, enrich and durably record inputs."""

    def __init__(
        self,
        store: Store,
        region: Region,
        *,
        metrics: IntakeMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
        jma_table: JmaAreaTable | None = None,
        max_jma_bytes: int = DEFAULT_MAX_BYTES,
        max_jma_elements: int = DEFAULT_MAX_ELEMENTS,
        cap_limits: cap.CapLimits | None = None,
        parsing: ParsePool | None = None,
    ) -> None:
        self.store = store
        self.athome = AtHomeStore(store.pool, store.namespace)
        """The residents-at-home state (:mod:`services.intake.athome_store`)."""
        self.namespace = store.namespace
        """The store's namespace: every id derived here is that namespace's."""
        self.region = region
        self.metrics = metrics or IntakeMetrics()
        self._clock = clock
        self._areas = cap.RegionAreas(region)
        self._jma_table = jma_table
        self._max_jma_bytes = max_jma_bytes
        self._max_jma_elements = max_jma_elements
        self._cap_limits = cap_limits or cap.CapLimits()
        self.parsing = parsing or ParsePool()
        """Where XML is parsed and mapped: never on the event loop (HTTP asks it to admit
        a document first)."""
        self.supplies = Supplies(SupplyStore(store.pool, store.namespace), region,
                                 metrics=self.metrics, clock=clock)
        """Supply requests and generators: commands checked against intake's state."""
        self.households = Households(store, region, metrics=self.metrics, clock=clock)
        """Check-in, check-out and transfer of households at shelters (same store, clock
        and metrics)."""

    @property
    def jma_table(self) -> JmaAreaTable:
        """The region pack's JMA code table (read on first use when not given)."""
        if self._jma_table is None:
            self._jma_table = load_jma_table(self.region.id, self.region)
        return self._jma_table

    # --- reports ------------------------------------------------------------------

    async def submit_report(self, principal: Principal, document: Any) -> Outcome:
        """A damage report: ``report.submitted`` + ``report.accepted``, or a recorded rejection."""
        require(principal, Action.REPORT)
        now = self._clock()
        scope = principal.subject
        try:
            request = validate_report(document, principal, self.region, now)
        except InvalidInput as e:
            client_report_id = readable_client_report_id(document)
            if client_report_id is None:
                self._count(Kind.REPORT, "invalid")
                raise
            return await self._reject_report(scope, client_report_id, document, e, now)
        if request.exercise:
            require(principal, Action.EXERCISE)
        events = report_events(request, scope, self.region, now, namespace=self.namespace)
        accepted = events.accepted.payload
        ack = Acknowledgement(
            event_id=events.submitted.event_id,
            event_ids=[events.submitted.event_id, events.accepted.event_id],
            report_id=events.report_id,
            client_report_id=request.client_report_id,
            area_id=accepted.area_id,
            outside_region=accepted.outside_region,
            links=report_link(events.report_id),
        ).as_json()
        row = ReportRow(
            report_id=events.report_id, scope=scope, client_report_id=request.client_report_id,
            team=accepted.report.reporter.team, status="accepted", reasons=(),
            area_id=accepted.area_id, outside_region=accepted.outside_region,
            submitted_event_id=events.submitted.event_id,
            accepted_event_id=events.accepted.event_id, rejected_event_id=None, received_at=now,
        )
        recorded = await self.store.record(Write(
            kind=Kind.REPORT, scope=scope, client_id=request.client_report_id,
            body_hash="report:" + canonical_hash(request.model_dump(mode="json")),
            status_code=202, response=ack, events=(events.submitted, events.accepted),
            report_id=events.report_id, report=row,
        ))
        return self._answer(Kind.REPORT, recorded, "client_report_id",
                            request.client_report_id)

    async def _reject_report(self, scope: str, client_report_id: str, document: Any,
                             error: InvalidInput, now: datetime) -> Outcome:
        body_hash = "rejected:" + canonical_hash(document)
        rejected = report_rejected(client_report_id, error.errors, now)
        report_id = report_id_for(scope, client_report_id, namespace=self.namespace)
        answer = rejected_report(error, report_id=report_id, client_report_id=client_report_id,
                                 event_id=rejected.event_id)
        reporter = document.get("reporter") if isinstance(document, dict) else None
        team = reporter.get("team") if isinstance(reporter, dict) else None
        row = ReportRow(
            report_id=report_id, scope=scope, client_report_id=client_report_id,
            team=team if isinstance(team, str) and _TEAM.fullmatch(team) else None,
            status="rejected",
            reasons=[p.model_dump(mode="json") for p in rejected.payload.reasons],
            area_id=None, outside_region=None, submitted_event_id=None, accepted_event_id=None,
            rejected_event_id=rejected.event_id, received_at=now,
        )
        recorded = await self.store.record(Write(
            kind=Kind.REPORT, scope=scope, client_id=client_report_id, body_hash=body_hash,
            status_code=answer.status, response=answer.body, events=(rejected,),
            report_id=report_id,
            report=row,
        ))
        return self._answer(Kind.REPORT, recorded, "client_report_id", client_report_id)

    async def report(self, principal: Principal, ident: str) -> Outcome:
        """A report's outcome by report id or client id (own team's; hq: any)."""
        require(principal, Action.READ_REPORT)
        scope = None if permitted(principal.role, Action.READ_ALL_REPORTS) else principal.subject
        rows: list[ReportRow] = []
        if len(ident) <= 100:
            try:
                rows = await self.store.find_reports(report_id=UUID(ident), scope=scope)
            except ValueError:
                rows = []
            if not rows:
                rows = await self.store.find_reports(client_report_id=ident, scope=scope)
        if not rows:
            raise UnknownReport(f"no report {ident[:100]!r} visible to {principal.subject}")
        if len(rows) > 1:
            ids = ", ".join(str(r.report_id) for r in rows)
            raise ClientIdConflict(f"client id {ident!r} names several teams' reports; "
                                   f"ask by report id: {ids}")
        r = rows[0]
        view = ReportView(
            report_id=r.report_id, client_report_id=r.client_report_id, team=r.team,
            status="accepted" if r.status == "accepted" else "rejected",
            reasons=[Problem.model_validate(p) for p in r.reasons],
            area_id=r.area_id, outside_region=r.outside_region,
            submitted_event_id=r.submitted_event_id, accepted_event_id=r.accepted_event_id,
            rejected_event_id=r.rejected_event_id, received_at=r.received_at,
            updated_at=r.updated_at or r.received_at, links=report_link(r.report_id),
        )
        return Outcome(200, view.as_json())

    # --- shelters and hazards ---------------------------------------------------------

    async def submit_shelter_status(self, principal: Principal, shelter_id: str, document: Any,
                                    client_id: str | None) -> Outcome:
        """Shelter opening, closing, occupancy or needs → one ``shelter.*`` event."""
        require(principal, Action.SHELTER_STATUS)
        now = self._clock()
        try:
            request = validate_shelter(document, shelter_id, principal, self.region, now)
        except InputRefused:
            self._count(Kind.SHELTER, "invalid")
            raise
        if request.exercise:
            require(principal, Action.EXERCISE)
        event = shelter_event(request, principal.subject, client_id, now,
                              namespace=self.namespace)
        body_hash = canonical_hash(request.model_dump(mode="json"))
        if isinstance(event, ShelterClosed) and event.payload.stage is ClosingStage.CLOSED:
            return await self._write_close(principal.subject, client_id, body_hash, event)
        return await self._write_one(Kind.SHELTER, principal.subject, client_id, body_hash,
                                     (event,))

    async def _write_close(self, scope: str, client_id: str | None, body_hash: str,
                           close: ShelterClosed) -> Outcome:
        """A close with stage closed: its households' check-outs in its transaction
        (docs/people.md), under the same idempotency record as every shelter status."""
        kind = Kind.SHELTER

        def respond(events: Sequence[Envelope]) -> Mapping[str, Any]:
            return Acknowledgement(event_id=close.event_id,
                                   event_ids=[e.event_id for e in events],
                                   client_id=client_id).as_json()

        recorded = await self.store.record_shelter_close(ShelterCloseWrite(
            kind=kind, scope=scope, client_id=client_id, body_hash=f"{kind}:{body_hash}",
            close=close, shelter_id=close.payload.shelter_id,
            apply=lambda rows: closing_check_outs(rows, close, namespace=self.namespace,
                                                  recorded_at=close.recorded_at),
            respond=respond))
        return self._answer(kind, recorded, "client id", client_id or "")

    async def submit_hazard(self, principal: Principal, document: Any,
                            client_id: str | None) -> Outcome:
        """A gauge reading, warning or seismic intensity → one ``hazard.*`` event."""
        require(principal, Action.HAZARD_OBSERVATION)
        now = self._clock()
        try:
            request = validate_hazard(document, self.region, now)
        except InputRefused:
            self._count(Kind.HAZARD, "invalid")
            raise
        if request.exercise:
            require(principal, Action.EXERCISE)
        event = hazard_event(request, principal.subject, client_id, now, principal,
                             namespace=self.namespace)
        return await self._write_one(Kind.HAZARD, principal.subject, client_id,
                                     canonical_hash(request.model_dump(mode="json")), (event,))

    async def submit_cap(self, principal: Principal, xml: bytes) -> Outcome:
        """An external CAP 1.2 alert → one ``hazard.warning`` per mapped info block."""
        require(principal, Action.CAP)
        now = self._clock()
        languages = tuple(dict.fromkeys((self.region.default_language, "en")))
        try:
            alert, mapped = await self.parsing.run(partial(
                cap.read_and_map, xml, self._areas, limits=self._cap_limits,
                preferred_languages=languages))
            if mapped.occurred_at > now + MAX_FUTURE_SKEW:
                raise InvalidInput("the alert was sent in the future", errors=[FieldError(
                    "/alert/sent", f"is {mapped.occurred_at.isoformat()}, in the future",
                    "in_future")])
        except InputRefused:
            self._count(Kind.CAP, "invalid")
            raise
        if mapped.exercise:
            require(principal, Action.EXERCISE)
        # A CAP alert speaks for its <sender>; the token must be that sender (or HQ).
        binding = bind_sender(principal, cap.sender_of(alert))
        mapped = replace(mapped, warnings=tuple(bound(w, binding) for w in mapped.warnings))
        scope, client_id = principal.subject, _bounded(mapped.client_id)
        events = tuple(
            new_event(HazardWarning, w, occurred_at=mapped.occurred_at, source=SOURCE,
                      recorded_at=now, exercise=mapped.exercise,
                      event_id=input_id(self.namespace, "hazard.warning", scope, client_id, i))
            for i, w in enumerate(mapped.warnings)
        )
        body_hash = canonical_hash(
            {"exercise": mapped.exercise,
             "warnings": [w.model_dump(mode="json") for w in mapped.warnings]})
        extra = {
            "warnings": [WarningSummary(
                warning_id=w.warning_id, kind=w.kind,
                alert_level_equivalent=w.alert_level_equivalent, area_ids=list(w.area_ids),
            ) for w in mapped.warnings],
            "skipped": list(mapped.skipped) or None,
        }
        return await self._write_one(Kind.CAP, scope, client_id, body_hash, events, extra)

    async def submit_jma(self, principal: Principal, xml: bytes) -> Outcome:
        """A 気象庁防災情報XML message → ``hazard.warning`` / ``hazard.seismic_intensity`` events.

        A message about nothing of the region is answered 200 ``ignored`` with the
        reason and records nothing (a feed bridge treats it as done, not as an error).
        """
        require(principal, Action.JMA)
        now = self._clock()
        try:
            mapped = await self.parsing.run(partial(
                map_bytes, xml, self.jma_table, max_bytes=self._max_jma_bytes,
                max_elements=self._max_jma_elements))
            signals = mapped.signals
            if signals.report_date_time > now + MAX_FUTURE_SKEW:
                raise InvalidInput("the message was reported in the future", errors=[FieldError(
                    "/Report/Head/ReportDateTime",
                    f"is {signals.report_date_time.isoformat()}, in the future", "in_future")])
        except InputRefused:
            self._count(Kind.JMA, "invalid")
            raise
        if signals.exercise or signals.test:
            require(principal, Action.EXERCISE)
        scope, client_id = jma_scope(signals), signals.message_id
        binding = bind_sender(principal, scope)  # 403 before anything is written
        events = jma_events(mapped, scope, client_id, now, binding=binding,
                            namespace=self.namespace)
        if not events:
            self._count(Kind.JMA, "ignored")
            return Outcome(200, Ignored(client_id=client_id,
                                        reason=signals.ignored or "nothing to map",
                                        notes=list(mapped.notes) or None).as_json())
        body_hash = canonical_hash({"exercise": signals.exercise or signals.test,
                                    "events": [e.payload.model_dump(mode="json")
                                               for e in events]})
        extra = {
            "warnings": [WarningSummary(
                warning_id=w.warning_id, kind=w.kind,
                alert_level_equivalent=w.alert_level_equivalent, area_ids=list(w.area_ids),
            ) for w in mapped.warnings] or None,
            "skipped": list(mapped.notes) or None,
        }
        return await self._write_one(Kind.JMA, scope, client_id, body_hash, events, extra)

    # --- residents at home ---------------------------------------------------------------

    async def submit_at_home(self, principal: Principal | None, document: Any) -> Outcome:
        """A household sheltering at home → ``people.at_home_reported`` (a resend with
        another body replaces the report). ``principal`` None: the residents' form."""
        now = self._clock()
        try:
            item = validate_at_home(document, principal, self.region, now,
                                    namespace=self.namespace)
        except InputRefused:
            self._count(Kind.AT_HOME, "invalid")
            raise

        def answer(event: Envelope) -> Mapping[str, Any]:
            return Acknowledgement(event_id=event.event_id, event_ids=[event.event_id],
                                   client_id=item.request.client_id,
                                   household_id=item.household_id,
                                   area_id=item.payload.area_id).as_json()

        recorded = await self.athome.report(
            item, lambda revision: at_home_event(item, revision, now,
                                                 namespace=self.namespace), answer)
        return self._answer(Kind.AT_HOME, recorded, "client_id", item.request.client_id)

    async def submit_welfare_check(self, principal: Principal, document: Any) -> Outcome:
        """A welfare-check visit to a household at home → ``people.welfare_checked``."""
        require(principal, Action.WELFARE_CHECK)
        now = self._clock()
        try:
            item = validate_welfare_check(document, principal, self.region, now)
        except InputRefused:
            self._count(Kind.WELFARE_CHECK, "invalid")
            raise
        event = welfare_event(item, now, namespace=self.namespace)
        ack = Acknowledgement(event_id=event.event_id, event_ids=[event.event_id],
                              client_id=item.request.client_id,
                              household_id=item.payload.household_id,
                              area_id=item.payload.area_id).as_json()
        try:
            recorded = await self.athome.welfare_check(item, event, ack)
        except InputRefused:
            self._count(Kind.WELFARE_CHECK, "invalid")
            raise
        return self._answer(Kind.WELFARE_CHECK, recorded, "client_id", item.request.client_id)

    # --- shared -----------------------------------------------------------------------

    async def _write_one(self, kind: Kind, scope: str, client_id: str | None, body_hash: str,
                         events: tuple[Envelope, ...],
                         extra: Mapping[str, Any] | None = None) -> Outcome:
        ack = Acknowledgement(
            event_id=events[0].event_id, event_ids=[e.event_id for e in events],
            client_id=client_id, **(extra or {}),
        ).as_json()
        recorded = await self.store.record(Write(
            kind=kind, scope=scope, client_id=client_id, body_hash=f"{kind}:{body_hash}",
            status_code=202, response=ack, events=events,
        ))
        return self._answer(kind, recorded, "client id", client_id or "")

    def _answer(self, kind: Kind, recorded: Recorded, id_name: str, client_id: str) -> Outcome:
        if recorded.decision is Decision.WRITE:
            self._count(kind, "written" if recorded.status_code == 202 else "rejected")
            return Outcome(recorded.status_code, recorded.response)
        if recorded.decision is Decision.REPLAY:
            self._count(kind, "replayed")
            # An identical resend of an accepted input is 200 with the original body;
            # of a rejected one, the original 422 (nothing new is recorded either way).
            status = 200 if recorded.status_code == 202 else recorded.status_code
            return Outcome(status, recorded.response)
        self._count(kind, "conflict")
        answer = conflict(ClientIdConflict(
            f"{id_name} {client_id!r} was already used for a different {kind.value}; "
            "send a new id for a new input"
        ), recorded.response)
        return Outcome(answer.status, answer.body)

    def _count(self, kind: Kind, outcome: str) -> None:
        self.metrics.submissions.labels(kind.value, outcome).inc()
