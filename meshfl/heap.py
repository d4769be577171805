"""Hand the heap's free pages back to the kernel after a large transient (glibc ``malloc_trim``).

A daemon that moves a 1 GB model in ~1 MB messages frees thousands of chunk-sized blocks; glibc keeps
freed blocks below its mmap threshold (raised up to 32 MiB as large blocks come and go) in its arenas,
so the process's resident memory stays at its high-water mark long after the bytes are gone.
``malloc_trim(0)`` returns every free page of every arena (glibc >= 2.8 releases pages inside the
heap, not only at its top). A no-op where the C library has no ``malloc_trim`` (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

TRIM_AFTER_BYTES = 16 << 20
"""Transients smaller than this are not worth a trim (it walks the free lists of every arena)."""


@functools.cache
def _malloc_trim() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory(transient_bytes: int = TRIM_AFTER_BYTES) -> bool:
    """Return free heap pages to the kernel after ``transient_bytes`` were freed; whether it could."""
    if transient_bytes < TRIM_AFTER_BYTES:
        return False
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
