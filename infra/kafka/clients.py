"""aiokafka client factories: the one place a Sonae service gets a Kafka client.

Services never configure aiokafka by hand, so the embedded-broker layer
(:mod:`infra.kafka.compat`) reaches every client in the embedded profile and none
in the apache profile. The factories return clients that are not started yet;
callers ``await client.start()`` (or use ``async with``) inside their own task
group, so nothing connects at import or construction time.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from infra.kafka.compat import compat_for
from infra.kafka.errors import UnsupportedOnEmbeddedBroker
from infra.settings import KafkaProfile, Settings


def producer_config(settings: Settings) -> dict[str, Any]:
    """aiokafka producer keyword arguments for the profile."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        # An acknowledged event must survive a broker failover (on Apache Kafka).
        "acks": "all",
        # Idempotence removes duplicates from producer retries on Apache Kafka; the
        # embedded broker refuses InitProducerId, so there it must stay off.
        "enable_idempotence": settings.kafka_profile is KafkaProfile.APACHE,
    }


def consumer_config(settings: Settings, *, group_id: str | None) -> dict[str, Any]:
    """aiokafka consumer keyword arguments for the profile."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group_id,
        # Offsets are committed only after the effect is durable (at-least-once).
        "enable_auto_commit": False,
        # A new group reads everything; "latest" is unreliable on the embedded broker,
        # so starting at the end is explicit (infra.kafka.compat.position_at_end).
        "auto_offset_reset": "earliest",
    }
    layer = compat_for(settings)
    if layer is not None:
        config.update(layer.consumer_config())
    return config


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """A producer with ``acks="all"``; idempotent on Apache Kafka only."""
    config = {**producer_config(settings), **overrides}
    if settings.kafka_profile is KafkaProfile.EMBEDDED and (
        config.get("enable_idempotence") or config.get("transactional_id")
    ):
        raise UnsupportedOnEmbeddedBroker(
            "the embedded broker has no idempotent or transactional producer "
            "(InitProducerId is refused); drop enable_idempotence/transactional_id and "
            "deduplicate in the consumer by event_id"
        )
    return AIOKafkaProducer(**config)


def consumer(
    settings: Settings, *topics: str, group_id: str | None = None, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer subscribed to ``topics`` (or none, for ``assign``), manual commits."""
    return AIOKafkaConsumer(*topics, **{**consumer_config(settings, group_id=group_id),
                                        **overrides})


def admin(settings: Settings, **overrides: Any) -> AIOKafkaAdminClient:
    """An admin client (on the embedded broker: no delete_records/create_partitions)."""
    return AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **overrides)
