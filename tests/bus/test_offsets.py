"""Committed offsets never pass data that was not handed out: incomplete chunk sets and holds."""

from __future__ import annotations

import os
import uuid

import pytest
from bus_helpers import decision, drain, produce_raw

from meshfl.bus import CHUNK_HEADER, EventConsumer, split_payload
from meshfl.codec import EventCodec
from meshfl.events import Chunk
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name

pytestmark = pytest.mark.kafka


def test_safe_offsets_do_not_pass_an_incomplete_chunk_set(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    big = decision(100).model_copy(update={"reason": os.urandom(6000).hex()})
    chunks = split_payload(codec.encode(big), chunk_size=5000, message_id="big")
    assert len(chunks) == 3

    def chunk(c: Chunk) -> tuple[bytes, dict[str, bytes]]:
        return codec.encode(c), {CHUNK_HEADER: b"1"}

    def small(n: int) -> tuple[bytes, dict[str, bytes]]:
        return codec.encode(decision(n)), {}

    # offsets: 0 chunk, 1 small, 2 chunk, 3 small, 4 chunk (completes), 5 small
    produce_raw(
        bus_settings,
        Topic.DECISIONS,
        [chunk(chunks[0]), small(1), chunk(chunks[1]), small(2), chunk(chunks[2]), small(3)],
    )
    name = topic_name(bus_settings, Topic.DECISIONS)
    group = f"g-{uuid.uuid4().hex[:6]}"
    with EventConsumer(bus_settings, [Topic.DECISIONS], codec=codec, group_id=group) as consumer:
        first = drain(consumer, 1)[0]
        assert (first.event, first.offset) == (decision(1), 1)
        assert [(tp.topic, tp.partition, tp.offset) for tp in consumer.safe_offsets()] == [(name, 0, 0)]
        second = drain(consumer, 1)[0]
        assert second.offset == 3
        assert consumer.safe_offsets()[0].offset == 0  # still held by the chunk at offset 0
        consumer.commit()  # commits 0: a restart reads the whole set again
        whole = drain(consumer, 1)[0]
        assert (whole.event, whole.offset, whole.first_offset) == (big, 4, 0)
        assert consumer.safe_offsets()[0].offset == 5
        assert consumer.safe_offsets(holds={(name, 0): 2})[0].offset == 2
    # A restart of the group from the committed offset loses nothing.
    with EventConsumer(bus_settings, [Topic.DECISIONS], codec=codec, group_id=group) as consumer:
        again = drain(consumer, 4)
        assert [e.offset for e in again] == [1, 3, 4, 5]
        assert again[2].event == big
        consumer.commit()
        assert consumer.safe_offsets()[0].offset == 6
    with EventConsumer(bus_settings, [Topic.DECISIONS], codec=codec, group_id=group) as consumer:
        assert consumer.poll(3.0) is None


def test_commit_and_rewind_without_group_are_refused(bus_settings: MeshflSettings, codec: EventCodec) -> None:
    from meshfl.errors import BusError

    with EventConsumer(bus_settings, [Topic.DECISIONS], codec=codec) as consumer:
        with pytest.raises(BusError):
            consumer.commit()
        with pytest.raises(BusError):
            consumer.consumer_group_metadata()
