"""A real three-node KRaft cluster on loopback: replication, and losing a broker without losing data."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic, PartitionMetadata

from meshfl.broker import LocalBroker, free_port_block


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalBroker]:
    local = LocalBroker(data_dir=tmp_path / "cluster", port=free_port_block(6), brokers=3, heap="384m")
    try:
        yield local
    finally:
        local.stop(kill=True)


def _produce_all(bootstrap: str, topic: str, values: list[bytes]) -> None:
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 0}
    )
    for value in values:
        producer.produce(topic, value, on_delivery=on_delivery)
    assert producer.flush(45) == 0
    assert failures == []


def _consume(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
    )
    seen: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 45
        while len(seen) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                seen.append(msg.value())
    finally:
        consumer.close()
    return seen


@pytest.mark.kafka
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


@pytest.mark.slow
def test_three_brokers_replicate_and_survive_losing_the_leader(cluster: LocalBroker) -> None:
    started = time.monotonic()
    bootstrap = cluster.start(timeout=120)
    assert len(bootstrap.split(",")) == 3
    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert sorted(admin.list_topics(timeout=10).brokers) == [1, 2, 3]

    topic = f"replicated-{uuid.uuid4().hex[:8]}"
    spec = NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})
    admin.create_topics([spec])[topic].result(timeout=30)
    partition = _partition_metadata(admin, topic)
    assert sorted(partition.replicas) == [1, 2, 3]

    before = [f"before-{i}".encode() for i in range(10)]
    _produce_all(bootstrap, topic, before)

    leader = partition.leader
    cluster.stop(node=leader, kill=True)  # a crash, not a clean shutdown
    status = cluster.status()
    assert status.state == "degraded"
    assert [node.node_id for node in status.nodes if not node.running] == [leader]

    after = [f"after-{i}".encode() for i in range(10)]
    _produce_all(bootstrap, topic, after)  # acks=all with 2 of 3 replicas in sync
    new_leader = admin.list_topics(topic, timeout=10).topics[topic].partitions[0].leader
    assert new_leader not in (leader, -1)
    assert _consume(bootstrap, topic, 20) == before + after

    assert cluster.start(timeout=90) == bootstrap  # the lost node comes back with the same identity
    assert cluster.status().state == "running"
    assert time.monotonic() - started < 90
