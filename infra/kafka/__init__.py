"""Kafka clients for Sonae services and the embedded-broker compatibility layer.

``infra.kafka.clients`` builds every aiokafka client; ``infra.kafka.compat``
holds what the embedded broker (Tansu) needs, including the faust app factory.
See docs/kafka-embedded.md.
"""

from infra.kafka.clients import admin, consumer, producer
from infra.kafka.compat import TANSU, TansuCompat, end_offsets, position_at_end
from infra.kafka.errors import EndOffsetsUnavailable, KafkaLayerError, UnsupportedOnEmbeddedBroker

__all__ = [
    "TANSU",
    "EndOffsetsUnavailable",
    "KafkaLayerError",
    "TansuCompat",
    "UnsupportedOnEmbeddedBroker",
    "admin",
    "consumer",
    "end_offsets",
    "position_at_end",
    "producer",
]
