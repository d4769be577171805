"""The in-order float64 fold of many in-memory updates as one fused kernel, parallel over tiles (numba).

Why a compiled kernel: torch has no kernel that reads K tensors at once, so the tiled torch fold
(:func:`governance.strategies.aggregate.fold_tiled_`) issues, per tile and update, a float32 to float64
copy and an add. Each is a full pass over a 512 KiB tile in L2, and with 2 intra-op threads each is
split over both cores behind a barrier: it reached 0.42-0.56x the float32 ``add_`` limit of
``bench/aggregate.py`` at 2 threads (0.86x at 1). Here one loop converts, scales and adds an update's
slice of a tile into a tile-local float64 buffer (``FUSED_TILE`` elements, in L2), the tile is written
back once, and whole tiles are spread over the threads (``prange``), so no barrier falls inside a tile:
0.92x the float32 limit at 2 threads and 1.2x at 1 (20 x 10M float32, load 5-13, see the README row).

Bits. Per element the kernel evaluates ``acc = acc + w_i * float64(x_i)`` for ``i`` in list order, the
very operations of :func:`~governance.strategies.aggregate.fold_scaled_` in the same order: the
conversion is exact, and numba compiles without ``fastmath``, so LLVM neither contracts the multiply
and add into an FMA nor reassociates the sum (the generated AVX code is ``vmulpd`` then ``vaddpd``).
A thread owns a whole tile, so the thread count never changes an element's operations. The result is
the sequential fold's bits whatever the weights (tested against it, with ties, subnormals and infinities).

The kernel is compiled on first use (cached on disk by numba; this module is imported only then, so
numba stays off the start-up path) and only for float32/float64 updates; other dtypes take the torch
tile loop, which gives the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import torch
from numba.typed import List

from meshfl.logs import get_logger

log = get_logger("meshfl.governance")

FUSED_TILE = 1 << 14
"""float64 elements per tile (128 KiB): 16K and 32K measured best at 2 threads (0.93x / 0.92x the
float32 limit), 4K-8K lose to the short per-update streams from memory."""

FUSED_DTYPES = (torch.float32, torch.float64)
"""Update dtypes the kernel is compiled for (numba has no bfloat16, and float16 is rare here)."""

# tbb or omp: both take launches from several Python threads at once (workqueue would abort the process)
numba.config.THREADING_LAYER = "threadsafe"
_usable = True


@numba.njit(parallel=True, nogil=True, cache=True)
def _fold(acc: np.ndarray, xs: List, weights: np.ndarray, tile: int) -> None:
    total = acc.shape[0]
    for t in numba.prange((total + tile - 1) // tile):
        start = t * tile
        stop = min(total, start + tile)
        buf = acc[start:stop].copy()
        for i in range(len(xs)):
            x = xs[i][start:stop]
            w = weights[i]
            for j in range(stop - start):
                buf[j] = buf[j] + w * np.float64(x[j])
        acc[start:stop] = buf


def fold_fused_(acc: torch.Tensor, flats: Sequence[torch.Tensor], weights: Sequence[float]) -> bool:
    """``acc += sum_i weights[i] * flats[i]`` in list order with the fused kernel; ``False`` (and
    ``acc`` untouched) when the kernel does not apply, so the caller folds another way.

    ``acc`` is a contiguous 1-D float64 tensor, ``flats`` 1-D tensors of its size. The kernel uses as
    many threads as torch's intra-op setting (``torch.get_num_threads()``, governance's ``--threads``).
    """
    dtype = flats[0].dtype if flats else None
    if dtype not in FUSED_DTYPES or any(x.dtype != dtype or not x.is_contiguous() for x in flats):
        return False
    if acc.dtype != torch.float64 or not acc.is_contiguous() or acc.numel() == 0:
        return False
    global _usable
    if not _usable:
        return False
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    xs = List([x.detach().numpy() for x in flats])  # the first List in a process compiles (~1.5 s)
    try:
        _fold(acc.detach().numpy(), xs, np.asarray(weights, dtype=np.float64), FUSED_TILE)
    except ValueError as error:  # no thread-safe threading layer here: raised before any write
        _usable = False
        log.warning("fused_fold_unavailable", error=str(error), fallback="torch tile loop")
        return False
    return True
