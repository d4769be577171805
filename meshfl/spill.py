"""Large payloads in file-backed memory, read in windows whose pages leave the process after use.

A 1 GB model update reassembled into anonymous memory costs 1 GB of resident memory until it is
decided, and governance also holds the parent version (another 1 GB) for the whole round, beside the
float64 sums (2 GB). Here such bytes live in an unnamed temporary file (``O_TMPFILE``: it has no name,
so a crash leaks nothing; its blocks are freed with its last mapping) mapped read-only and shared:

* the file is filled with ``pwrite`` (``SpillBuffer.write``), never through the mapping, so filling
  it costs no resident memory (the kernel's page cache holds the pages, outside the process);
* a pass over the bytes (a digest, the finite check, the fold) walks them in ``WINDOW_BYTES`` windows
  (``windows``, ``spans``) and drops each window's pages from the process after it
  (``MADV_DONTNEED`` on a shared file mapping unmaps them; the data stay in the file), so a pass costs
  one window of resident memory, whatever the size of the model;
* what is never read (the parent's values during a FedAvg round) is never resident.

Small payloads (below ``MeshflSettings.spill_bytes``) keep anonymous memory: nothing changes for them,
and ``windows``/``spans`` hand out a buffer that is not spilled in one piece. Pages are only ever
dropped from mappings made here (``_REGIONS``, checked on the live map object): ``MADV_DONTNEED`` on
anonymous memory would zero it.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SpillBuffer", "is_spilled", "release", "spans", "spill_tensors", "spilled_bytes", "windows"]

WINDOW_BYTES = 8 << 20
"""Bytes a pass reads before it drops them (its resident cost); large enough that a syscall per
window is noise."""

MAX_OPEN_FILES = 64
"""Spill buffers being filled at once (each holds two descriptors until complete); beyond this a
payload is assembled in anonymous memory, as small ones are."""

_PAGE = mmap.PAGESIZE

_REGIONS: dict[int, tuple[int, weakref.ref[mmap.mmap]]] = {}
"""Base address -> (length, map) of every live spill mapping; an entry leaves with its map."""

_FILLING: weakref.WeakSet[SpillBuffer] = weakref.WeakSet()
"""Buffers not sealed yet (a buffer dropped unsealed leaves by itself; its file closes with it)."""


def _address(buffer: Any) -> int:
    import numpy as np  # here: meshfl.bus is imported by commands that never spill

    view = memoryview(buffer)
    return int(np.frombuffer(view.cast("B"), dtype=np.uint8).ctypes.data) if view.nbytes else 0


def _forget(base: int, ref: weakref.ref[mmap.mmap]) -> None:
    entry = _REGIONS.get(base)
    if entry is not None and entry[1] is ref:  # a newer mapping at the same address stays
        del _REGIONS[base]


class SpillBuffer:
    """``size`` zero bytes in an unnamed temporary file, mapped read-only, filled by ``write``.

    ``view`` is the read-only mapping; it stays valid (and keeps the file's blocks) after ``seal``
    closes the descriptor used for writing, until its last view is gone.
    """

    def __init__(self, size: int, directory: Path | None = None) -> None:
        if size <= 0:
            raise ValueError("a spill buffer holds at least one byte")
        self.size = size
        self._file: Any = None
        file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (sealed explicitly)
        try:
            os.ftruncate(file.fileno(), size)  # sparse: blocks only where written
            self.map = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ)  # shared, read-only
        except BaseException:
            file.close()
            raise
        self._file = file
        base = _address(self.map)
        ref = weakref.ref(self.map)
        _REGIONS[base] = (size, ref)
        weakref.finalize(self.map, _forget, base, ref)
        _FILLING.add(self)

    @staticmethod
    def available() -> bool:
        """Whether another buffer may be opened for filling (``MAX_OPEN_FILES``)."""
        return len(_FILLING) < MAX_OPEN_FILES

    @property
    def view(self) -> memoryview:
        return memoryview(self.map)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """``data`` at ``offset`` through the file (not the mapping: no resident pages)."""
        if self._file is None:
            raise ValueError("the spill buffer is sealed")
        view = memoryview(data).cast("B")
        if offset < 0 or offset + view.nbytes > self.size:
            raise ValueError(f"{view.nbytes} bytes at {offset} do not fit {self.size}")
        fd = self._file.fileno()
        while view.nbytes:
            written = os.pwrite(fd, view, offset)
            if written <= 0:
                raise OSError(errno.ENOSPC, "the spill file takes no more bytes")
            view, offset = view[written:], offset + written

    def seal(self) -> None:
        """Close the writing descriptor (idempotent); the mapping stays."""
        if self._file is not None:
            self._file.close()
            self._file = None
        _FILLING.discard(self)

    def close(self) -> None:
        """Seal, and unmap now if no view is left (else the last view's release unmaps it)."""
        self.seal()
        with contextlib.suppress(BufferError):  # views are left: the last one's release unmaps it
            self.map.close()


def _region(address: int) -> tuple[int, int, mmap.mmap] | None:
    for base, (length, ref) in _REGIONS.copy().items():  # a finalizer may drop one meanwhile
        if base <= address < base + length:
            found = ref()
            if found is not None and not found.closed:
                return base, length, found
    return None


def is_spilled(buffer: Any) -> bool:
    """Whether ``buffer`` (a buffer or a tensor) lies in a spill mapping."""
    if not _REGIONS:
        return False
    address = buffer.data_ptr() if hasattr(buffer, "data_ptr") else _address(buffer)
    return _region(address) is not None


def release(address: int, nbytes: int) -> None:
    """Drop the pages of ``[address, address + nbytes)`` from the process if they are spilled.

    The range is widened to whole pages: a neighbour's page dropped too is simply read again from
    the file. A no-op outside spill mappings.
    """
    found = _region(address)
    if found is None or nbytes <= 0:
        return
    base, length, region = found
    low = (address - base) // _PAGE * _PAGE
    high = min(length, -(-(address - base + nbytes) // _PAGE) * _PAGE)
    if high > low:
        region.madvise(mmap.MADV_DONTNEED, low, high - low)


def windows(data: Any, window: int | None = None) -> Iterator[memoryview]:
    """``data``'s bytes in windows, each released after the caller's step (one piece if not spilled)."""
    view = memoryview(data).cast("B")
    if not view.nbytes or not _REGIONS:  # no spill mapping at all (the common case): no address lookup
        yield view
        return
    address = _address(view)
    if _region(address) is None:
        yield view
        return
    window = window or WINDOW_BYTES
    for start in range(0, view.nbytes, window):
        stop = min(view.nbytes, start + window)
        yield view[start:stop]
        release(address + start, stop - start)


def spans(tensor: Any, window: int | None = None) -> Iterator[tuple[int, int]]:
    """Element ranges ``[start, stop)`` of a contiguous tensor, each released after the caller's step.

    One range covers a tensor that is not spilled (or not contiguous). Element-wise work done range by
    range gives the same bits as done at once.
    """
    count = tensor.numel()
    address = tensor.data_ptr()
    if count == 0 or not tensor.is_contiguous() or _region(address) is None:
        yield 0, count
        return
    size = tensor.element_size()
    step = max(1, (window or WINDOW_BYTES) // size)
    for start in range(0, count, step):
        stop = min(count, start + step)
        yield start, stop
        release(address + start * size, (stop - start) * size)


def spilled_bytes(data: Sequence[Any], directory: Path | None = None) -> list[memoryview]:
    """Buffers copied one after the other into one spill file: read-only views of it, in order.

    Each source is read in windows (its pages released if it is itself spilled); nothing of the copy
    is resident afterwards.
    """
    sizes = [memoryview(item).nbytes for item in data]
    buffer = SpillBuffer(max(1, sum(sizes)), directory)
    try:
        offset = 0
        for item in data:
            for part in windows(item):
                buffer.write(offset, part)
                offset += part.nbytes
    finally:
        buffer.seal()
    whole = buffer.view.toreadonly()
    out: list[memoryview] = []
    offset = 0
    for size in sizes:
        out.append(whole[offset : offset + size])
        offset += size
    return out


def spill_tensors(tensors: Sequence[Any], directory: Path | None = None) -> list[Any]:
    """Wire tensors (``meshfl.events.Tensor``) whose data are copied into one spill file."""
    views = spilled_bytes([tensor.data for tensor in tensors], directory)
    return [tensor.model_copy(update={"data": view}) for tensor, view in zip(tensors, views, strict=True)]
