"""The shelter tracker's faust app: Kafka in, the pure rules, Kafka out.

Two agents, each with a table whose changelog restores it after a restart or a
rebalance:

``track`` (``shelters.updates``, keyed by shelter)
    table ``shelters``: shelter id → :class:`~services.shelter_tracker.domain.Tracked`
    (the state, and the households checked in and out with the last typed count).
    Each update, a household's check-in or check-out included, goes through
    :func:`~services.shelter_tracker.domain.decide`;
    the new state is published to ``shelters.state``, alerts to
    ``shelters.alerts``, and the state once more to an internal topic keyed by
    area (``<app id>-area-changes``), because an area's shelters live on
    different partitions.

``summarize`` (the internal topic, keyed by area)
    table ``areas``: area id → :class:`~services.shelter_tracker.areas.AreaTracked`;
    publishes ``shelter.area_summary`` to ``shelters.areas``.

Ordering for at-least-once: the outputs are produced and acknowledged *before*
the table is written. A crash in between leaves the table without the update,
so the redelivered update is applied again and produces the same events (their
ids are derived from the input's), which consumers deduplicate. The other order
would lose the outputs: the redelivered update would find itself applied
already and emit nothing. faust flushes the producer (changelog included)
before it commits an input offset.

An ``exercise`` update outside a drill namespace is logged and ignored: exercise
traffic never changes a live shelter's state.

A record that cannot be applied (not an event, wrong type or key, unknown
shelter, refused by the rules) is dead-lettered with the reason and the agent
goes on; a failure to produce propagates (the worker stops and its supervisor
restarts it, and the uncommitted input is redelivered).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Set
from datetime import datetime
from typing import Any, Final

from faust.types import TP, Message, StreamT

from infra.kafka.compat import SonaeFaustApp, make_app
from infra.settings import Settings
from schemas.common import Problem, utc_now
from schemas.envelope import Envelope
from schemas.errors import FieldProblem, InvalidEvent, SchemaError
from schemas.events import Event, decode_event, encode_event
from schemas.people import HouseholdCheckedIn, HouseholdCheckedOut
from schemas.region import Region, load_pack_section, load_region
from schemas.shelters import (
    AlertKind,
    ShelterClosed,
    ShelterNeedsReported,
    ShelterOccupancyReported,
    ShelterOpened,
    ShelterStatusChanged,
)
from schemas.topics import CATALOGUE, check_carries, is_drill, qualified, route
from schemas.topics import app_id as faust_app_id
from services.common.deadletter import FaustDeadLetters
from services.shelter_tracker.areas import AreaTracked, decide_area
from services.shelter_tracker.domain import (
    SOURCE,
    Decision,
    Outcome,
    ShelterPackSection,
    ShelterSite,
    ShelterUpdate,
    Thresholds,
    Tracked,
    decide,
    shelter_sites,
)
from services.shelter_tracker.errors import (
    ShelterNotRegistered,
    ShelterTrackerError,
    ShelterUpdateRejected,
)

__all__ = [
    "PACK_SECTION",
    "SERVICE",
    "ShelterTracker",
    "app_id",
    "load_thresholds",
]

log = logging.getLogger(__name__)

SERVICE: Final = SOURCE
"""The service name (registry, dead letters, event ``source``)."""
PACK_SECTION: Final = "shelters.toml"
"""The region pack file holding the tracker's thresholds."""

_UPDATE_TYPES: Final = (ShelterOpened, ShelterClosed, ShelterOccupancyReported,
                        ShelterNeedsReported, HouseholdCheckedIn, HouseholdCheckedOut)
_RAW: Final[dict[str, Any]] = {
    "key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw",
}


def app_id(namespace: str) -> str:
    """The faust app id (and consumer group): one per namespace, so drills are isolated."""
    return faust_app_id(SERVICE, namespace)


def load_thresholds(region: str) -> Thresholds:
    """The thresholds from the region pack's ``shelters.toml``."""
    return load_pack_section(region, PACK_SECTION, ShelterPackSection).thresholds


class ShelterTracker:
    """The faust app, its topics and tables, wired to the rules; nothing connects until run."""

    def __init__(
        self,
        settings: Settings,
        *,
        region: Region | None = None,
        thresholds: Thresholds | None = None,
        clock: Callable[[], datetime] = utc_now,
        **faust_options: Any,
    ) -> None:
        self.namespace = ns = settings.namespace
        self.drill = is_drill(ns)
        """Whether exercise updates count (only in a drill namespace; live ignores them)."""
        self.region = region if region is not None else load_region(settings.region)
        self.thresholds = thresholds if thresholds is not None \
            else load_thresholds(settings.region)
        self.sites = shelter_sites(self.region)
        by_area: defaultdict[str, list[ShelterSite]] = defaultdict(list)
        for site in self.sites.values():
            by_area[site.area_id].append(site)
        self.sites_by_area: dict[str, tuple[ShelterSite, ...]] = {
            area: tuple(sites) for area, sites in by_area.items()
        }
        self._clock = clock

        updates_partitions = CATALOGUE["shelters.updates"].partitions
        areas_partitions = CATALOGUE["shelters.areas"].partitions
        self.app: SonaeFaustApp = make_app(
            app_id(ns), settings, topic_partitions=updates_partitions, **faust_options,
        )
        app = self.app
        self.updates = app.topic(qualified("shelters.updates", ns), **_RAW)
        self.states = app.topic(qualified("shelters.state", ns), **_RAW)
        self.alerts = app.topic(qualified("shelters.alerts", ns), **_RAW)
        self.summaries = app.topic(qualified("shelters.areas", ns), **_RAW)
        self.deadletters = FaustDeadLetters(app.topic(qualified("deadletter", ns), **_RAW),
                                            SERVICE, clock)
        # Keyed by area so that one partition (one worker) sees all of an area's
        # shelters; faust creates internal topics itself.
        self.area_changes = app.topic(f"{app.conf.id}-area-changes", internal=True,
                                      partitions=areas_partitions, **_RAW)
        # Tables must have the partition count of the topic they are filled from:
        # an update on partition p is written to changelog partition p.
        # bytes key and value types make faust use the raw codec for the changelog.
        self.shelters = app.Table("shelters", partitions=updates_partitions,
                                  key_type=bytes, value_type=bytes)
        self.areas = app.Table("areas", partitions=areas_partitions,
                               key_type=bytes, value_type=bytes)
        app.agent(self.updates, name="track")(self._track)
        app.agent(self.area_changes, name="summarize")(self._summarize)
        app.on_partitions_assigned.connect(self._on_assigned)

    # --- agents -------------------------------------------------------------------

    async def _track(self, stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await self.on_update(event.message)

    async def _summarize(self, stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await self.on_area_change(event.message)

    async def _on_assigned(self, sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        # Which worker owns which shelters is what an operator needs after a failover.
        assigned: Set[TP] = args[0]

        def owned(topic: Any) -> list[int]:
            name = topic.get_topic_name()
            return sorted(tp.partition for tp in assigned if tp.topic == name)

        log.info("assigned shelters.updates partitions %s, area partitions %s",
                 owned(self.updates), owned(self.area_changes))

    # --- one record each --------------------------------------------------------------

    async def on_update(self, message: Message) -> None:
        """Apply one record of ``shelters.updates`` (a faust message)."""
        log.debug("update %s[%d]@%d", message.topic, message.partition, message.offset)
        try:
            update, site = self._read_update(message)
            if update.exercise and not self.drill:
                # Exercise traffic never drives a live shelter's state (the recorder
                # keeps it, and HQ sees it as exercise on the gateway).
                log.info("ignored exercise update %s for %s outside a drill (%s[%d]@%d)",
                         update.event_id, site.shelter_id, message.topic, message.partition,
                         message.offset)
                return
            key = site.shelter_id.encode("utf-8")
            tracked = Tracked.from_bytes(self.shelters.get(key))
            decision = decide(tracked, update, site, recorded_at=self._clock(),
                              thresholds=self.thresholds)
        except (InvalidEvent, ShelterTrackerError) as exc:
            await self._dead_letter(message, exc)
            return
        except Exception as exc:
            # A bug that one record triggers must not stop the partition behind it.
            log.exception("cannot apply %s[%d]@%d", message.topic, message.partition,
                          message.offset)
            await self._dead_letter(message, exc)
            return
        if decision.outcome is Outcome.REJECTED:
            assert decision.rejection is not None
            await self._dead_letter(message, decision.rejection)
            return
        if decision.outcome in (Outcome.DUPLICATE, Outcome.STALE):
            log.info("ignored %s update %s for %s (%s[%d]@%d): %s", decision.outcome.value,
                     update.event_id, site.shelter_id, message.topic, message.partition,
                     message.offset, decision.reason)
            return
        sends = [self._send(self.states if isinstance(out, ShelterStatusChanged)
                            else self.alerts, out) for out in decision.emit]
        changed = decision.state_changed
        if changed is not None:
            sends.append(self._send(self.area_changes, changed,
                                    key=site.area_id.encode("utf-8")))
        await asyncio.gather(*sends)
        self.shelters[key] = decision.tracked.to_bytes()
        self._log_decision(update, decision)

    async def on_area_change(self, message: Message) -> None:
        """Fold one shelter state from the internal topic into its area's summary."""
        try:
            change = _decode(message)
            if not isinstance(change, ShelterStatusChanged):
                raise ShelterTrackerError(f"{change.type} on the area-changes topic")
            site = self._site(change.payload.shelter_id)
            area_sites = self.sites_by_area[site.area_id]
            key = site.area_id.encode("utf-8")
            tracked = AreaTracked.from_bytes(self.areas.get(key))
            decision = decide_area(tracked, change, area_sites, recorded_at=self._clock())
        except Exception as exc:
            log.exception("cannot summarise %s[%d]@%d", message.topic, message.partition,
                          message.offset)
            await self._dead_letter(message, exc)
            return
        if decision.tracked is tracked:
            return  # an older or repeated state of the shelter: nothing to keep
        if decision.emit is not None:
            await self._send(self.summaries, decision.emit)
            log.debug("area %s summary v%d", site.area_id, decision.emit.payload.version)
        self.areas[key] = decision.tracked.to_bytes()

    # --- helpers ---------------------------------------------------------------------

    def _site(self, shelter_id: str) -> ShelterSite:
        try:
            return self.sites[shelter_id]
        except KeyError:
            raise ShelterNotRegistered(
                f"no shelter {shelter_id!r} in region {self.region.id!r}") from None

    def _read_update(self, message: Message) -> tuple[ShelterUpdate, ShelterSite]:
        event = _decode(message)
        try:
            check_carries(message.topic, event)
        except SchemaError as exc:
            raise ShelterUpdateRejected("type", str(exc)) from exc
        if not isinstance(event, _UPDATE_TYPES):  # check_carries makes this unreachable
            raise ShelterUpdateRejected("type", f"{event.type} is not a shelter update")
        shelter_id = event.payload.shelter_id
        if message.key != shelter_id.encode("utf-8"):
            # The key decides the partition, hence which worker owns the shelter;
            # a wrong key would split one shelter's state across workers.
            raise ShelterUpdateRejected(
                "payload.shelter_id",
                f"the record key {message.key!r} is not the shelter id {shelter_id!r}")
        return event, self._site(shelter_id)

    async def _send(self, topic: Any, event: Envelope, *, key: bytes | None = None) -> None:
        routed = route(event, self.namespace)
        value = routed.value if key is None else encode_event(event)
        # force=True: produce now, not when the input offset is committed (faust's
        # "attach" mode would delay every output by the commit interval).
        pending = await topic.send(key=key if key is not None else routed.key, value=value,
                                   force=True)
        await pending  # the broker's acknowledgement

    async def _dead_letter(self, message: Message, error: BaseException) -> None:
        # A rule's refusal names its field; an undecodable event names its own.
        problems = ((Problem(code="rejected", field=error.field,
                             message=error.message[:1000]),)
                    if isinstance(error, ShelterUpdateRejected) else None)
        await self.deadletters.send(message, error, problems=problems)

    def _log_decision(self, update: ShelterUpdate, decision: Decision) -> None:
        changed = decision.state_changed
        if changed is not None and changed.payload.status != changed.payload.previous_status:
            log.info("shelter %s %s -> %s (v%d) after %s %s", changed.payload.shelter_id,
                     changed.payload.previous_status, changed.payload.status,
                     changed.payload.version, update.type, update.event_id)
        for out in decision.emit:
            if not isinstance(out, ShelterStatusChanged):
                alert = out.payload
                what = f"cleared {alert.cleared_kind}" if alert.kind is AlertKind.CLEARED \
                    else f"{alert.kind}"
                log.info("shelter %s alert %s (occupancy %d of %s, fuel %s h)",
                         alert.shelter_id, what, alert.occupancy, alert.capacity,
                         alert.fuel_hours_left)


def _decode(message: Message) -> Event:
    if message.value is None:
        raise InvalidEvent([FieldProblem("", "a tombstone (null value) is not an event")])
    return decode_event(message.value)
