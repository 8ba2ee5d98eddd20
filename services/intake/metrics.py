"""Prometheus metrics of one intake app, in a registry of its own.

A registry per app (not the process-global default) so that several apps in one
process — tests run many — never collide on metric names.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["IntakeMetrics"]


class IntakeMetrics:
    """The counters, gauges and histograms intake exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "intake_http_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )
        self.submissions = Counter(
            "intake_submissions", "Inputs by kind and outcome (written, replayed, conflict, "
            "rejected).", ["kind", "outcome"], registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "intake_outbox_backlog", "Outbox rows not yet published to Kafka.",
            registry=self.registry,
        )
        self.published = Counter(
            "intake_relay_published_events", "Events the relay published (acknowledged).",
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "intake_relay_publish_seconds", "Time to publish one outbox batch until every ack.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.relay_errors = Counter(
            "intake_relay_errors", "Failed relay attempts (broker or database unavailable).",
            registry=self.registry,
        )
        self.broker_connected = Gauge(
            "intake_relay_broker_connected", "1 while the relay has a working producer.",
            registry=self.registry,
        )
        self.raw_records = Counter(
            "intake_raw_records", "Records read from intake.raw by outcome (accepted, "
            "duplicate, dead_lettered).", ["outcome"], registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
