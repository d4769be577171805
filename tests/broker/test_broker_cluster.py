"""A real three-node KRaft cluster on loopback: meshfl's own topics replicated by the broker's default
(3 replicas, min ISR 2), and losing the leader of the decisions log without losing a decision."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, PartitionMetadata, ResourceType

from meshfl.broker import LocalBroker, free_port_block
from meshfl.bus import EventProducer, ensure_topics, read_all
from meshfl.bus._admin import warn_single_replicas
from meshfl.events import DecisionOutcome, GovernanceDecision
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name, topic_specs

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalBroker]:
    local = LocalBroker(data_dir=tmp_path / "cluster", port=free_port_block(6), brokers=3, heap="384m")
    try:
        yield local
    finally:
        local.stop(kill=True)


def _partition_metadata(admin: AdminClient, topic: str, timeout: float = 30.0) -> PartitionMetadata:
    """Partition 0's metadata once every broker has learnt of the new topic (it lags the create call)."""
    deadline = time.monotonic() + timeout
    while True:
        partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
        if 0 in partitions and partitions[0].leader >= 0:
            return partitions[0]
        if time.monotonic() > deadline:
            pytest.fail(f"topic {topic} has no leader after {timeout:.0f} s")
        time.sleep(0.2)


def _decisions(count: int, tag: str) -> list[GovernanceDecision]:
    return [
        GovernanceDecision(
            decision_id=f"{tag}-{i}",
            task_id="t",
            update_id=f"u-{tag}-{i}",
            domain="d",
            round=1,
            outcome=DecisionOutcome.ACCEPTED,
            policy="test",
            reason="replication test",
        )
        for i in range(count)
    ]


def _publish(settings: MeshflSettings, decisions: list[GovernanceDecision]) -> None:
    with EventProducer(settings) as producer:  # idempotent, acks=all
        for decision in decisions:
            producer.produce(Topic.DECISIONS, decision, key=decision.task_id)
        producer.flush(60)


def test_meshfl_topics_are_replicated_and_survive_losing_the_leader(cluster: LocalBroker) -> None:
    bootstrap = cluster.start(timeout=180)
    assert len(bootstrap.split(",")) == 3
    settings = MeshflSettings(bootstrap_servers=bootstrap, topic_prefix=f"r{uuid.uuid4().hex[:6]}.")
    assert settings.replication_factor == -1  # the broker decides
    admin = AdminClient(settings.client_config())
    assert sorted(admin.list_topics(timeout=10).brokers) == [1, 2, 3]

    ensure_topics(settings)
    names = [spec.name for spec in topic_specs(settings)]
    for name in names:
        partition = _partition_metadata(admin, name)
        assert sorted(partition.replicas) == [1, 2, 3], name
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in names])
    for resource, future in described.items():
        assert future.result()["min.insync.replicas"].value == "2", resource.name
    assert warn_single_replicas(admin, names) == []
    lonely = f"{settings.topic_prefix}lonely"
    admin.create_topics([NewTopic(lonely, 1, 1)])[lonely].result(timeout=30)
    _partition_metadata(admin, lonely)
    # A new topic's metadata reaches every broker a moment later (a loaded machine: seconds).
    deadline = time.monotonic() + 60
    while (single := warn_single_replicas(admin, [*names, lonely])) != [
        lonely
    ] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert single == [lonely]

    before = _decisions(10, "before")
    _publish(settings, before)
    decisions = topic_name(settings, Topic.DECISIONS)
    leader = _partition_metadata(admin, decisions).leader
    cluster.stop(node=leader, kill=True)  # a crash, not a clean shutdown
    status = cluster.status()
    assert status.state == "degraded"
    assert [node.node_id for node in status.nodes if not node.running] == [leader]

    after = _decisions(10, "after")
    _publish(settings, after)  # acks=all with 2 of 3 replicas in sync
    new_leader = admin.list_topics(decisions, timeout=10).topics[decisions].partitions[0].leader
    assert new_leader not in (leader, -1)
    read = [env.event.decision_id for env in read_all(settings, Topic.DECISIONS, timeout=60)]
    assert read == [d.decision_id for d in before + after]

    assert cluster.start(timeout=120) == bootstrap  # the lost node comes back with the same identity
    assert cluster.status().state == "running"
