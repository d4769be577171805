"""Norm bounding [Sun et al., 2019]: clip every update's delta to a norm bound, then average.

Sun, Kairouz, Suresh, McMahan, "Can You Really Backdoor Federated Learning?", 2019,
https://arxiv.org/abs/1911.07963. A bound that adapts to the round (the median of the deltas' norms)
follows Andrew, Thakkar, McMahan, Ramaswamy, "Differentially Private Learning with Adaptive Clipping",
NeurIPS 2021, https://arxiv.org/abs/1905.03871, with the median as a quantile one domain cannot move
beyond the honest norms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from governance.strategies.aggregate import cast_like, weighted_mean
from governance.strategies.base import (
    AggregateResult,
    ClientUpdate,
    Strategy,
    Weights,
    check_state,
    sorted_updates,
)
from governance.strategies.deltas import clip_scale, clipped_mean_step, distance, float_names, median


def integer_means(updates: Sequence[ClientUpdate], global_weights: Weights) -> dict[str, torch.Tensor]:
    """Non-floating tensors (counters such as ``num_batches_tracked``): their unweighted mean, rounded."""
    return {
        name: cast_like(weighted_mean([u.weights[name] for u in updates], [1.0] * len(updates)), t.dtype)
        for name, t in global_weights.items()
        if not t.dtype.is_floating_point
    }


class NormBound(Strategy):
    """``w = w_g + (1/n) sum_i min(1, M / ||d_i||) d_i`` with ``d_i = w_i - w_g``.

    ``max_norm`` is ``M``; ``0`` (the default) takes the median of the round's delta norms, so an honest
    majority sets the bound whatever scale the model's updates have. Each domain has one vote
    (unweighted, as Krum and the median): a poisoned domain moves the model by at most ``M / n`` per
    round whatever it sends or claims. Integer tensors take the rounded unweighted mean.
    """

    name = "normbound"

    def __init__(self, *, max_norm: float = 0.0) -> None:
        if not max_norm >= 0:
            raise ValueError(f"max_norm must be >= 0 (0: the median norm), got {max_norm}")
        self.max_norm = float(max_norm)

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        global_weights: Weights,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        ordered = sorted_updates(updates, global_weights)
        check_state(state, {})
        names = float_names(global_weights)
        norms = [distance(u.weights, global_weights, names) for u in ordered]
        bound = self.max_norm if self.max_norm > 0 else median(norms)
        scales = [clip_scale(norm, bound) for norm in norms]
        mean = clipped_mean_step([u.weights for u in ordered], global_weights, names, scales)
        weights = integer_means(ordered, global_weights)
        for name in names:
            weights[name] = cast_like(
                mean[name].add_(global_weights[name].to(torch.float64)), global_weights[name].dtype
            )
        return AggregateResult(weights={name: weights[name] for name in global_weights}, state={})
