"""The pure math of the aggregation strategies, one function a rule (as Flower's ``strategy/aggregate.py``).

Functions here take the tensors of one named parameter across updates (all of one shape, in the canonical
order the strategy sorted them into) and return float64 tensors; strategies cast back to the global dtype
with :func:`cast_like`. None of them mutates its inputs, except :func:`fold_scaled_`, the hot-path kernel,
which writes only into the float64 accumulator it is given (its trailing underscore says so).

Reproducibility: every reduction has a fixed order. Sums over updates run in the given order; sums over the
sorted values of a coordinate run in ascending value order; weights are totalled with ``math.fsum``
(correctly rounded, so order-free). Only IEEE-754 basic operations (+, -, *, /, sqrt) are used on the
values, each as a separate kernel, so no fused multiply-add can change a result between CPUs (the weighted
folds use one multiply-and-add kernel only where the product is exact, which no FMA can change). Zeros leave
the coordinate-wise statistics as +0.0, so the sign of a zero never depends on how a sort broke a tie
between -0.0 and +0.0. The one exception is :func:`pairwise_squared_distances`, which uses a float64 GEMM:
Krum and Bulyan only compare its output to select updates, so it affects a result only through a tie
within a few ulps, and ties are broken by the canonical order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from governance.strategies.base import TooFewUpdates

FOLD_CHUNK = 1 << 18
"""Elements converted to float64 per step of :func:`fold_scaled_`: the scratch stays in cache."""

SORT_BLOCK = 1 << 13
"""Coordinates per block in the sort-based statistics (the (block, n) slab stays in L2/L3)."""

TILE = 1 << 16
"""float64 elements per tile of :func:`fold_tiled_` (512 KiB, with as much scratch: both stay in L2).
Smaller tiles pay Python's per-call cost more often than they gain in cache (measured in
``bench/aggregate.py``)."""

_EXACT_PRODUCT = (torch.float32, torch.float16, torch.bfloat16)
_EXACT_WEIGHT = float(1 << 29)


def exact_product(x: torch.Tensor, weight: float) -> bool:
    """Whether ``weight * x`` is exact in float64: an integer weight below 2**29 times a value of at
    most 24 significant bits fits float64's 53. Then ``acc + weight * x`` has one rounding however it
    is evaluated (a fused multiply-add or not), so one ``add_(alpha=)`` kernel gives the same bits as a
    multiply then an add on every CPU."""
    return x.dtype in _EXACT_PRODUCT and float(weight).is_integer() and abs(weight) < _EXACT_WEIGHT


def _fold_step_(tile: torch.Tensor, tmp: torch.Tensor, weight: float, fused: bool) -> None:
    """``tile += weight * tmp`` (``tmp`` float64 scratch, clobbered): one kernel when exact, else two."""
    if weight == 1.0:
        tile.add_(tmp)
    elif fused:
        tile.add_(tmp, alpha=weight)
    else:
        tile.add_(tmp.mul_(weight))


DISTANCE_BLOCK = 1 << 14
"""Coordinates per block when accumulating the Gram matrix of :func:`pairwise_squared_distances`."""

_SORT_AS_FLOAT32 = (torch.float16, torch.bfloat16, torch.float32)


def fold_scaled_(
    acc: torch.Tensor, x: torch.Tensor, weight: float, scratch: torch.Tensor | None = None
) -> None:
    """``acc += weight * x`` with ``acc`` float64 and contiguous; ``x`` (any real dtype) is only read.

    ``x`` is converted chunk by chunk into a cache-resident float64 scratch, scaled and added (one
    ``add_(alpha=)`` kernel when the product is exact, see :func:`exact_product`): 20 bytes of
    memory traffic per element (read x, read and write acc). A mixed-dtype ``acc.add_(x, alpha=w)`` is ~20x
    slower on CPU (TensorIterator casts element by element) and ``acc.add_(x.double(), alpha=w)`` allocates
    and writes a full float64 copy. For float32/float16/bfloat16 ``x`` and an integer ``weight`` below
    2**29, ``weight * x`` is exact in float64, so the only rounding is that of the sum.
    """
    flat_acc = acc.view(-1)
    flat_x = x.reshape(-1)
    total = flat_acc.numel()
    if flat_x.numel() != total:
        raise ValueError(f"cannot fold {flat_x.numel()} elements into an accumulator of {total}")
    size = min(total, FOLD_CHUNK)
    if scratch is None or scratch.numel() < size:
        scratch = torch.empty(size, dtype=torch.float64)
    fused = exact_product(x, weight)
    if total <= FOLD_CHUNK:  # one step, the loop's operations without its slices
        tmp = scratch[:total]
        tmp.copy_(flat_x)
        _fold_step_(flat_acc, tmp, weight, fused)
        return
    for start in range(0, total, FOLD_CHUNK):
        stop = min(total, start + FOLD_CHUNK)
        tmp = scratch[: stop - start]
        tmp.copy_(flat_x[start:stop])
        _fold_step_(flat_acc[start:stop], tmp, weight, fused)


def fold_tiled_(
    acc: torch.Tensor, xs: Sequence[torch.Tensor], weights: Sequence[float], scratch: torch.Tensor
) -> None:
    """``acc += sum_i weights[i] * xs[i]``, folded in list order: the same bits as calling
    :func:`fold_scaled_` for each ``x`` in turn, with ``acc`` walked in cache-sized tiles.

    Per tile of ``acc`` (``TILE`` float64, 128 KiB) every ``x`` is converted into ``scratch``, scaled and
    added while the tile stays in L2, so the float64 sums are read and written once per tile rather than
    once per update: the memory traffic per element and update drops from 20 bytes to about the 4 of
    reading a float32 ``x``. float32/float64 updates go through one fused kernel instead
    (:mod:`governance.strategies.fused_fold`: torch's two kernels per tile and update do not scale
    with threads); the loop here serves the other dtypes.
    """
    flat_acc = acc.view(-1)
    total = flat_acc.numel()
    flats = [x.reshape(-1) for x in xs]
    if any(flat.numel() != total for flat in flats):
        raise ValueError(f"cannot fold tensors of another size into an accumulator of {total}")
    from governance.strategies.fused_fold import fold_fused_  # numba: imported on first use only

    if fold_fused_(flat_acc, flats, weights):  # one fused kernel, parallel over tiles: same bits
        return
    steps = [(flat, weight, exact_product(flat, weight)) for flat, weight in zip(flats, weights, strict=True)]
    for start in range(0, total, TILE):
        stop = min(total, start + TILE)
        tile = flat_acc[start:stop]
        tmp = scratch[: stop - start]
        for flat, weight, fused in steps:
            tmp.copy_(flat[start:stop])
            _fold_step_(tile, tmp, weight, fused)


def cast_like(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast a float64 result to ``dtype``: round to nearest for floats, to the nearest integer otherwise."""
    if dtype.is_floating_point:
        return values.to(dtype)
    if dtype.is_complex:
        raise ValueError(f"complex tensors are not supported ({dtype})")
    return torch.round(values).to(dtype)


ServerStep = Callable[[str, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""``(name, current_f64, mean_f64) -> (new_f64, state entries)``: one server-optimizer step on a tensor."""


def apply_server_step(
    global_weights: Mapping[str, torch.Tensor], means: dict[str, torch.Tensor], step: ServerStep
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Run ``step`` on every floating tensor (in float64) and cast back; integer buffers take the mean.

    Shared by the server optimizers (FedAvgM, the FedOpt family), which differ only in ``step``.
    ``means`` (float64 FedAvg means, owned by the caller) is consumed.
    """
    weights: dict[str, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    for name, reference in global_weights.items():
        mean = means.pop(name)
        if not reference.dtype.is_floating_point:
            weights[name] = cast_like(mean, reference.dtype)
            continue
        new, entries = step(name, reference.to(torch.float64, copy=True), mean)  # never alias the input
        weights[name] = cast_like(new, reference.dtype)
        state.update(entries)
    return weights, state


def weighted_mean(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``sum_i w_i x_i / sum_i w_i`` in float64, summed in the given order (McMahan et al. 2017)."""
    _check_same_shape(tensors)
    if len(weights) != len(tensors) or any(not w > 0 for w in weights):
        raise ValueError("weighted_mean needs one positive weight per tensor")
    acc = torch.zeros(tensors[0].shape, dtype=torch.float64)
    scratch = torch.empty(min(max(acc.numel(), 1), FOLD_CHUNK), dtype=torch.float64)
    for tensor, weight in zip(tensors, weights, strict=True):
        fold_scaled_(acc, tensor, float(weight), scratch)
    return acc.div_(math.fsum(weights))


def coordinate_median(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Coordinate-wise median in float64; the mean of the two middle values for an even count.

    Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
    https://arxiv.org/abs/1803.01498.
    """
    n = _check_same_shape(tensors)

    def reduce(values: np.ndarray) -> np.ndarray:
        lower = values[:, (n - 1) // 2].astype(np.float64)
        if n % 2:
            return lower
        return (lower + values[:, n // 2]) * 0.5

    return _coordinate_wise(tensors, reduce)


def trimmed_mean(tensors: Sequence[torch.Tensor], *, num_trim: int) -> torch.Tensor:
    """Coordinate-wise mean after dropping the ``num_trim`` largest and smallest values (Yin et al. 2018)."""
    n = _check_same_shape(tensors)
    if num_trim < 0 or n - 2 * num_trim < 1:
        raise TooFewUpdates(f"cannot trim {num_trim} values at each end of {n}")
    return _coordinate_wise(tensors, lambda values: _ordered_mean(values, num_trim, n - num_trim))


def mean_around_median(tensors: Sequence[torch.Tensor], *, num_kept: int) -> torch.Tensor:
    """Coordinate-wise mean of the ``num_kept`` values closest to the median (Bulyan's second step).

    El Mhamdi et al. 2018, "The Hidden Vulnerability of Distributed Learning in Byzantium",
    https://arxiv.org/abs/1802.07927. Ties in distance keep the smaller value. In sorted order the kept
    values form a window ``[s, s + k)``; sliding it right by one swaps ``v[s]`` for ``v[s + k]`` and helps
    while ``|v[s + k] - med| < |v[s] - med|``, a predicate that is true then false as ``s`` grows (both
    sides are monotone, and so is their rounding), so ``s`` is the number of positions where it holds.
    """
    n = _check_same_shape(tensors)
    if not 1 <= num_kept <= n:
        raise ValueError(f"cannot keep {num_kept} of {n} values")

    def reduce(values: np.ndarray) -> np.ndarray:
        lower = values[:, (n - 1) // 2].astype(np.float64)
        median = lower if n % 2 else (lower + values[:, n // 2]) * 0.5
        distance = np.abs(values - median[:, None])
        start = np.count_nonzero(distance[:, num_kept:] < distance[:, : n - num_kept], axis=1)
        window = np.take_along_axis(values, start[:, None] + np.arange(num_kept), axis=1)
        return _ordered_mean(window, 0, num_kept)

    return _coordinate_wise(tensors, reduce)


def pairwise_squared_distances(
    vectors: Sequence[Sequence[torch.Tensor]], center: Sequence[torch.Tensor]
) -> torch.Tensor:
    """The (n, n) float64 matrix of squared Euclidean distances between flattened updates.

    ``vectors[i][k]`` is tensor ``k`` of update ``i``. Distances are computed from the Gram matrix of the
    updates minus ``center`` (the global weights): translation does not change distances, and centring keeps
    ``|a|^2 + |b|^2 - 2ab`` free of cancellation when updates sit close to the global model.
    """
    n = len(vectors)
    if n == 0 or any(len(v) != len(center) for v in vectors):
        raise ValueError("every update must have one tensor per center tensor")
    gram = torch.zeros((n, n), dtype=torch.float64)
    block = torch.empty((n, DISTANCE_BLOCK), dtype=torch.float64)
    for k, reference in enumerate(center):
        ref = reference.reshape(-1)
        flats = [v[k].reshape(-1) for v in vectors]
        if any(f.numel() != ref.numel() for f in flats):
            raise ValueError(f"tensor {k} has a different size across updates")
        for start in range(0, ref.numel(), DISTANCE_BLOCK):
            stop = min(ref.numel(), start + DISTANCE_BLOCK)
            rows = block.view(-1)[: n * (stop - start)].view(n, stop - start)  # contiguous, also when short
            for i, flat in enumerate(flats):
                rows[i].copy_(flat[start:stop])
            rows.sub_(ref[start:stop].to(torch.float64))
            _add_gram(gram, rows)
    squares = gram.diagonal()
    distances = squares[:, None] + squares[None, :] - 2.0 * gram
    distances = ((distances + distances.T) * 0.5).clamp_(min=0.0)
    return distances.fill_diagonal_(0.0)


def _add_gram(gram: torch.Tensor, rows: torch.Tensor) -> None:
    """``gram += rows @ rows.T`` without BLAS: a GEMM splits its sums by thread count, and the Krum and
    Bulyan choices must not depend on it (a replay elsewhere must agree). Each dot product is numpy's
    pairwise sum along a row: single-threaded, a fixed order."""
    values = rows.numpy()
    out = gram.numpy()
    for i in range(values.shape[0]):
        dots = np.add.reduce(values[i:] * values[i], axis=1)
        out[i, i:] += dots
        out[i + 1 :, i] += dots[1:]


def krum_scores(distances: torch.Tensor, *, num_byzantine: int) -> list[float]:
    """Krum score of each update: the sum of its ``n - f - 2`` smallest squared distances to the others.

    Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent" (NeurIPS).
    The count is clamped at 0 for the small sets Bulyan's last selections see.
    """
    n = distances.shape[0]
    neighbours = max(n - num_byzantine - 2, 0)
    rows = distances.tolist()
    return [math.fsum(sorted(row[:i] + row[i + 1 :])[:neighbours]) for i, row in enumerate(rows)]


def krum_select(distances: torch.Tensor, *, num_byzantine: int, num_selected: int = 1) -> list[int]:
    """Indices (ascending) of the ``num_selected`` updates with the lowest Krum scores (ties: lower index).

    Krum needs ``n >= 2f + 3`` (Blanchard et al. 2017, Lemma 1).
    """
    n = distances.shape[0]
    if num_byzantine < 0 or n < 2 * num_byzantine + 3:
        raise TooFewUpdates(f"Krum needs n >= 2f + 3 updates, got n={n}, f={num_byzantine}")
    if not 1 <= num_selected <= n:
        raise ValueError(f"cannot select {num_selected} of {n} updates")
    scores = krum_scores(distances, num_byzantine=num_byzantine)
    ranked = sorted(range(n), key=lambda i: (scores[i], i))
    return sorted(ranked[:num_selected])


def bulyan_select(distances: torch.Tensor, *, num_byzantine: int) -> list[int]:
    """Bulyan's first step: apply Krum ``theta = n - 2f`` times, removing each pick; indices ascending.

    Needs ``n >= 4f + 3`` (El Mhamdi et al. 2018). The distance matrix is computed once: Krum on a subset only
    needs the sub-matrix.
    """
    n = distances.shape[0]
    if num_byzantine < 0 or n < 4 * num_byzantine + 3:
        raise TooFewUpdates(f"Bulyan needs n >= 4f + 3 updates, got n={n}, f={num_byzantine}")
    remaining = list(range(n))
    selected: list[int] = []
    for _ in range(n - 2 * num_byzantine):
        index = torch.tensor(remaining)
        scores = krum_scores(distances[index][:, index], num_byzantine=num_byzantine)
        best = min(range(len(remaining)), key=lambda i: (scores[i], i))
        selected.append(remaining.pop(best))
    return sorted(selected)


def _check_same_shape(tensors: Sequence[torch.Tensor]) -> int:
    if not tensors:
        raise ValueError("need at least one tensor")
    shape = tensors[0].shape
    if any(t.shape != shape for t in tensors):
        raise ValueError("tensors differ in shape")
    return len(tensors)


def _coordinate_wise(
    tensors: Sequence[torch.Tensor], reduce: Callable[[np.ndarray], np.ndarray]
) -> torch.Tensor:
    """Apply ``reduce`` to the values of each coordinate sorted ascending, block by block, in float64."""
    out = torch.empty(tensors[0].shape, dtype=torch.float64)
    flat_out = out.view(-1).numpy()
    for start, stop, values in _sorted_blocks(tensors):
        flat_out[start:stop] = reduce(values)
    np.add(flat_out, 0.0, out=flat_out)  # -0.0 + 0.0 == +0.0: zero signs never depend on a sort's tie order
    return out


def _sorted_blocks(tensors: Sequence[torch.Tensor]) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, values)`` with ``values[c]`` the sorted values of coordinate ``start + c``.

    Sorting a (block, n) slab along its rows uses numpy's SIMD sort (x86-simd-sort), ~4x faster here than
    ``torch.sort`` or ``torch.median`` and ~8x faster than ``np.median`` over the update axis.
    """
    work = torch.float32 if tensors[0].dtype in _SORT_AS_FLOAT32 else torch.float64
    flats = [t.reshape(-1) for t in tensors]
    total = flats[0].numel()
    for start in range(0, total, SORT_BLOCK):
        stop = min(total, start + SORT_BLOCK)
        slab = torch.stack([f[start:stop] for f in flats], dim=1).to(work)
        yield start, stop, np.sort(slab.numpy(), axis=1)


def _ordered_mean(values: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Mean of columns ``lo:hi`` of ``values``, summed in float64 left to right (a fixed order)."""
    acc = values[:, lo].astype(np.float64)
    for k in range(lo + 1, hi):
        acc += values[:, k]
    acc /= hi - lo
    return acc
