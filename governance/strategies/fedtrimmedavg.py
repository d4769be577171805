"""FedTrimmedAvg [Yin et al., 2018]: the coordinate-wise beta-trimmed mean of the updates.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
Rates", ICML 2018, https://arxiv.org/abs/1803.01498.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from governance.strategies.aggregate import cast_like, trimmed_mean
from governance.strategies.base import (
    AggregateResult,
    ClientUpdate,
    Strategy,
    Weights,
    check_state,
    sorted_updates,
)


class FedTrimmedAvg(Strategy):
    """Per coordinate, drop the ``floor(beta * n)`` largest and smallest values and average the rest.

    Unweighted, as in the paper. Tolerates up to ``floor(beta * n)`` Byzantine domains; ``beta`` must be in
    ``[0, 0.5)`` (``beta = 0`` is the plain mean).
    """

    name = "fedtrimmedavg"

    def __init__(self, *, beta: float = 0.2) -> None:
        if not 0.0 <= beta < 0.5:
            raise ValueError(f"beta must be in [0, 0.5), got {beta}")
        self.beta = float(beta)

    def num_trim(self, num_updates: int) -> int:
        """Values cut at each end for ``num_updates`` updates (rounded so 0.29 * 100 gives 29, not 28)."""
        return math.floor(round(self.beta * num_updates, 9))

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        global_weights: Weights,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        ordered = sorted_updates(updates, global_weights)
        check_state(state, {})
        cut = self.num_trim(len(ordered))
        weights = {
            name: cast_like(trimmed_mean([u.weights[name] for u in ordered], num_trim=cut), reference.dtype)
            for name, reference in global_weights.items()
        }
        return AggregateResult(weights=weights, state={})
