"""The abort path and transactional dead letters, on the real broker.

* A commit that fails with an abortable error (the broker refuses a record: the topic's
  ``max.message.bytes``) aborts inside ``commit_transaction``; the caller's own abort is then a no-op
  (librdkafka refuses a second abort, which used to kill the daemon with exit code 3), and the
  producer goes on with the next transaction.
* Dead letters of a transactional consumer go out in the transaction that commits the offsets past
  them: an aborted batch leaves none behind, the redo writes each exactly once.
* A tombstone on a compacted topic is a deletion, not a dead letter.
"""

from __future__ import annotations

import os
import uuid

import pytest
from bus_helpers import decision, produce_raw, read_raw
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from meshfl.bus import REASON_HEADER, EventConsumer, EventProducer, read_all
from meshfl.bus._admin import admin_client
from meshfl.codec import EventCodec
from meshfl.errors import BusError
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name

pytestmark = pytest.mark.kafka


def _set_max_message_bytes(settings: MeshflSettings, topic: Topic, value: int | None) -> None:
    """Set (or with None, delete) a topic's ``max.message.bytes``: a real broker-side refusal."""
    op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
    entry = ConfigEntry("max.message.bytes", str(value or ""), incremental_operation=op)
    resource = ConfigResource(ResourceType.TOPIC, topic_name(settings, topic), incremental_configs=[entry])
    admin = admin_client(settings)  # kept alive until the futures resolve
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def test_abortable_commit_aborts_once_and_the_producer_goes_on(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    _set_max_message_bytes(bus_settings, Topic.DECISIONS, 1024)
    txn = EventProducer(bus_settings, codec=codec, transactional_id=f"txn-{uuid.uuid4().hex[:6]}")
    try:
        txn.begin_transaction()
        # Random text: the limit applies after compression.
        big = decision(0).model_copy(update={"reason": os.urandom(8192).hex()})
        txn.produce(Topic.DECISIONS, big, key="d0")
        with pytest.raises(BusError):
            txn.commit_transaction()
        assert not txn.in_transaction
        txn.abort_transaction()  # what the governance and agent loops do next: must not raise

        _set_max_message_bytes(bus_settings, Topic.DECISIONS, None)
        attempts = 0
        # As the loops do: a failed transaction is aborted and redone. librdkafka may fail the first
        # redo with OUT_OF_ORDER_SEQUENCE_NUMBER (the refused record's sequence; it bumps the epoch on
        # that abort), so the redo is a loop, bounded.
        while True:
            attempts += 1
            txn.begin_transaction()
            txn.produce(Topic.DECISIONS, decision(1), key="d1")
            try:
                txn.commit_transaction()
                break
            except BusError:
                txn.abort_transaction()
                assert attempts < 5
        print(f"committed at attempt {attempts}")
    finally:
        txn.close()
    seen = [env.event.decision_id for env in read_all(bus_settings, Topic.DECISIONS)]
    assert seen == [decision(1).decision_id]


def test_dead_letters_are_written_once_with_the_commit_that_passes_them(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    produce_raw(bus_settings, Topic.UPDATES, [(b"\x00garbage", {}), (b"\xc3\x01not-avro", {})])
    group = f"gov-{uuid.uuid4().hex[:6]}"
    txn = EventProducer(bus_settings, codec=codec, transactional_id=f"txn-{uuid.uuid4().hex[:6]}")
    consumer = EventConsumer(
        bus_settings, [Topic.UPDATES], codec=codec, group_id=group, transactional_dead_letters=True
    )
    try:
        assert drain_none(consumer) == []
        # An aborted batch: its dead letters are dropped with it and never reach the topic.
        txn.begin_transaction()
        txn.abort_transaction()
        consumer.rewind_to_committed()
        assert read_raw(bus_settings, Topic.DEAD_LETTERS) == []
        # The redo reads the records again and commits their dead letters with the offsets.
        assert drain_none(consumer) == []
        txn.begin_transaction()
        txn.commit_transaction(consumer)
    finally:
        consumer.close()
        txn.close()
    letters = read_raw(bus_settings, Topic.DEAD_LETTERS)
    assert len(letters) == 2
    assert all(REASON_HEADER in headers for _value, headers in letters)


def drain_none(consumer: EventConsumer) -> list[object]:
    """Poll until both bad records were handled (each yields nothing but a dead letter)."""
    got = []
    for _ in range(40):
        envelope = consumer.poll(0.5)
        if envelope is not None:
            got.append(envelope)
        if consumer.safe_offsets() and consumer.safe_offsets()[0].offset >= 2:
            break
    return got


def test_a_catalog_tombstone_is_a_deletion_not_a_dead_letter(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    produce_raw(bus_settings, Topic.CATALOG, [(None, {})], key="retail.orders")  # type: ignore[list-item]
    deleted: list[str | None] = []
    consumer = EventConsumer(
        bus_settings, [Topic.CATALOG], codec=codec, on_tombstone=lambda _topic, key: deleted.append(key)
    )
    try:
        for _ in range(40):
            consumer.poll(0.25)
            if deleted:
                break
    finally:
        consumer.close()
    assert deleted == ["retail.orders"]
    assert read_raw(bus_settings, Topic.DEAD_LETTERS) == []
