"""The chunk-set digest: BLAKE3 from writers, SHA-256 sets written before still reassemble, a set
naming no digest, a wrong one or disagreeing ones is refused (no Kafka)."""

from __future__ import annotations

import hashlib
import io
import os
import uuid

import blake3
import pytest
from fastavro import schemaless_writer

from meshfl.bus import ChunkSetError, Reassembler, split_payload
from meshfl.bus._chunking import chunk_overhead, chunk_size_for, iter_chunks
from meshfl.codec import SingleObjectCodec, default_store
from meshfl.events import Chunk

TOPIC = "t.model-updates"
PAYLOAD = os.urandom(3000)


def _feed(chunks: list[Chunk], reassembler: Reassembler | None = None) -> bytes:
    reassembler = reassembler or Reassembler(max_buffered_bytes=1 << 20)
    done = None
    for offset, chunk in enumerate(chunks):
        done = reassembler.add(chunk, topic=TOPIC, partition=0, offset=offset, timestamp_ms=1000)
    assert done is not None
    return bytes(done.payload)


def _legacy(payload: bytes = PAYLOAD, *, sha256: str | None = None) -> list[Chunk]:
    """A set as writers made it before the blake3 field: SHA-256 only."""
    digest = sha256 if sha256 is not None else hashlib.sha256(payload).hexdigest()
    return [
        c.model_copy(update={"blake3": None, "sha256": digest})
        for c in split_payload(payload, chunk_size=1000, message_id="legacy")
    ]


def test_writers_name_blake3_and_the_set_reassembles() -> None:
    chunks = split_payload(PAYLOAD, chunk_size=1000, message_id="m")
    assert {(c.blake3, c.sha256) for c in chunks} == {(blake3.blake3(PAYLOAD).hexdigest(), None)}
    assert _feed(chunks) == PAYLOAD


def test_a_legacy_sha256_set_still_reassembles() -> None:
    assert _feed(_legacy()) == PAYLOAD


def test_a_chunk_framed_with_the_released_v1_schema_decodes_and_reassembles() -> None:
    """Bytes exactly as a v1 writer framed them (released/1 Chunk: sha256 a plain string)."""
    store = default_store()
    (v1,) = [s for s in store.released(Chunk.AVRO_NAME) if s.version == "1"]
    codec = SingleObjectCodec(store)
    decoded = []
    for chunk in _legacy():
        datum = {k: v for k, v in chunk.to_avro().items() if k != "blake3"}
        buffer = io.BytesIO()
        buffer.write(b"\xc3\x01" + v1.fingerprint)
        schemaless_writer(buffer, v1.parsed, {**datum, "data": bytes(chunk.data)})
        decoded.append(codec.decode_as(buffer.getvalue(), Chunk))
    assert all(c.blake3 is None and c.sha256 == hashlib.sha256(PAYLOAD).hexdigest() for c in decoded)
    assert _feed(decoded) == PAYLOAD


def test_a_set_naming_no_digest_is_refused_before_its_bytes_are_held() -> None:
    chunks = [
        c.model_copy(update={"blake3": None})
        for c in split_payload(PAYLOAD, chunk_size=1000, message_id="none")
    ]
    reassembler = Reassembler(max_buffered_bytes=1 << 20)
    with pytest.raises(ChunkSetError, match="names no digest") as info:
        reassembler.add(chunks[0], topic=TOPIC, partition=0, offset=0, timestamp_ms=0)
    assert info.value.reason == "chunk-corrupt"
    assert reassembler.held_bytes == 0 and reassembler.pending_sets == 0
    for wrong in ("", "F" * 64, "0" * 63):  # malformed: never treated as absent
        for field in ("blake3", "sha256"):
            bad = chunks[0].model_copy(update={field: wrong, "message_id": str(uuid.uuid4())})
            with pytest.raises(ChunkSetError, match=f"{field} is not 64 lowercase hex"):
                reassembler.add(bad, topic=TOPIC, partition=0, offset=1, timestamp_ms=0)


@pytest.mark.parametrize("field", ["blake3", "sha256"])
def test_a_wrong_digest_rejects_the_set(field: str) -> None:
    chunks = split_payload(PAYLOAD, chunk_size=1000, message_id="m") if field == "blake3" else _legacy()
    wrong = [c.model_copy(update={field: "0" * 64}) for c in chunks]
    with pytest.raises(ChunkSetError, match=f"{field} of the reassembled payload does not match") as info:
        _feed(wrong)
    assert info.value.reason == "chunk-corrupt"


def test_a_set_naming_both_must_match_both() -> None:
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    both = [
        c.model_copy(update={"sha256": sha})
        for c in split_payload(PAYLOAD, chunk_size=1000, message_id="both")
    ]
    assert _feed(both) == PAYLOAD
    with pytest.raises(ChunkSetError, match="sha256 of the reassembled payload does not match"):
        _feed([c.model_copy(update={"sha256": "0" * 64}) for c in both])  # a right blake3 is not enough


def test_chunks_naming_different_digests_are_corrupt() -> None:
    chunks = split_payload(PAYLOAD, chunk_size=1000, message_id="m")
    legacy = _legacy()
    swapped = [c.model_copy(update={"message_id": "m"}) for c in legacy]
    for mixed in (
        [chunks[0], swapped[1], chunks[2]],  # same payload, its SHA-256 instead of its BLAKE3
        [chunks[0], chunks[1].model_copy(update={"blake3": "a" * 64}), chunks[2]],
        [chunks[0], chunks[1].model_copy(update={"sha256": hashlib.sha256(PAYLOAD).hexdigest()}), chunks[2]],
    ):
        with pytest.raises(ChunkSetError, match="disagrees on count, size or digest"):
            _feed(mixed)


def test_the_chunk_overhead_bounds_the_framed_chunks_writers_send() -> None:
    codec = SingleObjectCodec(default_store())
    message_id = str(uuid.uuid4())
    overhead = chunk_overhead(codec, message_id)
    bare = Chunk(message_id=message_id, index=2**63 - 1, count=2**63 - 1, total_size=2**63 - 1, data=b"")
    assert overhead >= len(codec.encode(bare)) + 64  # the blake3 hex digits are part of it
    limit = 20_000
    size = chunk_size_for(limit, overhead)
    payload = os.urandom(size * 3 + 17)
    framed = [codec.encode(c) for c in iter_chunks(payload, chunk_size=size, message_id=message_id)]
    assert len(framed) == 4 and max(len(f) for f in framed) <= limit
    assert max(len(f) for f in framed) >= limit - 64  # a bound, not a guess twice too large
