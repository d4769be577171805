"""Bulyan [El Mhamdi et al., 2018]: Krum-based selection, then a trimmed mean around the median.

El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed Learning in Byzantium", ICML 2018,
https://arxiv.org/abs/1802.07927.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from governance.strategies.aggregate import (
    bulyan_select,
    cast_like,
    mean_around_median,
    pairwise_squared_distances,
)
from governance.strategies.base import (
    AggregateResult,
    ClientUpdate,
    Strategy,
    TooFewUpdates,
    Weights,
    check_state,
    sorted_updates,
)
from meshfl.logs import get_logger

log = get_logger(__name__)


class Bulyan(Strategy):
    """Select ``theta = n - 2f`` updates by repeated Krum, then per coordinate average the
    ``beta = theta - 2f`` values closest to the median of the selected ones.

    Needs ``n >= 4f + 3`` (``num_byzantine`` is ``f``). The selection bounds how far any coordinate of a
    Byzantine update can pull in the L2 sense (Krum), the second step bounds it coordinate by coordinate,
    which defeats attacks hiding a large change in one coordinate of a high-dimensional model.
    """

    name = "bulyan"

    def __init__(self, *, num_byzantine: int = 1) -> None:
        if isinstance(num_byzantine, bool) or not isinstance(num_byzantine, int) or num_byzantine < 0:
            raise ValueError(f"num_byzantine must be an int >= 0, got {num_byzantine!r}")
        self.num_byzantine = num_byzantine

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        global_weights: Weights,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        ordered = sorted_updates(updates, global_weights)
        check_state(state, {})
        f = self.num_byzantine
        if len(ordered) < 4 * f + 3:
            raise TooFewUpdates(f"Bulyan needs n >= 4f + 3 updates, got n={len(ordered)}, f={f}")
        names = list(global_weights)
        distances = pairwise_squared_distances(
            [[u.weights[name] for name in names] for u in ordered], [global_weights[name] for name in names]
        )
        chosen = bulyan_select(distances, num_byzantine=f)
        log.debug("bulyan selected", update_ids=[ordered[i].update_id for i in chosen])
        kept = len(chosen) - 2 * f
        weights = {
            name: cast_like(
                mean_around_median([ordered[i].weights[name] for i in chosen], num_kept=kept),
                global_weights[name].dtype,
            )
            for name in names
        }
        return AggregateResult(weights=weights, state={})
