"""FedMedian [Yin et al., 2018]: the coordinate-wise median of the updates.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
Rates", ICML 2018, https://arxiv.org/abs/1803.01498.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from governance.strategies.aggregate import cast_like, coordinate_median
from governance.strategies.base import (
    AggregateResult,
    ClientUpdate,
    Strategy,
    Weights,
    check_state,
    sorted_updates,
)


class FedMedian(Strategy):
    """Each coordinate is the median of the domains' values (mean of the two middle ones for an even count).

    Unweighted, as in the paper: a Byzantine domain cannot buy influence by claiming many examples. Any
    minority below half of the domains moves a coordinate no further than the range of the honest values.
    """

    name = "fedmedian"

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        global_weights: Weights,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        ordered = sorted_updates(updates, global_weights)
        check_state(state, {})
        weights = {
            name: cast_like(coordinate_median([u.weights[name] for u in ordered]), reference.dtype)
            for name, reference in global_weights.items()
        }
        return AggregateResult(weights=weights, state={})
