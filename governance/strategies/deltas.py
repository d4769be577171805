"""Pure math on updates as deltas from the global weights: norms, clipping, clipped means, reproducibly.

The delta-based robust rules (norm bounding, centered clipping) compare each update's delta
``w_i - w_global`` with a bound and fold scaled deltas into a float64 sum. Every value that decides a
scale (a norm, a median of norms) is computed in a fixed order from IEEE-754 basic operations only, so
an audit replay on another CPU takes the same decisions and produces the same bits:

- a delta is ``w_i.double() - w_global.double()`` (one correctly rounded subtraction an element);
- a squared norm is a strictly left-to-right float64 sum (``numpy.cumsum`` is a sequential scan, unlike
  ``sum`` or ``dot``, which reassociate with the vector width), tensor by tensor in name order;
- a scale is ``min(1, bound / norm)`` (a correctly rounded division); the folds use separate multiply
  and add kernels (no fused multiply-add).

Deltas are formed one tensor of one update at a time, so memory stays O(model), not O(updates x model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

SCAN_CHUNK = 1 << 16
"""Elements per step of the sequential sum (the carried partial sum is the first element of the next)."""


def float_names(global_weights: Mapping[str, torch.Tensor]) -> list[str]:
    """The floating-point tensors, in the global weights' own order (the order every sum runs in)."""
    return [name for name, t in global_weights.items() if t.dtype.is_floating_point]


def delta(weights: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    """``weights[name] - base[name]`` as a new float64 tensor (neither input is touched)."""
    return torch.sub(weights[name].to(torch.float64), base[name].to(torch.float64))


def sequential_sum(values: torch.Tensor, carry: float = 0.0) -> float:
    """``carry + v_0 + v_1 + ...`` in float64, strictly left to right (the same bits on every CPU)."""
    flat = values.reshape(-1).to(torch.float64).numpy()
    total = float(carry)
    for start in range(0, flat.size, SCAN_CHUNK):
        chunk = np.concatenate(([total], flat[start : start + SCAN_CHUNK]))
        total = float(np.cumsum(chunk)[-1])
    return total


def squared_norm(tensors: Sequence[torch.Tensor]) -> float:
    """``sum_k ||t_k||^2`` over float64 tensors, in the given order, reproducibly."""
    total = 0.0
    for tensor in tensors:
        total = sequential_sum(torch.mul(tensor, tensor), total)
    return total


def distance(
    weights: Mapping[str, torch.Tensor],
    base: Mapping[str, torch.Tensor],
    names: Sequence[str],
    center: Mapping[str, torch.Tensor] | None = None,
) -> float:
    """``||(w - base) - center||_2`` over ``names`` (``center`` a float64 delta; ``None`` for zero)."""
    total = 0.0
    for name in names:
        d = delta(weights, base, name)
        if center is not None:
            d.sub_(center[name])
        total = sequential_sum(d.mul_(d), total)
    return float(np.sqrt(total))


def median(values: Sequence[float]) -> float:
    """The median of a few floats; the mean of the two middle ones for an even count."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def clip_scale(norm: float, bound: float) -> float:
    """The factor that brings a vector of ``norm`` inside the ball of radius ``bound``: ``min(1, b/n)``."""
    if not norm > bound:
        return 1.0
    return bound / norm


def clipped_mean_step(
    updates: Sequence[Mapping[str, torch.Tensor]],
    base: Mapping[str, torch.Tensor],
    names: Sequence[str],
    scales: Sequence[float],
    center: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """``center + (1/n) sum_i scales_i * ((w_i - base) - center)`` per tensor, in float64, in the given order.

    With ``center`` ``None`` (zero) this is the unweighted mean of the scaled deltas.
    """
    if len(scales) != len(updates) or not updates:
        raise ValueError("one scale per update, and at least one update")
    out: dict[str, torch.Tensor] = {}
    for name in names:
        acc = torch.zeros(base[name].shape, dtype=torch.float64)
        for weights, scale in zip(updates, scales, strict=True):
            d = delta(weights, base, name)
            if center is not None:
                d.sub_(center[name])
            if scale != 1.0:
                d.mul_(scale)
            acc.add_(d)
        acc.div_(float(len(updates)))
        if center is not None:
            acc.add_(center[name])
        out[name] = acc
    return out
