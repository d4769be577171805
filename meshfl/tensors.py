"""The tensor wire layout: a model state as a list of Avro ``Tensor`` records, and its digests.

Layout (the contract every language implements; see ``schemas/types/Tensor.avsc``):

* each tensor is one record ``{name: string, dtype: enum TensorDType, shape: array<long>, data: bytes}``;
* ``data`` is the raw element bytes in C (row-major) order, little-endian, with no header and no padding,
  so ``len(data) == prod(shape) * itemsize(dtype)``; a 0-d tensor has ``shape == []`` and one element, an
  empty tensor has a zero in its shape and no bytes;
* ``bfloat16`` travels as its 2-byte pattern (the upper half of the float32), ``bool`` as one byte, 0 or 1;
* a state is sorted by name and names are unique.

Canonical hash (``tensors_sha256``): SHA-256 over, for each tensor in name order (code point order, which
is also the order of the UTF-8 bytes), with every integer an unsigned 64-bit little-endian number::

    len(name_utf8) name_utf8  len(dtype_symbol) dtype_symbol  ndim shape[0] ... shape[ndim-1]  len(data) data

It depends only on the tensors, never on the Avro encoding, so an auditor in any language recomputes it.
The same byte sequence hashed with BLAKE3 (32-byte output, unkeyed: ``layout_blake3``) is how signature
scheme 2 names a state (``meshfl.identity.canonical``): about four times SHA-256's speed here, and a
signature needs only collision resistance, not the name. SHA-256 stays the version's audit anchor
(``ModelVersion.sha256``), a documented contract that does not change with the signature scheme.

Nothing here unpickles: bytes become tensors through ``numpy.frombuffer`` of a known dtype, never
``torch.load``. By default every byte crosses memory once per direction (``tobytes`` on the way out, one
``copy`` on the way in), so the results own their memory. The hot paths of the daemons pass
``copy=False``: ``to_wire`` then hands out read-only views of the tensors (the codec copies them once,
into the message) and ``from_wire`` returns tensors that view the wire bytes (the decoded message), which
readers use as they are and writers copy first (``load_state_dict`` copies into the model, the
aggregators fold into their own buffers). Such views must never be written in place: torch has no
read-only tensors, and the memory belongs to an immutable message.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import blake3
import numpy as np
import torch

from meshfl.errors import TensorCodecError
from meshfl.events import Tensor, TensorDType
from meshfl.limits import DEFAULT_LIMITS, WireLimits, check_tensor_header, check_wire_tensors
from meshfl.spill import windows

__all__ = ["from_wire", "layout_blake3", "layout_sha256", "state_sha256", "tensors_sha256", "to_wire"]

_BIG_ENDIAN_HOST = sys.byteorder == "big"
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one wire dtype maps to torch, and the numpy "carrier" dtype its bytes are moved with."""

    torch_dtype: torch.dtype
    carrier: np.dtype  # little-endian numpy dtype of the same item size (bfloat16 rides on int16)

    @property
    def itemsize(self) -> int:
        return self.carrier.itemsize


_KINDS: dict[TensorDType, _Kind] = {
    TensorDType.FLOAT32: _Kind(torch.float32, np.dtype("<f4")),
    TensorDType.FLOAT64: _Kind(torch.float64, np.dtype("<f8")),
    TensorDType.FLOAT16: _Kind(torch.float16, np.dtype("<f2")),
    TensorDType.BFLOAT16: _Kind(torch.bfloat16, np.dtype("<i2")),
    TensorDType.INT64: _Kind(torch.int64, np.dtype("<i8")),
    TensorDType.INT32: _Kind(torch.int32, np.dtype("<i4")),
    TensorDType.INT16: _Kind(torch.int16, np.dtype("<i2")),
    TensorDType.INT8: _Kind(torch.int8, np.dtype("i1")),
    TensorDType.UINT8: _Kind(torch.uint8, np.dtype("u1")),
    TensorDType.BOOL: _Kind(torch.bool, np.dtype("u1")),
}
_WIRE_BY_TORCH: dict[torch.dtype, TensorDType] = {kind.torch_dtype: wire for wire, kind in _KINDS.items()}
_CARRIER_TORCH: dict[TensorDType, torch.dtype] = {
    TensorDType.BFLOAT16: torch.int16,
    TensorDType.BOOL: torch.uint8,
}


def _little_endian_array(name: str, tensor: torch.Tensor) -> tuple[TensorDType, np.ndarray]:
    """The tensor's elements as a C-contiguous little-endian numpy array (a view when the host allows)."""
    if not isinstance(tensor, torch.Tensor):
        raise TensorCodecError(f"{name!r} is a {type(tensor).__name__}, not a torch.Tensor")
    wire = _WIRE_BY_TORCH.get(tensor.dtype)
    if wire is None:
        raise TensorCodecError(f"{name!r} has dtype {tensor.dtype}, which the wire layout does not carry")
    if tensor.layout != torch.strided:
        raise TensorCodecError(f"{name!r} is a {tensor.layout} tensor; only dense tensors are carried")
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    carrier = _CARRIER_TORCH.get(wire)
    if carrier is not None:
        flat = flat.view(carrier)
    array = flat.numpy()
    if _BIG_ENDIAN_HOST and array.dtype.itemsize > 1:
        array = array.astype(_KINDS[wire].carrier)
    return wire, array


def _wire_arrays(
    state: Mapping[str, torch.Tensor],
) -> Iterator[tuple[str, TensorDType, list[int], np.ndarray]]:
    for name in sorted(state):
        tensor = state[name]
        wire, array = _little_endian_array(name, tensor)
        yield name, wire, list(tensor.shape), array


def to_wire(state: Mapping[str, torch.Tensor], *, copy: bool = True) -> list[Tensor]:
    """A state dict as wire tensors, sorted by name; the input is untouched.

    With ``copy=False`` the data are read-only views of the tensors' memory (or of a contiguous copy of
    a strided tensor): encode them before the state changes.
    """
    return [
        Tensor(name=name, dtype=wire, shape=shape, data=array.tobytes() if copy else memoryview(array))
        for name, wire, shape, array in _wire_arrays(state)
    ]


def _check(tensor: Tensor, limits: WireLimits = DEFAULT_LIMITS) -> _Kind:
    """Validate one wire tensor against the layout and the bounds; returns its dtype mapping.

    The shape is checked (ndim, each dimension, an element count that cannot overflow) before the
    data length is compared with it, and both before a byte is copied or torch sees the shape.
    """
    try:
        kind = _KINDS[TensorDType(tensor.dtype)]
    except (ValueError, KeyError) as exc:
        raise TensorCodecError(f"tensor {tensor.name!r}: unknown dtype {tensor.dtype!r}") from exc
    elements = check_tensor_header(tensor.name, tensor.shape, limits)
    expected = elements * kind.itemsize
    if len(tensor.data) != expected:
        raise TensorCodecError(
            f"tensor {tensor.name!r}: {len(tensor.data)} bytes, but shape {tensor.shape} of "
            f"{tensor.dtype} needs {expected}"
        )
    return kind


def _check_unique(names: Sequence[str]) -> None:
    if len(set(names)) != len(names):
        duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
        raise TensorCodecError(f"duplicate tensor names: {duplicates}")


def from_wire(
    tensors: Sequence[Tensor],
    *,
    limits: WireLimits = DEFAULT_LIMITS,
    max_elements: int | None = None,
    copy: bool = True,
) -> dict[str, torch.Tensor]:
    """Wire tensors back to a state dict of CPU tensors (validated first, all or nothing).

    ``copy=True``: fresh, writable tensors. ``copy=False``: tensors viewing the wire bytes, to be read
    only (see the module docstring); on a big-endian host they are copies anyway.
    ``max_elements`` is the size of the model the tensors are meant for (``meshfl.limits.spec_elements``):
    a state holding more is refused before anything is allocated.
    """
    check_wire_tensors([(t.name, t.shape) for t in tensors], limits, max_total_elements=max_elements)
    _check_unique([tensor.name for tensor in tensors])
    kinds = [_check(tensor, limits) for tensor in tensors]
    state: dict[str, torch.Tensor] = {}
    # torch warns that a read-only array makes a read-only tensor: by design here (copy=False). One
    # filter for the whole state: set per tensor, it cost more than the conversion (30 of 112 us for
    # a 6-tensor update, bench/scale.py)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for tensor, kind in zip(tensors, kinds, strict=True):
            raw = np.frombuffer(tensor.data, dtype=kind.carrier)
            # astype to the native order both copies and byte-swaps on big-endian hosts; copy() is a memcpy.
            if _BIG_ENDIAN_HOST:
                array = raw.astype(kind.carrier.newbyteorder("="))
            else:
                array = raw.copy() if copy else raw
            if kind.torch_dtype is torch.bool:
                if array.size and int(array.max()) > 1:
                    raise TensorCodecError(f"tensor {tensor.name!r}: bool bytes must be 0 or 1")
                array = array.view(np.bool_)
            result = torch.from_numpy(array)
            if kind.torch_dtype is torch.bfloat16:
                result = result.view(torch.bfloat16)
            state[tensor.name] = result.reshape(tensor.shape)
    return state


def _hash_tensor(
    digest: hashlib._Hash | blake3.blake3, name: str, dtype: TensorDType, shape: Sequence[int], data: object
) -> None:
    encoded_name = name.encode("utf-8")
    symbol = str(dtype.value).encode("ascii")
    header = bytearray()
    header += _U64.pack(len(encoded_name)) + encoded_name
    header += _U64.pack(len(symbol)) + symbol
    header += _U64.pack(len(shape))
    for size in shape:
        header += _U64.pack(size)
    view = memoryview(data).cast("B")  # type: ignore[arg-type]
    header += _U64.pack(view.nbytes)
    digest.update(header)
    for window in windows(view):  # a spilled tensor's pages leave the process as they are hashed
        digest.update(window)


def tensors_sha256(tensors: Sequence[Tensor]) -> str:
    """Hex SHA-256 of the canonical byte sequence in the module docstring (validates the tensors first)."""
    check_wire_tensors([(t.name, t.shape) for t in tensors])
    _check_unique([tensor.name for tensor in tensors])
    digest = hashlib.sha256()
    for tensor in sorted(tensors, key=lambda item: item.name):
        _check(tensor)
        _hash_tensor(digest, tensor.name, TensorDType(tensor.dtype), tensor.shape, tensor.data)
    return digest.hexdigest()


def layout_sha256(tensors: Sequence[Tensor]) -> str:
    """The same bytes as ``tensors_sha256`` hashed without checking the layout first.

    For a valid state it is ``tensors_sha256``; for any other it is still a digest of exactly what was
    sent, so a signature can name a state before anyone judges it (``meshfl.identity``): who sent it
    is checked first, the layout after. Only a number no u64 holds or a name UTF-8 cannot encode has
    no digest (``TensorCodecError``).
    """
    return _layout_digest(tensors, hashlib.sha256())


def layout_blake3(tensors: Sequence[Tensor]) -> str:
    """``layout_sha256``'s byte sequence hashed with BLAKE3-256 (hex): signature scheme 2's state name."""
    return _layout_digest(tensors, blake3.blake3())


def _layout_digest(tensors: Sequence[Tensor], digest: hashlib._Hash | blake3.blake3) -> str:
    try:
        for tensor in sorted(tensors, key=lambda item: item.name):
            _hash_tensor(digest, tensor.name, TensorDType(tensor.dtype), tensor.shape, tensor.data)
    except (struct.error, UnicodeEncodeError, ValueError, TypeError) as exc:
        raise TensorCodecError(f"tensors have no canonical digest: {exc}") from exc
    return digest.hexdigest()


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """``tensors_sha256(to_wire(state))``, hashed straight from the tensors' memory without the byte copy."""
    digest = hashlib.sha256()
    for name, wire, shape, array in _wire_arrays(state):
        _hash_tensor(digest, name, wire, shape, array)
    return digest.hexdigest()
