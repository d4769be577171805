"""The bus has one public surface; the lead's agent and governance code build on exactly these names."""

from __future__ import annotations

import inspect

import meshfl.bus as bus


def test_export_list() -> None:
    assert sorted(bus.__all__) == sorted(
        [
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
    )
    assert all(hasattr(bus, name) for name in bus.__all__)


def test_envelope_fields() -> None:
    fields = list(inspect.signature(bus.Envelope).parameters)
    assert fields == [
        "topic",
        "partition",
        "offset",
        "first_offset",
        "key",
        "event",
        "headers",
        "timestamp_ms",
    ]


def test_client_signatures() -> None:
    producer = inspect.signature(bus.EventProducer)
    assert list(producer.parameters) == [
        "settings",
        "codec",
        "transactional_id",
        "client_id",
        "signer",
        "on_committed",
    ]
    consumer = inspect.signature(bus.EventConsumer)
    assert list(consumer.parameters)[:8] == [
        "settings",
        "topics",
        "codec",
        "group_id",
        "from_beginning",
        "client_id",
        "dead_letters",
        "chunk_timeout",
    ]
    for name in [
        "poll",
        "safe_offsets",
        "commit",
        "consumer_group_metadata",
        "rewind_to_committed",
        "at_end",
    ]:
        assert callable(getattr(bus.EventConsumer, name))
    for name in ["produce", "flush", "begin_transaction", "commit_transaction", "abort_transaction", "close"]:
        assert callable(getattr(bus.EventProducer, name))
