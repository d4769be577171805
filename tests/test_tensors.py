from __future__ import annotations

import hashlib
import math
import struct

import numpy as np
import pytest
import torch

from meshfl.errors import TensorCodecError
from meshfl.events import Tensor, TensorDType
from meshfl.tensors import from_wire, state_sha256, tensors_sha256, to_wire

ALL_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
]


def _sample(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=generator) * 100).to(dtype)
    if dtype is torch.bool:
        return torch.rand(shape, generator=generator) > 0.5
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=generator, dtype=torch.int64).to(dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 5), (7,), (), (0,), (2, 0, 4), (2, 3, 4, 1)], ids=str)
def test_round_trip_every_dtype_and_shape(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    original = _sample(dtype, shape)
    wire = to_wire({"t": original})
    assert wire[0].shape == list(shape)
    assert len(wire[0].data) == math.prod(shape) * original.element_size()
    back = from_wire(wire)["t"]
    assert back.dtype == dtype
    assert back.shape == original.shape
    assert torch.equal(back, original)


def test_layout_is_little_endian_c_order() -> None:
    original = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).t()  # non-contiguous: must be written in C order
    (wire,) = to_wire({"w": original})
    assert wire.dtype == TensorDType.FLOAT32
    assert wire.data == struct.pack("<4f", 1.0, 3.0, 2.0, 4.0)


def test_bfloat16_travels_as_its_two_byte_pattern_and_bool_as_one_byte() -> None:
    wire = {
        t.name: t
        for t in to_wire(
            {"b": torch.tensor([1.0, -2.0], dtype=torch.bfloat16), "m": torch.tensor([True, False, True])}
        )
    }
    # bfloat16 is the upper half of the float32 pattern: 1.0 = 0x3f80, -2.0 = 0xc000.
    assert wire["b"].data == bytes.fromhex("803f00c0")
    assert wire["m"].data == b"\x01\x00\x01"


def test_to_wire_sorts_by_name_and_does_not_touch_inputs() -> None:
    state = {"z": torch.ones(2, requires_grad=True), "a": torch.zeros(1), "m.b": torch.arange(3)}
    before = {name: tensor.detach().clone() for name, tensor in state.items()}
    wire = to_wire(state)
    assert [t.name for t in wire] == ["a", "m.b", "z"]
    assert all(torch.equal(state[name].detach(), before[name]) for name in state)


def test_from_wire_tensors_are_writable_and_do_not_alias_the_message() -> None:
    (wire,) = to_wire({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)})
    data_before = bytes(wire.data)
    result = from_wire([wire])["w"]
    result.add_(100.0)  # must not raise nor write through into the message bytes
    assert wire.data == data_before
    assert torch.equal(from_wire([wire])["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))


def test_nan_and_inf_pass_the_codec() -> None:
    """Finite-ness is a governance policy, not a layout rule."""
    original = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0])
    back = from_wire(to_wire({"x": original}))["x"]
    assert torch.equal(back.isnan(), original.isnan())
    assert torch.equal(back[1:], original[1:])


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (Tensor(name="x", dtype=TensorDType.FLOAT32, shape=[2, 2], data=b"\x00" * 15), "needs 16"),
        (Tensor(name="x", dtype=TensorDType.FLOAT32, shape=[3], data=b"\x00" * 16), "needs 12"),
        (Tensor(name="x", dtype=TensorDType.INT8, shape=[-1, 2], data=b""), "negative size"),
        (Tensor(name="x", dtype=TensorDType.FLOAT64, shape=[], data=b"\x00" * 4), "needs 8"),
        (Tensor(name="x", dtype=TensorDType.BOOL, shape=[2], data=b"\x01\x02"), "0 or 1"),
        (Tensor.model_construct(name="x", dtype="complex64", shape=[1], data=b"\x00" * 8), "unknown dtype"),
    ],
)
def test_from_wire_rejects_layout_violations(tensor: Tensor, message: str) -> None:
    with pytest.raises(TensorCodecError, match=message):
        from_wire([tensor])


def test_duplicate_names_are_rejected() -> None:
    wire = to_wire({"x": torch.zeros(1)}) * 2
    with pytest.raises(TensorCodecError, match="duplicate"):
        from_wire(wire)
    with pytest.raises(TensorCodecError, match="duplicate"):
        tensors_sha256(wire)


def test_unsupported_inputs_are_rejected() -> None:
    with pytest.raises(TensorCodecError, match="complex64"):
        to_wire({"c": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(TensorCodecError, match=r"not a torch\.Tensor"):
        to_wire({"n": np.zeros(2)})  # type: ignore[dict-item]


def _spec_sha256(tensors: list[Tensor]) -> str:
    """The canonical byte sequence, rebuilt from the documented layout with nothing from meshfl.tensors."""
    u64 = struct.Struct("<Q").pack
    blob = bytearray()
    for tensor in sorted(tensors, key=lambda t: t.name.encode("utf-8")):
        name = tensor.name.encode("utf-8")
        symbol = str(tensor.dtype.value).encode("ascii")
        blob += u64(len(name)) + name + u64(len(symbol)) + symbol + u64(len(tensor.shape))
        blob += b"".join(u64(size) for size in tensor.shape)
        blob += u64(len(tensor.data)) + tensor.data
    return hashlib.sha256(bytes(blob)).hexdigest()


def _fixed_state() -> dict[str, torch.Tensor]:
    return {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4,
        "b": torch.tensor([-1.5, 2.25], dtype=torch.bfloat16),
        "mask": torch.tensor([True, False]),
        "step": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0, 3, dtype=torch.float16),
        "é.unicode": torch.tensor([1, -2], dtype=torch.int8),
    }


def test_sha256_known_vector() -> None:
    """Frozen: a change here changes every ModelVersion hash an auditor has on record."""
    expected = "837b7d98371b29f9bceb230dd4801ef39462d7b372175a304250f3b4c2384aed"
    assert tensors_sha256(to_wire(_fixed_state())) == expected


def test_sha256_matches_the_documented_layout() -> None:
    wire = to_wire(_fixed_state())
    assert tensors_sha256(wire) == _spec_sha256(wire)
    assert tensors_sha256(list(reversed(wire))) == _spec_sha256(wire)


def test_state_sha256_equals_tensors_sha256_of_to_wire() -> None:
    state = _fixed_state()
    state["t"] = torch.randn(4, 5).t()  # non-contiguous input
    assert state_sha256(state) == tensors_sha256(to_wire(state))


def test_sha256_depends_on_every_part() -> None:
    base = tensors_sha256(to_wire({"w": torch.zeros(2, 3)}))
    variants = [
        {"v": torch.zeros(2, 3)},
        {"w": torch.zeros(3, 2)},
        {"w": torch.zeros(6)},
        {"w": torch.zeros(2, 3, dtype=torch.int32)},
        {"w": torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1e-30]])},
    ]
    assert len({base, *(tensors_sha256(to_wire(state)) for state in variants)}) == len(variants) + 1
