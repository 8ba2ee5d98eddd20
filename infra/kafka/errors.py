"""Errors of the Kafka client layer; every one says what to do instead."""

from __future__ import annotations


class KafkaLayerError(RuntimeError):
    """Base for errors raised by ``infra.kafka`` (driver errors are chained as the cause)."""


class UnsupportedOnEmbeddedBroker(KafkaLayerError):
    """A client feature the embedded broker (Tansu) refuses was asked for in its profile."""


class EndOffsetsUnavailable(KafkaLayerError):
    """The broker did not report a high watermark for some partitions before the deadline."""
