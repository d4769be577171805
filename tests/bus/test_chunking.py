"""Splitting and reassembly, without Kafka: all or nothing, bounded memory, expiry on the log clock."""

from __future__ import annotations

import os

import blake3
import numpy as np
import pytest
import torch

from meshfl.bus import ChunkSetError, Reassembler, split_payload
from meshfl.bus._chunking import chunk_size_for
from meshfl.codec import make_codec
from meshfl.errors import ChunkError
from meshfl.events import Chunk, ModelVersion, utcnow
from meshfl.settings import load_settings
from meshfl.tensors import tensors_sha256, to_wire

TOPIC = "t.model-updates"


def _feed(reassembler: Reassembler, chunks: list[Chunk], *, first_offset: int = 0, partition: int = 0):
    results = []
    for i, chunk in enumerate(chunks):
        results.append(
            reassembler.add(
                chunk, topic=TOPIC, partition=partition, offset=first_offset + i, timestamp_ms=1000 + i
            )
        )
    return results


def test_split_sizes_order_and_digest() -> None:
    payload = os.urandom(10_001)
    chunks = split_payload(payload, chunk_size=1000, message_id="m1")
    assert len(chunks) == 11
    assert [c.index for c in chunks] == list(range(11))
    assert all(c.count == 11 and c.total_size == 10_001 and c.message_id == "m1" for c in chunks)
    assert all(len(c.data) == 1000 for c in chunks[:-1]) and len(chunks[-1].data) == 1
    assert b"".join(c.data for c in chunks) == payload
    assert {c.blake3 for c in chunks} == {blake3.blake3(payload).hexdigest()}
    assert {c.sha256 for c in chunks} == {None}  # writers name the set by BLAKE3 only


def test_chunks_of_the_unjoined_pieces_are_the_chunks_of_the_message() -> None:
    """The producer cuts ``encode_parts`` pieces without joining them: same chunks, byte for byte,
    whatever the piece boundaries (pieces shorter and longer than a chunk, empty, a float array view)."""
    floats = np.arange(3001, dtype=np.float32)
    pieces = [b"ab", b"", os.urandom(2500), memoryview(floats), os.urandom(999), b"z"]
    joined = b"".join(pieces)
    for size in (7, 1000, 2503, len(joined), len(joined) + 5):
        from_parts = split_payload(pieces, chunk_size=size, message_id="m")
        whole = split_payload(joined, chunk_size=size, message_id="m")
        assert [(c.index, c.count, c.total_size, c.blake3, bytes(c.data)) for c in from_parts] == [
            (c.index, c.count, c.total_size, c.blake3, bytes(c.data)) for c in whole
        ]
    weights = {"w": torch.arange(40_000, dtype=torch.float32), "b": torch.ones(3)}
    tensors = to_wire(weights, copy=False)
    version = ModelVersion(
        task_id="t", version=0, parent_version=None, round=0, strategy={"name": "fedavg"},
        tensors=tensors, sha256=tensors_sha256(tensors), created_at=utcnow(),
    )  # fmt: skip
    codec = make_codec(load_settings())
    assert b"".join(codec.encode_parts(version)) == codec.encode(version)


def test_split_exact_multiple_and_empty() -> None:
    assert len(split_payload(b"x" * 3000, chunk_size=1000, message_id="m")) == 3
    empty = split_payload(b"", chunk_size=1000, message_id="m")
    assert len(empty) == 1 and empty[0].count == 1 and empty[0].data == b""
    with pytest.raises(ValueError):
        split_payload(b"abc", chunk_size=0, message_id="m")


def test_chunk_size_leaves_room_for_framing() -> None:
    assert chunk_size_for(900_000, 200) == 899_800
    with pytest.raises(ValueError):
        chunk_size_for(100, 200)


def test_reassembles_in_order_with_offsets() -> None:
    payload = os.urandom(5000)
    reassembler = Reassembler(max_buffered_bytes=1 << 20)
    results = _feed(reassembler, split_payload(payload, chunk_size=999, message_id="m"), first_offset=40)
    assert results[:-1] == [None] * (len(results) - 1)
    done = results[-1]
    assert done is not None
    assert done.payload == payload
    assert (done.first_offset, done.last_offset, done.message_id) == (40, 45, "m")
    assert reassembler.pending_sets == 0 and reassembler.reserved_bytes == 0


def test_reassembles_out_of_order() -> None:
    payload = os.urandom(3000)
    chunks = split_payload(payload, chunk_size=1000, message_id="m")
    reassembler = Reassembler(max_buffered_bytes=1 << 20)
    done = _feed(reassembler, [chunks[2], chunks[0], chunks[1]])[-1]
    assert done is not None and done.payload == payload


def test_interleaved_sets_are_kept_apart_and_hold_first_offsets() -> None:
    a, b = os.urandom(2500), os.urandom(1500)
    ca = split_payload(a, chunk_size=1000, message_id="a")
    cb = split_payload(b, chunk_size=1000, message_id="b")
    reassembler = Reassembler(max_buffered_bytes=1 << 20)
    order = [(ca[0], 10), (cb[0], 11), (ca[1], 12), (cb[1], 13), (ca[2], 14)]
    results = [reassembler.add(c, topic=TOPIC, partition=0, offset=o, timestamp_ms=0) for c, o in order[:3]]
    assert results == [None, None, None]
    assert reassembler.first_offsets() == {(TOPIC, 0): 10}
    done_b = reassembler.add(cb[1], topic=TOPIC, partition=0, offset=13, timestamp_ms=0)
    assert done_b is not None and done_b.payload == b and done_b.first_offset == 11
    assert reassembler.first_offsets() == {(TOPIC, 0): 10}
    done_a = reassembler.add(ca[2], topic=TOPIC, partition=0, offset=14, timestamp_ms=0)
    assert done_a is not None and done_a.payload == a
    assert reassembler.first_offsets() == {}


def test_same_message_id_on_two_partitions_is_two_sets() -> None:
    payload = os.urandom(2000)
    chunks = split_payload(payload, chunk_size=1000, message_id="m")
    reassembler = Reassembler(max_buffered_bytes=1 << 20)
    assert reassembler.add(chunks[0], topic=TOPIC, partition=0, offset=0, timestamp_ms=0) is None
    assert reassembler.add(chunks[1], topic=TOPIC, partition=1, offset=0, timestamp_ms=0) is None
    assert reassembler.pending_sets == 2


def test_identical_duplicate_is_ignored() -> None:
    payload = os.urandom(3000)
    chunks = split_payload(payload, chunk_size=1000, message_id="m")
    reassembler = Reassembler(max_buffered_bytes=1 << 20)
    results = _feed(reassembler, [chunks[0], chunks[1], chunks[1], chunks[2]])
    assert results[-1] is not None and results[-1].payload == payload
    # A stray duplicate after completion is dropped, not opened as a new set.
    assert reassembler.add(chunks[0], topic=TOPIC, partition=0, offset=9, timestamp_ms=0) is None
    assert reassembler.pending_sets == 0


def test_conflicting_duplicate_rejects_the_set() -> None:
    chunks = split_payload(os.urandom(3000), chunk_size=1000, message_id="m")
    forged = chunks[1].model_copy(update={"data": os.urandom(1000)})
    reassembler = Reassembler(max_buffered_bytes=1 << 20)
    _feed(reassembler, chunks[:2])
    with pytest.raises(ChunkSetError) as info:
        reassembler.add(forged, topic=TOPIC, partition=0, offset=2, timestamp_ms=0)
    assert info.value.reason == "chunk-corrupt"
    assert (info.value.first_offset, info.value.last_offset, info.value.message_id) == (0, 2, "m")
    assert isinstance(info.value, ChunkError)
    # The rest of a rejected set is dropped, never half-used.
    assert reassembler.add(chunks[2], topic=TOPIC, partition=0, offset=3, timestamp_ms=0) is None
    assert reassembler.pending_sets == 0 and reassembler.reserved_bytes == 0


def test_corrupt_data_fails_the_digest() -> None:
    chunks = split_payload(os.urandom(3000), chunk_size=1000, message_id="m")
    flipped = bytearray(chunks[1].data)
    flipped[0] ^= 0xFF
    chunks[1] = chunks[1].model_copy(update={"data": bytes(flipped)})
    reassembler = Reassembler(max_buffered_bytes=1 << 20)
    with pytest.raises(ChunkSetError, match="blake3 of the reassembled payload does not match") as info:
        _feed(reassembler, chunks)
    assert info.value.reason == "chunk-corrupt"


def test_inconsistent_metadata_and_ranges_are_rejected() -> None:
    chunks = split_payload(os.urandom(3000), chunk_size=1000, message_id="m")
    reassembler = Reassembler(max_buffered_bytes=1 << 20)
    _feed(reassembler, chunks[:1])
    with pytest.raises(ChunkSetError, match="disagrees"):
        reassembler.add(
            chunks[1].model_copy(update={"count": 4}), topic=TOPIC, partition=0, offset=1, timestamp_ms=0
        )
    bad_index = chunks[0].model_copy(update={"message_id": "n", "index": 3})
    with pytest.raises(ChunkSetError, match="outside"):
        reassembler.add(bad_index, topic=TOPIC, partition=0, offset=2, timestamp_ms=0)
    too_long = chunks[0].model_copy(update={"message_id": "o", "total_size": 10})
    with pytest.raises(ChunkSetError):
        _feed(reassembler, [too_long])
    bad_digest = chunks[0].model_copy(update={"message_id": "p", "blake3": "xyz"})
    with pytest.raises(ChunkSetError, match="blake3 is not 64 lowercase hex"):
        _feed(reassembler, [bad_digest])


def test_oversized_and_buffer_cap() -> None:
    reassembler = Reassembler(max_buffered_bytes=5000)
    big = split_payload(os.urandom(6000), chunk_size=1000, message_id="big")
    with pytest.raises(ChunkSetError) as info:
        _feed(reassembler, big[:1])
    assert info.value.reason == "chunk-oversized"
    first = split_payload(os.urandom(4000), chunk_size=1000, message_id="first")
    second = split_payload(os.urandom(2000), chunk_size=1000, message_id="second")
    _feed(reassembler, first[:1])
    assert reassembler.reserved_bytes == 4000
    with pytest.raises(ChunkSetError, match="do not fit") as info:
        _feed(reassembler, second[:1])
    assert info.value.reason == "chunk-oversized"
    # The first set is unaffected and still completes.
    done = [
        reassembler.add(c, topic=TOPIC, partition=0, offset=i, timestamp_ms=0) for i, c in enumerate(first)
    ]
    assert done[-1] is not None and reassembler.reserved_bytes == 0


def test_expiry_on_the_log_clock() -> None:
    payload = os.urandom(3000)
    chunks = split_payload(payload, chunk_size=1000, message_id="m")
    reassembler = Reassembler(max_buffered_bytes=1 << 20, timeout_ms=1000)
    reassembler.add(chunks[0], topic=TOPIC, partition=0, offset=7, timestamp_ms=10_000)
    reassembler.add(chunks[1], topic=TOPIC, partition=0, offset=8, timestamp_ms=10_500)
    assert reassembler.expire(11_000) == []
    expired = reassembler.expire(11_001)
    assert len(expired) == 1
    assert expired[0].reason == "chunk-incomplete" and "2 of 3" in str(expired[0])
    assert (expired[0].first_offset, expired[0].last_offset) == (7, 8)
    assert reassembler.pending_sets == 0 and reassembler.first_offsets() == {}
    # The late last chunk does not resurrect the set.
    assert reassembler.add(chunks[2], topic=TOPIC, partition=0, offset=9, timestamp_ms=11_002) is None


def test_expiry_clocks_are_per_partition() -> None:
    chunks = split_payload(os.urandom(2000), chunk_size=1000, message_id="m")
    reassembler = Reassembler(max_buffered_bytes=1 << 20, timeout_ms=1000)
    reassembler.add(chunks[0], topic=TOPIC, partition=0, offset=0, timestamp_ms=0)
    # Partition 1 being at the present says nothing about partition 0's history.
    assert reassembler.expire(10_000, (TOPIC, 1)) == []
    assert reassembler.add(chunks[1], topic=TOPIC, partition=0, offset=1, timestamp_ms=5) is not None
    reassembler.add(chunks[0], topic=TOPIC, partition=0, offset=2, timestamp_ms=0)
    assert reassembler.expire(10_000, (TOPIC, 0)) == []  # message id "m" already finished there
    reassembler.add(
        chunks[0].model_copy(update={"message_id": "n"}), topic=TOPIC, partition=0, offset=3, timestamp_ms=0
    )
    assert [e.message_id for e in reassembler.expire(10_000, (TOPIC, 0))] == ["n"]


def test_drop_forgets_partitions() -> None:
    chunks = split_payload(os.urandom(2000), chunk_size=1000, message_id="m")
    reassembler = Reassembler(max_buffered_bytes=1 << 20)
    reassembler.add(chunks[0], topic=TOPIC, partition=0, offset=0, timestamp_ms=0)
    reassembler.add(chunks[0], topic=TOPIC, partition=1, offset=0, timestamp_ms=0)
    reassembler.drop([(TOPIC, 0)])
    assert reassembler.first_offsets() == {(TOPIC, 1): 0}
    # After a drop (rewind), the whole set can be read again.
    reassembler.add(chunks[0], topic=TOPIC, partition=0, offset=0, timestamp_ms=0)
    done = reassembler.add(chunks[1], topic=TOPIC, partition=0, offset=1, timestamp_ms=0)
    assert done is not None
    reassembler.drop()
    assert reassembler.pending_sets == 0 and reassembler.reserved_bytes == 0


def test_inputs_are_not_mutated() -> None:
    payload = os.urandom(2500)
    snapshot = bytes(payload)
    chunks = split_payload(payload, chunk_size=1000, message_id="m")
    copies = [c.model_copy() for c in chunks]
    _feed(Reassembler(max_buffered_bytes=1 << 20), chunks)
    assert payload == snapshot and chunks == copies


def _declaring(size: int, message_id: str) -> Chunk:
    """A hostile first chunk: 100 bytes that declare ``size``."""
    return Chunk(message_id=message_id, index=0, count=2, total_size=size, sha256="0" * 64, data=b"x" * 100)


def test_a_huge_declaration_spends_only_its_senders_budget() -> None:
    budget = 4 * 1024**3
    reassembler = Reassembler(max_buffered_bytes=64 << 20, max_sender_bytes=budget, max_payload_bytes=budget)
    assert (
        reassembler.add(
            _declaring(budget, "evil"), topic=TOPIC, partition=0, offset=0, timestamp_ms=0, sender="mallory"
        )
        is None
    )
    assert reassembler.sender_reserved("mallory") == budget and reassembler.held_bytes == 100
    # The same sender cannot declare more while that set is open ...
    with pytest.raises(ChunkSetError, match="budget of sender 'mallory'") as info:
        reassembler.add(
            _declaring(1000, "evil-2"), topic=TOPIC, partition=0, offset=1, timestamp_ms=0, sender="mallory"
        )
    assert info.value.reason == "chunk-oversized"
    # ... while every honest sender's chunked update still gets through.
    for offset, sender in enumerate(["digits-retail", "digits-support", "digits-logistics"], start=2):
        payload = os.urandom(5000)
        chunks = split_payload(payload, chunk_size=1000, message_id=f"honest-{sender}")
        results = [
            reassembler.add(
                c, topic=TOPIC, partition=0, offset=offset * 10 + i, timestamp_ms=1, sender=sender
            )
            for i, c in enumerate(chunks)
        ]
        assert results[-1] is not None and results[-1].payload == payload
    assert reassembler.held_bytes == 100 and reassembler.pending_sets == 1


def test_bytes_held_are_bounded_whoever_declares_them() -> None:
    reassembler = Reassembler(max_buffered_bytes=2500, max_sender_bytes=10_000, max_payload_bytes=10_000)
    chunks = split_payload(os.urandom(4000), chunk_size=1000, message_id="big")
    _feed(reassembler, chunks[:2])
    with pytest.raises(ChunkSetError, match="memory full") as info:
        _feed(reassembler, chunks[2:3], first_offset=2)
    assert info.value.reason == "chunk-oversized"
    assert reassembler.held_bytes == 0 and reassembler.reserved_bytes == 0


def test_open_sets_are_bounded() -> None:
    reassembler = Reassembler(max_buffered_bytes=1 << 20, max_pending_sets=2)
    for i in range(2):
        reassembler.add(
            _declaring(1000, f"s{i}"), topic=TOPIC, partition=0, offset=i, timestamp_ms=0, sender=str(i)
        )
    with pytest.raises(ChunkSetError, match="already open"):
        reassembler.add(
            _declaring(1000, "s3"), topic=TOPIC, partition=0, offset=3, timestamp_ms=0, sender="3"
        )


def _resident_mib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20


def test_declared_sizes_cost_no_memory_until_sent() -> None:
    # Senders are named by the record, not yet verified: many names each declaring the payload limit
    # with one small chunk must not commit their declared sizes (a zero-filled buffer would).
    size = 64 << 20
    reassembler = Reassembler(max_buffered_bytes=1 << 20, max_payload_bytes=size)
    before = _resident_mib()
    for i in range(8):
        reassembler.add(
            _declaring(size, f"claim-{i}"), topic=TOPIC, partition=0, offset=i, timestamp_ms=0, sender=f"s{i}"
        )
    assert reassembler.held_bytes == 800 and reassembler.reserved_bytes == 8 * size
    assert _resident_mib() - before < 64


def test_a_declared_size_the_host_cannot_map_rejects_the_set() -> None:
    # a payload limit set above what the host can map: the set is rejected, the reader goes on
    reassembler = Reassembler(max_buffered_bytes=1 << 20, max_payload_bytes=1 << 50)
    with pytest.raises(ChunkSetError, match="cannot map") as info:
        reassembler.add(_declaring(1 << 50, "petabyte"), topic=TOPIC, partition=0, offset=0, timestamp_ms=0)
    assert info.value.reason == "chunk-oversized"
    assert reassembler.pending_sets == 0 and reassembler.held_bytes == 0 and reassembler.reserved_bytes == 0
