"""Hypothesis strategies for hostile input: tensors, events and byte mutations an attacker could send."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from meshfl.events import Tensor, TensorDType

EDGE_DIMS = [0, 1, 2, 3, 255, 2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, -1, -(2**63)]
"""Dimensions that break naive code: zero, int32 and int64 edges, negatives."""

DTYPES = [d.value for d in TensorDType]


def dims() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(EDGE_DIMS), st.integers(min_value=-4, max_value=64))


def shapes() -> st.SearchStrategy[list[int]]:
    return st.one_of(
        st.lists(dims(), max_size=6),
        st.lists(st.sampled_from([0, 1, 2]), min_size=30, max_size=70),  # ndim near and past the limits
    )


def names() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=12),
        st.sampled_from(["layers.0.weight", "layers.0.bias"]),
        st.integers(min_value=1_000, max_value=20_000).map(lambda n: "n" * n),  # long names
    )


@st.composite
def wire_tensors(draw: st.DrawFn) -> Tensor:
    """A tensor record as the wire could carry it, bypassing pydantic (so any dtype string or shape)."""
    shape = draw(shapes())
    dtype = draw(st.one_of(st.sampled_from(DTYPES), st.text(max_size=8)))
    honest_size = None
    if all(0 <= d <= 8 for d in shape) and len(shape) <= 4:
        honest_size = int(np.prod(shape, dtype=np.int64)) * (8 if dtype in ("float64", "int64") else 4)
    data = draw(
        st.one_of(
            st.binary(max_size=64),
            st.just(bytes(honest_size or 0)),
            st.just(b"\x02" * (honest_size or 1)),  # bool bytes out of range when dtype is bool
        )
    )
    return Tensor.model_construct(name=draw(names()), dtype=dtype, shape=shape, data=data)


def _values(dtype: torch.dtype) -> st.SearchStrategy[float]:
    if dtype.is_floating_point:
        return st.one_of(
            st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([1e38, -1e38, 0.0])
        )
    if dtype is torch.bool:
        return st.sampled_from([0, 1])
    info = torch.iinfo(dtype)
    return st.integers(min_value=info.min, max_value=info.max)


@st.composite
def torch_tensors(draw: st.DrawFn) -> torch.Tensor:
    """Real tensors of any dtype and small (possibly empty) shape, with NaN, inf and huge values."""
    dtype = draw(
        st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.int8, torch.bool])
    )
    shape = draw(st.lists(st.integers(min_value=0, max_value=4), max_size=3))
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    values = draw(st.lists(_values(dtype), min_size=count, max_size=count))
    return torch.tensor(values, dtype=torch.float64).to(dtype).reshape(shape)


def nested(leaves: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """Deeply nested lists and dicts (what a hostile datum might look like to a walker)."""
    base = leaves or st.one_of(st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=5))
    return st.recursive(
        base,
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
        ),
        max_leaves=60,
    )


def deep(depth: int) -> Any:
    node: Any = "leaf"
    for level in range(depth):
        node = [node] if level % 2 else {"k": node}
    return node


@st.composite
def mutated(draw: st.DrawFn, payload: bytes) -> bytes:
    """``payload`` with a few byte flips, insertions, deletions and a possible truncation."""
    data = bytearray(payload)
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "varint"]))
        at = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(min_value=1, max_value=255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[at : at + draw(st.integers(min_value=1, max_value=4))]
        elif op == "varint":
            # a huge zig-zag varint (an array or bytes length of ~2**62) spliced in
            data[at:at] = b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"
    if draw(st.booleans()):
        data = data[: draw(st.integers(min_value=0, max_value=len(data)))]
    return bytes(data)
