"""``sonae drill verify``: replay a log twice at max speed and compare the decisions.

Each run replays into a fresh namespace of its own, with the decision services
(shelter tracker, evacuation, broadcaster) started for it, synchronised (see
:mod:`services.drill.runner`) and with the recorded HQ commands; both runs use
the same anchor, so their event times are equal. After the replay the run waits
for quiescence (nothing new on the decision topics for a few seconds, and no
consumer lag), then reads its decisions back.

What is compared (:func:`normalise`): every recommendation, recommendation
closing, refused command, order version, planned message (``broadcast.requested``)
and data-quality notice, and the latest published version of each message in each
language — its type, its event time (as an offset from the anchor) and its whole
payload: areas, level, hazard, kind, rationale, evidence, shelters, texts.
Namespaced ids differ by construction, so each id is replaced by what it
stands for: an input by its position in the log (``input#12``), a
recommendation by its area, hazard, level, kind and time, an order by its area,
hazard and time of issue, a message by its order or shelter; the namespace
inside CAP identifiers becomes ``<ns>``. Whatever still differs is a real
difference in what was decided.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from infra.settings import Settings
from infra.status import consumer_lag
from schemas.broadcasts import BroadcastPublished
from schemas.common import utc_now
from schemas.envelope import Envelope
from schemas.events import Event
from services.drill.errors import ServicesFailed
from services.drill.fields import fields_of, locate
from services.drill.hq import HqMode
from services.drill.logformat import DrillLog
from services.drill.ports import DECISION_SERVICES, ServicesLauncher
from services.drill.replay import IdMap
from services.drill.report.collect import collect
from services.drill.runner import ProgressFn, ReplayOptions, ReplayResult, replay
from services.drill.watch import watching

__all__ = ["DECISION_TYPES", "RunDecisions", "VerifyResult", "normalise", "settle", "verify"]

DECISION_TYPES: Final = frozenset({
    "evacuation.recommended",
    "evacuation.recommendation_closed",
    "evacuation.command_rejected",
    "evacuation.order_issued",
    "evacuation.order_updated",
    "evacuation.order_lifted",
    "broadcast.requested",
    "broadcast.published",
    "hazard.data_quality",
})
"""Event types whose content is compared between runs (published messages: the latest
version of each message and language only, see :func:`normalise`)."""

_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class RunDecisions:
    """One run's normalised decisions."""

    namespace: str
    result: ReplayResult | None
    decisions: list[str]
    """Canonical JSON, one per decision, sorted."""

    def summary(self) -> dict[str, int]:
        """How many decisions of each type."""
        return dict(sorted(Counter(json.loads(d)["type"] for d in self.decisions).items()))


@dataclass
class VerifyResult:
    """Both runs and what differed."""

    runs: list[RunDecisions] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    """A unified diff of the first run's decisions against each later run's."""

    @property
    def identical(self) -> bool:
        """True when every run decided the same."""
        return not self.differences


def _at(moment: datetime, anchor: datetime) -> str:
    return f"T{(moment - anchor).total_seconds():+.6f}s"


def _tokens(events: Sequence[Envelope], log: DrillLog, namespace: str, salt: str | None,
            anchor: datetime) -> dict[str, str]:
    ids = IdMap(namespace, salt)
    tokens = {ids.text(str(e.event_id)): f"input#{i}" for i, e in enumerate(log.inputs)}
    for e in events:
        p: Any = e.payload
        if e.type == "evacuation.recommended":
            tokens[str(p.recommendation_id)] = (
                f"rec[{'+'.join(p.area_ids)}/{p.hazard.value}/L{p.level}/{p.kind.value}"
                f"@{_at(e.occurred_at, anchor)}]")
        elif e.type == "evacuation.order_issued":
            tokens[str(p.order_id)] = (f"order[{'+'.join(p.area_ids)}/{p.hazard.value}"
                                       f"@{_at(e.occurred_at, anchor)}]")
    for e in events:
        p = e.payload
        if e.type in ("broadcast.published", "broadcast.requested"):
            subject = tokens.get(str(p.order_id), "?") if p.order_id is not None \
                else f"shelter {p.shelter_id}"
            tokens[str(p.message_id)] = f"msg[{subject}]"
    return tokens


def _latest_published(events: Iterable[Event]) -> list[Event]:
    # The broadcaster supersedes an undelivered version on channels that want only the
    # latest: at max speed, versions minutes apart in event time arrive milliseconds apart,
    # so whether an intermediate version was still published is timing, not decision. What
    # was decided is the plan (broadcast.requested, every version) and what residents are
    # left reading: the latest version of each message in each language.
    latest: dict[tuple[str, str], BroadcastPublished] = {}
    rest: list[Event] = []
    for e in events:
        if not isinstance(e, BroadcastPublished):
            rest.append(e)
            continue
        key = (str(e.payload.message_id), e.payload.language)
        if key not in latest or latest[key].payload.version < e.payload.version:
            latest[key] = e
    return [*rest, *latest.values()]


def _replace(value: Any, tokens: Mapping[str, str], namespace: str) -> Any:
    if isinstance(value, str):
        if value in tokens:
            return tokens[value]
        if namespace and namespace in value:
            value = value.replace(namespace, "<ns>")
        return _UUID.sub(lambda m: tokens.get(m.group(0), "<id>"), value)
    if isinstance(value, list):
        return [_replace(v, tokens, namespace) for v in value]
    if isinstance(value, dict):
        return {k: _replace(v, tokens, namespace) for k, v in value.items()}
    return value


def normalise(events: Iterable[Event], log: DrillLog, *, namespace: str, anchor: datetime,
              salt: str | None = None) -> list[str]:
    """The decisions among ``events`` as sorted canonical JSON, free of namespaced ids."""
    unique = {str(e.event_id): e for e in events if e.type in DECISION_TYPES}
    decisions = sorted(_latest_published(unique.values()),
                       key=lambda e: (e.occurred_at, e.type))
    tokens = _tokens(decisions, log, namespace, salt, anchor)
    out = []
    for e in decisions:
        payload = e.payload.model_dump(mode="json")
        for path in fields_of(e.type).times:
            for container, key in locate(payload, path):
                container[key] = _at(datetime.fromisoformat(container[key]), anchor)
        document = {"type": e.type, "at": _at(e.occurred_at, anchor),
                    "payload": _replace(payload, tokens, namespace)}
        out.append(json.dumps(document, ensure_ascii=False, sort_keys=True))
    return sorted(out)


async def settle(settings: Settings, namespace: str, *, quiet: float = 3.0,
                 timeout: float = 120.0, stop: asyncio.Event | None = None) -> bool:
    """Wait until the namespace's services are done: nothing new on the decision topics for
    ``quiet`` seconds and no consumer lag; False if that did not happen within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with watching(settings, namespace) as watcher:
        while loop.time() < deadline:
            if not await watcher.quiet(quiet, timeout=deadline - loop.time(), stop=stop):
                return False
            try:
                lag = await asyncio.wait_for(consumer_lag(settings, namespace), 15)
            except Exception:  # lag is a second opinion; quiet decision topics suffice
                return True
            if not any(lag.values()):
                return True
            await asyncio.sleep(quiet)
    return False


async def verify(settings: Settings, log: DrillLog, *, runs: int = 2, prefix: str | None = None,
                 services: Sequence[str] | None = DECISION_SERVICES,
                 launcher: ServicesLauncher | None = None, quiet: float = 3.0,
                 on_run: Callable[[int, str], None] | None = None,
                 progress: ProgressFn | None = None,
                 stop: asyncio.Event | None = None) -> VerifyResult:
    """Replay ``log`` ``runs`` times at max speed into fresh namespaces; compare decisions.

    ``services``: which registered services to start per run with ``launcher`` (None:
    start none, for a caller that runs them itself — then every run shares whatever runs).
    """
    if services is not None and launcher is None:
        raise ServicesFailed("verify was asked to start services but given no launcher")
    if runs < 2:
        raise ValueError("verify needs at least two runs")
    stamp = prefix or utc_now().strftime("v%Y%m%d-%H%M%S")
    # One anchor for every run: equal event times make equal rationales and CAP times.
    anchor = utc_now().replace(microsecond=0)
    options = ReplayOptions(speed=None, anchor=anchor, hq=HqMode.REPLAY)
    outcome = VerifyResult()
    for run in range(1, runs + 1):
        namespace = f"drill.{stamp}-{run}"
        if on_run is not None:
            on_run(run, namespace)
        if services is None or launcher is None:
            result = await replay(settings, log, namespace, options, stop=stop,
                                  progress=progress)
            await settle(settings, namespace, quiet=quiet, stop=stop)
        else:
            async with launcher(settings, namespace, names=services) as running:
                result = await replay(settings, log, namespace, options, stop=stop,
                                      progress=progress,
                                      services=(running.runs_decisions, running.runs_tracker))
                await settle(settings, namespace, quiet=quiet, stop=stop)
        observed = await collect(settings, namespace)
        decisions = normalise((o.event for o in observed), log, namespace=namespace,
                              anchor=anchor)
        outcome.runs.append(RunDecisions(namespace, result, decisions))
        if stop is not None and stop.is_set():
            break
    first = outcome.runs[0]
    for other in outcome.runs[1:]:
        if Counter(first.decisions) != Counter(other.decisions):
            outcome.differences += list(difflib.unified_diff(
                first.decisions, other.decisions, fromfile=first.namespace,
                tofile=other.namespace, lineterm="", n=0))
    return outcome
