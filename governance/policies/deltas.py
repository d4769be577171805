"""The update delta (weights - global) and its L2 clipping, shared by the norm bound and DP clipping.

The norm is taken over the concatenation of every floating-point tensor (one vector for the whole model),
as in DP-FedAvg [McMahan et al., 2018, arXiv:1710.06963] and norm-bounding defences against model
replacement [Sun et al., 2019, "Can You Really Backdoor Federated Learning?", arXiv:1911.07963]. Integer
and boolean tensors (counters such as BatchNorm's ``num_batches_tracked``) are not deltas of a gradient
step: they are left out of the norm and passed through unchanged. Arithmetic is done in each tensor's own
dtype (float16 and bfloat16 in float32), one temporary per tensor: these run on every update, and on a
loaded 2-core machine the allocations of float64 copies cost more than the arithmetic. Clipping is
therefore exact up to the tensor dtype's rounding. Inputs are never mutated.

The norm decides whether an update is clipped, and by how much, so a replay on another machine must get
the same bits: it never uses a multi-threaded reduction (torch's ``vector_norm`` splits the sum by
thread count). Squares are summed in float64 blocks of ``NORM_BLOCK`` elements by numpy's pairwise sum
(single-threaded, a fixed order), and the block sums are added with ``math.fsum`` (exactly rounded, so
in any order): the result depends only on the values, not on threads, block scheduling or the machine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

NORM_BLOCK = 1 << 20
"""Elements squared and summed at a time (8 MiB of float64 temporaries)."""


def sum_of_squares(tensor: torch.Tensor) -> float:
    """``sum(x**2)`` in float64, independent of thread count (see the module docstring)."""
    flat = tensor.detach().reshape(-1).cpu().numpy()
    partials = []
    for start in range(0, flat.size, NORM_BLOCK):
        block = flat[start : start + NORM_BLOCK].astype(np.float64)
        partials.append(float(np.add.reduce(np.multiply(block, block, out=block))))
    return math.fsum(partials)


def _float_names(weights: Mapping[str, torch.Tensor]) -> list[str]:
    return sorted(name for name, tensor in weights.items() if tensor.is_floating_point())


def _aligned_global(
    name: str, tensor: torch.Tensor, global_weights: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    base = global_weights.get(name)
    if base is None or tuple(base.shape) != tuple(tensor.shape):
        raise ValueError(f"tensor {name!r} has no global counterpart of shape {tuple(tensor.shape)}")
    return base


def _work_dtype(tensor: torch.Tensor) -> torch.dtype:
    return tensor.dtype if tensor.dtype in (torch.float32, torch.float64) else torch.float32


def _delta(tensor: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    dtype = _work_dtype(tensor)
    return torch.sub(tensor.detach().to(dtype), base.detach().to(device=tensor.device, dtype=dtype))


def delta_l2_norm(weights: Mapping[str, torch.Tensor], global_weights: Mapping[str, torch.Tensor]) -> float:
    """``||weights - global||_2`` over all floating-point tensors taken as one vector."""
    squares = []
    for name in _float_names(weights):
        tensor = weights[name]
        squares.append(sum_of_squares(_delta(tensor, _aligned_global(name, tensor, global_weights))))
    return math.sqrt(math.fsum(squares))


def scale_delta(
    weights: Mapping[str, torch.Tensor], global_weights: Mapping[str, torch.Tensor], factor: float
) -> dict[str, torch.Tensor]:
    """New weights ``global + factor * (weights - global)``; non-float tensors are kept as they are."""
    scaled: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if not tensor.is_floating_point():
            scaled[name] = tensor
            continue
        base = _aligned_global(name, tensor, global_weights)
        delta = _delta(tensor, base)
        work = base.detach().to(device=tensor.device, dtype=delta.dtype)
        scaled[name] = torch.add(work, delta, alpha=factor).to(tensor.dtype)
    return scaled


def clip_delta(
    weights: Mapping[str, torch.Tensor], global_weights: Mapping[str, torch.Tensor], bound: float
) -> tuple[dict[str, torch.Tensor], float]:
    """Scale the delta down so its L2 norm is at most ``bound``; direction is kept.

    Returns the weights to use and the norm before clipping. When the norm is already within the bound
    the returned mapping holds the very same tensors (no copy).
    """
    if not bound > 0:
        raise ValueError(f"clip bound must be > 0, got {bound}")
    norm = delta_l2_norm(weights, global_weights)
    if norm <= bound:
        return dict(weights), norm
    return scale_delta(weights, global_weights, bound / norm), norm
