"""The event bus: a small typed layer over confluent-kafka.

``EventProducer`` and ``EventConsumer`` move ``meshfl.events`` over Kafka: encoded by
``meshfl.codec``, chunked above ``settings.max_message_bytes`` and reassembled all-or-nothing,
undecodable records sent to the dead-letter topic instead of stopping a daemon, offsets committed
only where no data is skipped, transactions for consume-transform-produce. ``ensure_topics``
creates the topics, ``read_all`` takes a snapshot of one.
"""

from __future__ import annotations

from meshfl.bus._admin import committed_ranges, ensure_topics, offsets_at, partition_count
from meshfl.bus._chunking import split_payload
from meshfl.bus._consumer import EventConsumer
from meshfl.bus._dead_letter import (
    ERROR_HEADER,
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
)
from meshfl.bus._envelope import CHUNK_HEADER, Envelope
from meshfl.bus._producer import EventProducer
from meshfl.bus._reassembly import ChunkSetError, Reassembled, Reassembler
from meshfl.bus._snapshot import read_all

__all__ = [
    "CHUNK_HEADER",
    "ERROR_HEADER",
    "REASON_HEADER",
    "SOURCE_OFFSET_HEADER",
    "SOURCE_PARTITION_HEADER",
    "SOURCE_TOPIC_HEADER",
    "ChunkSetError",
    "Envelope",
    "EventConsumer",
    "EventProducer",
    "Reassembled",
    "Reassembler",
    "committed_ranges",
    "ensure_topics",
    "offsets_at",
    "partition_count",
    "read_all",
    "split_payload",
]
