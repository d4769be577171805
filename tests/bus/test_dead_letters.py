"""Bad data goes to the dead-letter topic with the reason; the consumer goes on and never delivers it."""

from __future__ import annotations

import os
import time

import pytest
from bus_helpers import decision, drain, poll_until_quiet, produce_raw, read_raw

from meshfl.bus import (
    CHUNK_HEADER,
    ERROR_HEADER,
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    EventConsumer,
    split_payload,
)
from meshfl.codec import EventCodec
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name

pytestmark = pytest.mark.kafka

CHUNK = {CHUNK_HEADER: b"1"}


def _chunk_records(
    codec: EventCodec, payload: bytes, message_id: str
) -> list[tuple[bytes, dict[str, bytes]]]:
    return [(codec.encode(c), CHUNK) for c in split_payload(payload, chunk_size=4096, message_id=message_id)]


def test_garbage_and_unknown_schema_are_dead_lettered(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    good = codec.encode(decision(1))
    unknown_fingerprint = good[:2] + bytes(8) + good[10:]  # single-object framing, no schema has this id
    produce_raw(
        bus_settings,
        Topic.DECISIONS,
        [
            (b"this is not avro", {"origin": b"elsewhere"}),
            (unknown_fingerprint, {}),
            (good, {}),
        ],
    )
    with EventConsumer(bus_settings, [Topic.DECISIONS], codec=codec) as consumer:
        (envelope,) = drain(consumer, 1)
        assert envelope.event == decision(1) and envelope.offset == 2
        assert consumer.at_end()
    letters = read_raw(bus_settings, Topic.DEAD_LETTERS)
    assert [value for value, _ in letters] == [b"this is not avro", unknown_fingerprint]
    (_, first), (_, second) = letters
    assert first[SOURCE_TOPIC_HEADER] == topic_name(bus_settings, Topic.DECISIONS).encode()
    assert (first[SOURCE_PARTITION_HEADER], first[SOURCE_OFFSET_HEADER]) == (b"0", b"0")
    assert first[REASON_HEADER] == b"undecodable" and first[ERROR_HEADER]
    assert first["origin"] == b"elsewhere"  # the original headers travel with the letter
    assert second[REASON_HEADER] == b"unknown-schema" and second[SOURCE_OFFSET_HEADER] == b"1"


def test_corrupt_chunk_set_is_dead_lettered_never_delivered(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    payload = codec.encode(decision(7)) + os.urandom(10_000)  # decodes only if the digest were ignored
    records = _chunk_records(codec, payload, "corrupt")
    forged_chunk = split_payload(payload, chunk_size=4096, message_id="corrupt")[1]
    flipped = bytes([forged_chunk.data[0] ^ 0xFF]) + forged_chunk.data[1:]
    records[1] = (codec.encode(forged_chunk.model_copy(update={"data": flipped})), CHUNK)
    produce_raw(bus_settings, Topic.DECISIONS, [*records, (codec.encode(decision(8)), {})])
    with EventConsumer(bus_settings, [Topic.DECISIONS], codec=codec) as consumer:
        got = poll_until_quiet(consumer)
    assert [e.event for e in got] == [decision(8)]
    letters = read_raw(bus_settings, Topic.DEAD_LETTERS)
    assert len(letters) == 1
    _, headers = letters[0]
    assert headers[REASON_HEADER] == b"chunk-corrupt" and b"blake3" in headers[ERROR_HEADER]
    assert headers["meshfl-dlq-first-offset"] == b"0"
    assert headers["meshfl-dlq-last-offset"] == str(len(records) - 1).encode()
    assert headers["meshfl-dlq-message-id"] == b"corrupt"


def test_incomplete_chunk_set_expires_to_dead_letters(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    records = _chunk_records(codec, codec.encode(decision(3)) + os.urandom(20_000), "partial")
    # A producer that died half way; then, later on the broker's clock (LogAppendTime: the stamps a
    # producer writes are replaced), a good record.
    produce_raw(bus_settings, Topic.DECISIONS, records[:-1], timestamp_ms=int(time.time() * 1000) - 60_000)
    time.sleep(3.0)
    produce_raw(bus_settings, Topic.DECISIONS, [(codec.encode(decision(4)), {})])
    with EventConsumer(
        bus_settings, [Topic.DECISIONS], codec=codec, group_id="g", chunk_timeout=2.0
    ) as consumer:
        got = poll_until_quiet(consumer)
        assert [e.event for e in got] == [decision(4)]
        # The expired set no longer holds the offsets back: everything was handled.
        (safe,) = consumer.safe_offsets()
        assert safe.offset == len(records)
    letters = read_raw(bus_settings, Topic.DEAD_LETTERS)
    assert len(letters) == 1
    value, headers = letters[0]
    assert value == b"" and headers[REASON_HEADER] == b"chunk-incomplete"
    assert headers["meshfl-dlq-message-id"] == b"partial"
    assert headers[SOURCE_OFFSET_HEADER] == b"0"
    assert headers["meshfl-dlq-group"] == b"g"


def test_dead_letters_off_only_logs(bus_settings: MeshflSettings, codec: EventCodec) -> None:
    produce_raw(bus_settings, Topic.DECISIONS, [(b"\x00garbage", {}), (codec.encode(decision(2)), {})])
    with EventConsumer(bus_settings, [Topic.DECISIONS], codec=codec, dead_letters=False) as consumer:
        assert [e.event for e in drain(consumer, 1)] == [decision(2)]
    assert read_raw(bus_settings, Topic.DEAD_LETTERS) == []


def test_chunk_set_of_garbage_is_dead_lettered_whole(bus_settings: MeshflSettings, codec: EventCodec) -> None:
    records = _chunk_records(codec, os.urandom(10_000), "garbage")  # digest fine, content not an event
    produce_raw(bus_settings, Topic.DECISIONS, [*records, (codec.encode(decision(5)), {})])
    with EventConsumer(bus_settings, [Topic.DECISIONS], codec=codec) as consumer:
        assert [e.event for e in poll_until_quiet(consumer)] == [decision(5)]
    ((_, headers),) = read_raw(bus_settings, Topic.DEAD_LETTERS)
    assert headers[REASON_HEADER] in (b"undecodable", b"unknown-schema")
    assert headers["meshfl-dlq-message-id"] == b"garbage"
    assert headers["meshfl-dlq-first-offset"] == b"0"
    assert headers[SOURCE_OFFSET_HEADER] == str(len(records) - 1).encode()
