"""Float64 running sums whose memory the rounded result reuses: the close never holds sums and result.

A round's float64 sums are 2x the float32 model. Rounding them into a separate float32 result would
hold 3x at the close (the sums until their last tensor is cast, the result from its first); for a 1 GB
model that is the difference between 2 and 3 GB above the libraries. So a large sum lives in its own
anonymous mapping (``mmap``, zero pages until written, as ``torch.zeros`` of that size is), and
:func:`round_in_place` writes the rounded values into the front of the same memory, a cache-sized
block at a time, then hands the back half's pages to the kernel (``MADV_DONTNEED``): the result is a
view of the first half, and the peak never rises above the sums.

Writing block ``[a, b)`` of the narrower result to bytes ``[4a, 4b)`` (float32) only touches float64
values already read (``4b <= 8b``): the block is rounded into a scratch first, so the in-place walk
gives each element exactly ``values.to(dtype)``'s rounding (round to nearest even; tested bit for bit).
"""

from __future__ import annotations

import math
import mmap

import torch

from governance.strategies.aggregate import cast_like

MAPPED_MIN = 1 << 20
"""float64 sums of at least this many bytes get their own mapping (smaller ones are not worth a map)."""

ROUND_BLOCK = 1 << 18
"""Elements rounded per step of :func:`round_in_place` (the scratch stays in cache)."""

_NARROW = (torch.float32, torch.float16, torch.bfloat16)


class Float64Sums:
    """Zeroed float64 tensors by name, large ones each in an anonymous mapping of their own."""

    def __init__(self, shapes: dict[str, torch.Size]) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._regions: dict[str, mmap.mmap] = {}
        for name, shape in shapes.items():
            nbytes = 8 * math.prod(shape)
            if nbytes < MAPPED_MIN:
                self.tensors[name] = torch.zeros(shape, dtype=torch.float64)
                continue
            region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)  # anonymous: zero pages until touched
            self._regions[name] = region
            self.tensors[name] = torch.frombuffer(region, dtype=torch.float64).view(shape)

    def pop_rounded(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """Tensor ``name`` rounded to ``dtype`` (``cast_like``'s rounding), reusing its memory when it
        has a mapping of its own; the float64 tensor is gone afterwards."""
        values = self.tensors.pop(name)
        region = self._regions.pop(name, None)
        if region is None or dtype not in _NARROW:
            return cast_like(values, dtype)
        return round_in_place(values, region, dtype)


def round_in_place(values: torch.Tensor, region: mmap.mmap, dtype: torch.dtype) -> torch.Tensor:
    """``values`` (float64, the whole of ``region``) rounded to ``dtype`` into the front of ``region``.

    Returns a ``dtype`` view of ``region`` shaped like ``values``; the float64 values are destroyed and
    the pages behind the result are returned to the kernel. The caller must drop ``values``.
    """
    count = values.numel()
    flat = values.view(-1)
    out = torch.frombuffer(region, dtype=dtype, count=count)
    scratch = torch.empty(min(count, ROUND_BLOCK), dtype=dtype)
    for start in range(0, count, ROUND_BLOCK):
        stop = min(count, start + ROUND_BLOCK)
        block = scratch[: stop - start]
        block.copy_(flat[start:stop])  # reads bytes [8 start, 8 stop), all at or after what is written
        out[start:stop].copy_(block)
    used = count * out.element_size()
    first_free = -(-used // mmap.PAGESIZE) * mmap.PAGESIZE
    if first_free < len(region):
        region.madvise(mmap.MADV_DONTNEED, first_free, len(region) - first_free)
    return out.view(values.shape)
