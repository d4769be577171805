"""Large bytes by reference: the same Avro bytes as fastavro, views on decode, corrupt bodies rejected."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
import torch
from fastavro import schemaless_writer

from meshfl.codec import SingleObjectCodec, default_store
from meshfl.codec import _body as body
from meshfl.codec._bulk import BULK_MIN, MESSAGE_MIN, encode_long
from meshfl.codec._single_object import HEADER_SIZE, MARKER
from meshfl.errors import CodecError
from meshfl.events import Chunk, Event, ModelUpdate
from meshfl.tensors import from_wire, to_wire

WHEN = datetime(2026, 3, 14, 9, 26, 53, 589_000, tzinfo=UTC)


def _state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {
        "big.weight": torch.randn(700, 400, generator=generator),  # 1.1 MB: decoded by reference
        "big.bias": torch.randn(100, generator=generator),  # 400 bytes: below BULK_MIN, plain
        "counts": torch.arange(3000, dtype=torch.int64),
        "half": torch.randn(4000, generator=generator).to(torch.bfloat16),
        "mask": torch.ones(5000, dtype=torch.bool),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }


def _update(copy: bool, names: dict[str, str] | None = None) -> ModelUpdate:
    state = {(names or {}).get(k, k): v for k, v in _state().items()}
    return ModelUpdate(
        update_id="u-1", task_id="t", round=3, base_version=2, domain="retail", num_examples=42,
        metrics={"loss": 0.25}, tensors=to_wire(state, copy=copy), created_at=WHEN,
    )  # fmt: skip


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(value) for value in node]
    return bytes(node) if isinstance(node, memoryview) else node


def _fastavro(event: Event) -> bytes:
    schema = default_store().current(event.AVRO_NAME)
    out = io.BytesIO()
    schemaless_writer(out, schema.parsed, _plain(event.to_avro()))
    return MARKER + schema.fingerprint + out.getvalue()


@pytest.fixture
def codec() -> SingleObjectCodec:
    return SingleObjectCodec(default_store())


@pytest.mark.parametrize("copy", [True, False], ids=["owned", "views"])
def test_encoding_is_byte_for_byte_fastavros(codec: SingleObjectCodec, copy: bool) -> None:
    update = _update(copy)
    assert len(_fastavro(update)) >= MESSAGE_MIN
    assert codec.encode(update) == _fastavro(update)


def test_a_chunk_encodes_as_fastavro_does(codec: SingleObjectCodec) -> None:
    chunk = Chunk(message_id="m", index=0, count=1, total_size=9000, sha256="a" * 64, data=b"\x07" * 9000)
    assert codec.encode(chunk) == _fastavro(chunk)


def test_a_sentinel_collision_falls_back_to_the_plain_path(
    codec: SingleObjectCodec, monkeypatch: pytest.MonkeyPatch
) -> None:
    nonce = b"NONCE!!!"
    monkeypatch.setattr(body, "new_nonce", lambda: nonce)
    update = _update(False, names={"scalar": "NONCE!!!" + "x" * 8})  # the nonce in the skeleton
    assert codec.encode(update) == _fastavro(update)


def test_decode_views_the_message(codec: SingleObjectCodec) -> None:
    payload = codec.encode(_update(True))
    assert len(payload) >= MESSAGE_MIN
    decoded = codec.decode_as(payload, ModelUpdate)
    assert decoded == _update(True)
    large = [t for t in decoded.tensors if len(t.data) >= BULK_MIN]
    assert large and all(isinstance(t.data, memoryview) and t.data.readonly for t in large)
    assert all(isinstance(t.data, bytes) for t in decoded.tensors if len(t.data) < BULK_MIN)
    state = from_wire(decoded.tensors, copy=False)
    expected = _state()
    assert all(torch.equal(state[name], expected[name]) for name in expected)
    assert memoryview(payload).obj is large[0].data.obj  # no copy: the message's own memory
    owned = from_wire(decoded.tensors)
    owned["big.weight"].add_(1.0)  # copies are writable and leave the message alone
    assert torch.equal(from_wire(decoded.tensors, copy=False)["big.weight"], expected["big.weight"])


def test_a_message_under_message_min_decodes_whole(codec: SingleObjectCodec) -> None:
    """Below ``MESSAGE_MIN`` fastavro's copy is cheaper than the walk: the same event, owned bytes."""
    small = {"w": torch.randn(300, 300, generator=torch.Generator().manual_seed(5))}  # 360 KB
    update = _update(True).model_copy(update={"tensors": to_wire(small)})
    payload = codec.encode(update)
    assert BULK_MIN < len(payload) < MESSAGE_MIN
    decoded = codec.decode_as(payload, ModelUpdate)
    assert decoded == update
    assert all(isinstance(t.data, bytes) for t in decoded.tensors)
    assert torch.equal(from_wire(decoded.tensors, copy=False)["w"], small["w"])


def test_decode_of_a_memoryview_message(codec: SingleObjectCodec) -> None:
    payload = bytearray(codec.encode(_update(True)))
    assert codec.decode_as(memoryview(payload), ModelUpdate) == _update(True)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p[:-7],  # truncated inside the last field
        lambda p: p + b"\x00",  # trailing byte
        lambda p: p[: HEADER_SIZE + 200],  # cut in the middle of a tensor's data
    ],
    ids=["truncated", "trailing", "cut"],
)
def test_corrupt_bodies_are_codec_errors(codec: SingleObjectCodec, damage: Any) -> None:
    payload = codec.encode(_update(True))
    with pytest.raises(CodecError):
        codec.decode(damage(payload))


@pytest.mark.parametrize("size", [70_000, MESSAGE_MIN + 1000], ids=["whole", "by-reference"])
def test_a_length_beyond_the_message_is_rejected_before_anything_is_read(
    codec: SingleObjectCodec, size: int
) -> None:
    chunk = Chunk(message_id="m", index=0, count=1, total_size=size, sha256="a" * 64, data=b"\0" * size)
    payload = codec.encode(chunk)
    real = encode_long(size)
    at = payload.index(real + b"\0" * 16)
    forged = payload[:at] + encode_long(2**40) + payload[at + len(real) :]
    with pytest.raises(CodecError, match="1099511627776 bytes"):
        codec.decode(forged)
