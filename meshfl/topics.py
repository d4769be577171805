"""Every topic meshfl uses, with the configs it is created with: names in one place, prefixed."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from meshfl.settings import MeshflSettings

_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}
_COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
_BROKER_TIME = {"message.timestamp.type": "LogAppendTime"}
"""Record timestamps are the broker's: chunk expiry and audit times never follow a producer's clock."""


class Topic(StrEnum):
    """Logical topic names; the physical name is ``settings.topic_prefix + value``."""

    CATALOG = "catalog"  # latest descriptor of each data product (compacted, key = product id)
    TASKS = "tasks"  # federation tasks (kept forever: audit replays them)
    UPDATES = "model-updates"  # model updates from domains (kept forever)
    MODEL_VERSIONS = "model-versions"  # global model versions (kept forever: the model registry)
    DECISIONS = "decisions"  # governance decisions (kept forever: the audit trail)
    HEARTBEATS = "heartbeats"  # domain liveness (7 days)
    AGENT_PROGRESS = "agent-progress"  # last round each agent published per task (compacted)
    DEAD_LETTERS = "dead-letters"  # undecodable messages with the reason in headers (kept forever)
    KEYS = "keys"  # governance-signed domain key registrations and revocations (compacted, domain/key_id)
    SPLIT_ALIGNMENT = "split-alignment"  # private set intersection ciphertexts of vertical tasks (forever)
    SPLIT_CONTROL = (
        "split-control"  # vertical tasks: governance's commands and the parties' reports (forever)
    )
    SPLIT_ACTIVATIONS = "split-activations"  # cut-layer activations per batch (kept forever: audit replays)
    SPLIT_GRADIENTS = "split-gradients"  # gradients per batch back to the parties (kept forever)
    SPLIT_VERSIONS = "split-versions"  # split-model versions, one per epoch (kept forever)
    GOVERNANCE_STATE = "governance-state"  # governance's state per updates partition (compacted, partition-N)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


_CONFIGS: dict[Topic, dict[str, str]] = {
    Topic.CATALOG: _COMPACTED,
    Topic.TASKS: _FOREVER,
    Topic.UPDATES: _FOREVER,
    Topic.MODEL_VERSIONS: _FOREVER,
    Topic.DECISIONS: _FOREVER,
    Topic.HEARTBEATS: {"retention.ms": str(7 * 24 * 3600 * 1000)},
    Topic.AGENT_PROGRESS: _COMPACTED,
    Topic.DEAD_LETTERS: _FOREVER,
    Topic.KEYS: _COMPACTED,
    Topic.SPLIT_ALIGNMENT: _FOREVER,
    Topic.SPLIT_CONTROL: _FOREVER,
    Topic.SPLIT_ACTIVATIONS: _FOREVER,
    Topic.SPLIT_GRADIENTS: _FOREVER,
    Topic.SPLIT_VERSIONS: _FOREVER,
    # Small segments, so the cleaner keeps about one record per key: a restart reads O(partitions).
    Topic.GOVERNANCE_STATE: {**_COMPACTED, "segment.ms": str(600_000), "min.cleanable.dirty.ratio": "0.1"},
}


# Consumer groups and transactional ids: ACLs (``meshfl.access``) grant them by these exact names.
READER_GROUP_PREFIX = "meshfl-reader-"
"""Throw-away group of an ``assign()``-only reader (librdkafka needs a ``group.id``); never committed."""
GOVERNANCE_ID = "governance-"
"""Governance's consumer group and ``transactional.id``: ``client_name`` of this plus its service id."""
AGENT_ID = "agent-"
"""A domain agent's ``transactional.id``: ``client_name`` of this plus the domain name."""


def is_compacted(topic: Topic) -> bool:
    """Whether the topic keeps the latest record per key (a null value there is a deletion)."""
    return _CONFIGS[topic].get("cleanup.policy") == "compact"


def topic_name(settings: MeshflSettings, topic: Topic) -> str:
    return f"{settings.topic_prefix}{topic.value}"


def governance_id(settings: MeshflSettings, service_id: str) -> str:
    """The consumer group and ``transactional.id`` of governance service ``service_id``."""
    return client_name(settings, f"{GOVERNANCE_ID}{service_id}")


def agent_transactional_id(settings: MeshflSettings, domain: str) -> str:
    return client_name(settings, f"{AGENT_ID}{domain}")


def client_name(settings: MeshflSettings, name: str) -> str:
    """A consumer group, transactional or client id of this federation: ``topic_prefix + name``.

    Prefixed like the topics, so that two federations sharing a broker (a demo run beside a test, two
    teams) never fence each other's transactions or join each other's groups, and so that one
    prefixed ACL covers a federation's ids.
    """
    return f"{settings.topic_prefix}{name}"


def topic_specs(settings: MeshflSettings) -> list[TopicSpec]:
    """The full set of topics with their configs.

    With replication factor -1 (the default) the broker decides both the replication and
    ``min.insync.replicas`` from its own defaults; an explicit factor sets min ISR to ``min(2, rf)``.
    """
    rf = settings.replication_factor
    min_isr = {} if rf == -1 else {"min.insync.replicas": str(min(2, rf))}
    return [
        TopicSpec(
            name=topic_name(settings, topic),
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            config={**_CONFIGS[topic], **_BROKER_TIME, **min_isr},
        )
        for topic in Topic
    ]
