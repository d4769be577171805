"""Consume-transform-produce in transactions: committed output is visible, aborted output is not."""

from __future__ import annotations

import uuid

import pytest
from bus_helpers import decision, drain, heartbeat
from confluent_kafka import Consumer, TopicPartition

from meshfl.bus import EventConsumer, EventProducer, read_all
from meshfl.codec import EventCodec
from meshfl.errors import BusError
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name

pytestmark = pytest.mark.kafka


def _committed(settings: MeshflSettings, group: str, topic: Topic) -> int:
    """The group's committed offset of partition 0, read by a plain client."""
    probe = Consumer(settings.client_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        (tp,) = probe.committed([TopicPartition(topic_name(settings, topic), 0)], timeout=10)
        return tp.offset
    finally:
        probe.close()


def test_transactions_commit_abort_and_offsets(bus_settings: MeshflSettings, codec: EventCodec) -> None:
    with EventProducer(bus_settings, codec=codec) as producer:
        for n in range(3):
            producer.produce(Topic.HEARTBEATS, heartbeat(n=n), key="retail")
    group = f"gov-{uuid.uuid4().hex[:6]}"
    txn = EventProducer(bus_settings, codec=codec, transactional_id=f"txn-{uuid.uuid4().hex[:6]}")
    consumer = EventConsumer(bus_settings, [Topic.HEARTBEATS], codec=codec, group_id=group)
    try:
        # 1. committed: output and input offsets together.
        (first,) = drain(consumer, 1)
        txn.begin_transaction()
        txn.produce(Topic.DECISIONS, decision(0), key="d0")
        txn.commit_transaction(consumer)
        assert _committed(bus_settings, group, Topic.HEARTBEATS) == first.offset + 1

        # 2. aborted: the output never shows, the offsets stay, the input is read again after a rewind.
        (second,) = drain(consumer, 1)
        txn.begin_transaction()
        txn.produce(Topic.DECISIONS, decision(1), key="d1")
        txn.flush()
        txn.abort_transaction()
        assert _committed(bus_settings, group, Topic.HEARTBEATS) == first.offset + 1
        consumer.rewind_to_committed()
        (again,) = drain(consumer, 1)
        assert (again.offset, again.event) == (second.offset, second.event)

        # 3. explicit offsets are what the group ends up with.
        txn.begin_transaction()
        txn.produce(Topic.DECISIONS, decision(2), key="d2")
        txn.commit_transaction(consumer, offsets=consumer.safe_offsets())
        assert _committed(bus_settings, group, Topic.HEARTBEATS) == again.offset + 1
    finally:
        consumer.close()
        txn.close()
    snapshot = list(read_all(bus_settings, Topic.DECISIONS, codec=codec))
    assert [e.event for e in snapshot] == [decision(0), decision(2)]
    # Transaction markers take offsets too; a reader still reaches the end.
    with EventConsumer(bus_settings, [Topic.DECISIONS], codec=codec) as reader:
        assert [e.event for e in drain(reader, 2)] == [decision(0), decision(2)]
        assert reader.poll(1.0) is None
        assert reader.at_end()


def test_read_all_does_not_wait_for_an_open_transaction(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    with EventProducer(bus_settings, codec=codec) as producer:
        producer.produce(Topic.DECISIONS, decision(0), key="d0")
    with EventProducer(bus_settings, codec=codec, transactional_id=f"open-{uuid.uuid4().hex[:6]}") as txn:
        txn.begin_transaction()
        txn.produce(Topic.DECISIONS, decision(1), key="d1")
        txn.flush()
        snapshot = list(read_all(bus_settings, Topic.DECISIONS, codec=codec, timeout=5.0))
        assert [e.event for e in snapshot] == [decision(0)]
        txn.commit_transaction()
    assert [e.event for e in read_all(bus_settings, Topic.DECISIONS, codec=codec)] == [
        decision(0),
        decision(1),
    ]


def test_transaction_misuse_is_an_error(bus_settings: MeshflSettings, codec: EventCodec) -> None:
    with EventProducer(bus_settings, codec=codec) as plain:
        with pytest.raises(BusError):
            plain.begin_transaction()
        with pytest.raises(BusError):
            plain.commit_transaction()
