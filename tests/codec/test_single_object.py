from __future__ import annotations

import io
import struct
from collections.abc import Callable

import pytest
import torch
from fastavro import schemaless_reader

from meshfl.codec import SchemaStore, SingleObjectCodec
from meshfl.errors import CodecError, UnknownSchemaError
from meshfl.events import Chunk, Event, ModelUpdate, Tensor, TensorDType
from meshfl.tensors import from_wire

from .conftest import WHEN, mlp_state, sample_events


def test_round_trip(store: SchemaStore, event: Event) -> None:
    codec = SingleObjectCodec(store)
    payload = codec.encode(event)
    decoded = codec.decode(payload)
    assert type(decoded) is type(event)
    assert decoded == event
    assert codec.decode(memoryview(payload)) == event
    assert codec.decode_as(payload, type(event)) == event


def test_frame_is_marker_fingerprint_then_plain_avro_body(store: SchemaStore, event: Event) -> None:
    payload = SingleObjectCodec(store).encode(event)
    schema = store.current(event.AVRO_NAME)
    assert payload[:2] == b"\xc3\x01"
    assert payload[2:10] == struct.pack("<Q", int(schema.fingerprint_hex, 16))
    body = io.BytesIO(payload[10:])
    datum = schemaless_reader(body, schema.parsed, None)  # any Avro reader can read the body alone
    assert body.tell() == len(payload) - 10
    assert type(event).from_avro(datum) == event


def test_model_update_tensors_survive_the_full_path(store: SchemaStore) -> None:
    codec = SingleObjectCodec(store)
    state = mlp_state(seed=3)
    update = next(e for e in sample_events() if isinstance(e, ModelUpdate))
    decoded = codec.decode_as(codec.encode(update.model_copy(update={"signature": None})), ModelUpdate)
    assert decoded.signature is None
    restored = from_wire(decoded.tensors)
    assert restored.keys() == mlp_state().keys()
    assert all(torch.equal(restored[name], mlp_state()[name]) for name in restored)
    assert not all(torch.equal(restored[name], state[name]) for name in restored)
    assert decoded.created_at == WHEN


def test_nan_passes_the_codec(store: SchemaStore) -> None:
    codec = SingleObjectCodec(store)
    update = ModelUpdate(
        update_id="u",
        task_id="t",
        round=0,
        base_version=0,
        domain="d",
        num_examples=1,
        metrics={"loss": float("nan")},
        tensors=[
            Tensor(name="w", dtype=TensorDType.FLOAT32, shape=[1], data=struct.pack("<f", float("nan")))
        ],
    )
    decoded = codec.decode_as(codec.encode(update), ModelUpdate)
    assert decoded.metrics["loss"] != decoded.metrics["loss"]
    assert torch.isnan(from_wire(decoded.tensors)["w"]).all()


def _chunk_payload(store: SchemaStore) -> bytes:
    chunk = Chunk(message_id="m", index=0, count=1, total_size=4, sha256="00" * 32, data=b"abcd")
    return SingleObjectCodec(store).encode(chunk)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda p: b"\xc3\x02" + p[2:], CodecError, "marker"),
        (lambda p: b"", CodecError, "marker"),
        (lambda p: p[:6], CodecError, "truncated single-object header"),
        (lambda p: p[:-1], CodecError, "corrupt"),
        (lambda p: p[:12], CodecError, "corrupt"),
        (lambda p: p + b"\x00", CodecError, "trailing"),
        (lambda p: p[:2] + bytes(8) + p[10:], UnknownSchemaError, "0000000000000000"),
        (lambda p: p[:10] + b"\x03" + p[11:], CodecError, "corrupt"),  # negative string length
        (lambda p: b"\x00\x00\x00\x00\x01" + p[10:], UnknownSchemaError, "schema_registry_url"),
    ],
    ids=[
        "bad-marker",
        "empty",
        "short-header",
        "truncated",
        "truncated-early",
        "trailing",
        "unknown",
        "neg",
        "sr",
    ],
)
def test_corrupt_input_raises_codec_errors(
    store: SchemaStore, mutate: Callable[[bytes], bytes], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        SingleObjectCodec(store).decode(mutate(_chunk_payload(store)))


def test_invalid_values_are_codec_errors(store: SchemaStore) -> None:
    payload = bytearray(_chunk_payload(store))
    payload[10 + 2] = 0x01  # index, right after message_id "m": zig-zag 1 = -1, which the event model rejects
    with pytest.raises(CodecError, match="violates the event model"):
        SingleObjectCodec(store).decode(bytes(payload))


def test_decode_as_checks_the_type(store: SchemaStore) -> None:
    with pytest.raises(CodecError, match="expected a ModelUpdate, got a Chunk"):
        SingleObjectCodec(store).decode_as(_chunk_payload(store), ModelUpdate)
