"""Create and list the catalogue's topics for a namespace.

The catalogue (``schemas.topics``) is the single declaration of names,
partitions and cleanup policies; this module only applies it to a broker.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from infra.kafka import clients
from infra.settings import Settings
from schemas.topics import CATALOGUE, qualified

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicInfo:
    """A topic as the broker describes it, beside what the catalogue declares."""

    name: str
    partitions: int
    declared_partitions: int | None
    cleanup_policy: str | None


def _admin(settings: Settings) -> AIOKafkaAdminClient:
    return clients.admin(settings, request_timeout_ms=10_000)


def declared_topics(namespace: str) -> dict[str, NewTopic]:
    """The catalogue's topics, qualified by ``namespace``, as creation requests."""
    out: dict[str, NewTopic] = {}
    for spec in CATALOGUE.values():
        name = qualified(spec.name, namespace)
        configs = {"cleanup.policy": spec.cleanup, **dict(spec.configs)}
        out[name] = NewTopic(name, num_partitions=spec.partitions, replication_factor=1,
                             topic_configs=configs)
    return out


async def ensure_topics(settings: Settings, namespace: str | None = None) -> list[str]:
    """Create the catalogue's missing topics; return the names created now."""
    ns = settings.namespace if namespace is None else namespace
    wanted = declared_topics(ns)
    admin = _admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for name, t in wanted.items() if name not in existing]
        if missing:
            # Another process may create some between list and create: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        created = [t.name for t in missing]
        for name in created:
            log.info("created topic %s", name)
        return created
    finally:
        await admin.close()


async def describe_topics(settings: Settings, namespace: str | None = None) -> list[TopicInfo]:
    """Every topic of the namespace on the broker, with its partitions and cleanup policy."""
    ns = settings.namespace if namespace is None else namespace
    declared = {name: t.num_partitions for name, t in declared_topics(ns).items()}
    admin = _admin(settings)
    await admin.start()
    try:
        names = sorted(n for n in await admin.list_topics()
                       if n in declared or (ns and n.startswith(f"{ns}.")))
        if not names:
            return []
        meta = await admin.describe_topics(names)
        partitions = {m["topic"]: len(m["partitions"]) for m in meta}
        policies: dict[str, str | None] = {}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        )
        for response in responses:
            for resource in response.resources:
                topic = resource[3]
                for entry in resource[4]:
                    if entry[0] == "cleanup.policy":
                        policies[topic] = entry[1]
        return [TopicInfo(n, partitions.get(n, 0), declared.get(n), policies.get(n))
                for n in names]
    finally:
        await admin.close()
