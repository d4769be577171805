"""Property tests: hostile tensors, events and bytes against the decoders; only meshfl's errors escape.

``nothing but meshfl's own errors escapes`` is the whole property: a decoder may accept or refuse, but
it never raises torch's, numpy's, fastavro's or pydantic's errors (which a daemon would not expect),
never allocates what a shape merely claims, and never hangs.
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshfl.bus import Reassembler, split_payload
from meshfl.bus._reassembly import ChunkSetError
from meshfl.codec import SingleObjectCodec, default_store
from meshfl.errors import CodecError, MeshflError, TensorCodecError
from meshfl.events import Chunk, ModelUpdate, Tensor, TensorDType
from meshfl.limits import DEFAULT_LIMITS, check_datum
from meshfl.tensors import from_wire, tensors_sha256, to_wire
from tests.hostile.hostile_strategies import deep, mutated, nested, wire_tensors

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODEC = SingleObjectCodec(default_store())


def _valid_update() -> bytes:
    state = {"layers.0.weight": torch.randn(4, 3), "layers.0.bias": torch.randn(4)}
    update = ModelUpdate(
        update_id="u",
        task_id="t",
        round=1,
        base_version=0,
        domain="d",
        num_examples=3,
        tensors=to_wire(state),
    )
    return CODEC.encode(update)


VALID = _valid_update()


@PROPERTY
@given(st.lists(wire_tensors(), max_size=4))
def test_from_wire_refuses_hostile_tensors_with_its_own_error(tensors: list[Tensor]) -> None:
    try:
        state = from_wire(tensors)
    except TensorCodecError:
        return
    for tensor, (name, result) in zip(
        sorted(tensors, key=lambda t: t.name), sorted(state.items()), strict=False
    ):
        assert result.numel() * result.element_size() == len(tensor.data) or name != tensor.name


@PROPERTY
@given(st.lists(wire_tensors(), max_size=4))
def test_hashing_refuses_hostile_tensors_with_its_own_error(tensors: list[Tensor]) -> None:
    with contextlib.suppress(TensorCodecError):
        assert len(tensors_sha256(tensors)) == 64


def test_the_numel_overflow_shape_is_refused_before_torch() -> None:
    hostile = Tensor(name="w", dtype=TensorDType.FLOAT32, shape=[2**62, 2**62, 0], data=b"")
    with pytest.raises(TensorCodecError, match="elements"):
        from_wire([hostile])
    with pytest.raises(TensorCodecError, match="model's 12 elements"):
        from_wire(
            [Tensor(name="w", dtype=TensorDType.FLOAT32, shape=[4, 0, 10**6], data=b"")], max_elements=12
        )


@PROPERTY
@given(st.data())
def test_mutated_messages_decode_or_fail_with_codec_errors(data: st.DataObject) -> None:
    payload = data.draw(mutated(VALID))
    try:
        event = CODEC.decode(payload)
    except CodecError:
        return
    if isinstance(event, ModelUpdate):
        with contextlib.suppress(TensorCodecError):
            from_wire(event.tensors)


@PROPERTY
@given(st.binary(max_size=300))
def test_random_bytes_after_a_valid_header_decode_or_fail_with_codec_errors(tail: bytes) -> None:
    try:
        event = CODEC.decode(VALID[:10] + tail)
    except CodecError:
        return
    assert isinstance(event, ModelUpdate)


@pytest.mark.parametrize("count", [2**62, 2**31, 10**9])
def test_huge_declared_counts_do_not_allocate(count: int) -> None:
    """An array or bytes length of billions in a few bytes: a short read, not an allocation."""
    zigzag = count << 1
    varint = bytearray()
    while True:
        byte = zigzag & 0x7F
        zigzag >>= 7
        varint.append(byte | (0x80 if zigzag else 0))
        if not zigzag:
            break
    # update_id "u" (len 1), then the huge length where task_id's length goes
    with pytest.raises(CodecError):
        CODEC.decode(VALID[:10] + b"\x02u" + bytes(varint) + b"abc")


@PROPERTY
@given(nested())
def test_datum_walker_accepts_or_refuses_with_codec_errors(datum: object) -> None:
    with contextlib.suppress(CodecError):
        check_datum(datum)


def test_deep_nesting_long_strings_and_big_maps_are_refused() -> None:
    with pytest.raises(CodecError, match="nested deeper"):
        check_datum(deep(DEFAULT_LIMITS.max_depth + 5))
    with pytest.raises(CodecError, match="string"):
        check_datum({"name": "x" * (DEFAULT_LIMITS.max_string_length + 1)})
    with pytest.raises(CodecError, match="map"):
        check_datum({"metrics": {str(i): 0.0 for i in range(DEFAULT_LIMITS.max_map_entries + 1)}})
    with pytest.raises(CodecError, match="key"):
        check_datum({"metrics": {"k" * (DEFAULT_LIMITS.max_name_length + 1): 0.0}})
    check_datum(deep(DEFAULT_LIMITS.max_depth - 1))


@PROPERTY
@given(
    st.lists(
        st.builds(
            Chunk.model_construct,
            message_id=st.sampled_from(["a", "b"]),
            index=st.integers(min_value=-2, max_value=5),
            count=st.one_of(st.integers(min_value=-1, max_value=5), st.just(2**62)),
            total_size=st.one_of(st.integers(min_value=-1, max_value=4000), st.just(4 * 1024**3)),
            sha256=st.sampled_from(["0" * 64, "zz", ""]),
            data=st.binary(max_size=1500),
        ),
        max_size=12,
    ),
    st.lists(st.sampled_from(["alice", "bob", "mallory"]), min_size=12, max_size=12),
)
def test_reassembly_of_hostile_chunks_raises_only_chunk_set_errors(
    chunks: list[Chunk], senders: list[str]
) -> None:
    reassembler = Reassembler(max_buffered_bytes=8000, max_sender_bytes=6000, max_payload_bytes=5000)
    for offset, (chunk, sender) in enumerate(zip(chunks, senders, strict=False)):
        with contextlib.suppress(ChunkSetError):
            reassembler.add(chunk, topic="t", partition=0, offset=offset, timestamp_ms=offset, sender=sender)
        assert 0 <= reassembler.held_bytes <= 8000
        assert all(reassembler.sender_reserved(s) <= 6000 for s in ("alice", "bob", "mallory"))
    reassembler.expire(10**9)
    assert reassembler.held_bytes == 0 and reassembler.reserved_bytes == 0


def test_honest_chunks_still_reassemble_next_to_hostile_ones() -> None:
    reassembler = Reassembler(max_buffered_bytes=1 << 20, max_sender_bytes=1 << 16)
    hostile = Chunk(message_id="x", index=0, count=2, total_size=1 << 16, sha256="0" * 64, data=b"y" * 100)
    assert (
        reassembler.add(hostile, topic="t", partition=0, offset=0, timestamp_ms=0, sender="mallory") is None
    )
    payload = os.urandom(50_000)
    parts = split_payload(payload, chunk_size=7000, message_id="h")
    results = [
        reassembler.add(c, topic="t", partition=0, offset=1 + i, timestamp_ms=0, sender="alice")
        for i, c in enumerate(parts)
    ]
    assert results[-1] is not None and results[-1].payload == payload


def test_meshfl_error_is_the_only_base() -> None:
    assert issubclass(ChunkSetError, MeshflError) and issubclass(TensorCodecError, MeshflError)
