"""FedAvg [McMahan et al., 2017]: the mean of the domains' weights, weighted by their number of examples.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas, "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017, https://arxiv.org/abs/1602.05629.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from governance.strategies.accumulator import WeightedSumAccumulator
from governance.strategies.aggregate import cast_like
from governance.strategies.base import (
    AggregateResult,
    ClientUpdate,
    Strategy,
    Weights,
    check_state,
    check_weights,
    sorted_updates,
)


class FedAvg(Strategy):
    """Federated Averaging: ``w = sum_i n_i w_i / sum_i n_i``.

    The FedAvg family streams: :meth:`accumulator` gives a running float64 sum that the service feeds as
    updates arrive, and :meth:`finalize` turns it into the result. :meth:`aggregate` is the same two steps
    over a list in canonical order (see :mod:`governance.strategies.accumulator` for what each path
    guarantees bit for bit). Subclasses change the weight of an update (:meth:`update_weight`) or the
    server step (:meth:`server_step`), never the fold. Central DP calls :meth:`server_step` directly on
    the *noised* mean (``governance.rounds``), so a server optimizer only ever sees what is released.
    """

    name = "fedavg"

    def update_weight(self, update: ClientUpdate) -> float:
        """The weight of ``update`` in the mean: its number of examples."""
        return float(update.num_examples)

    def accumulator(self, global_weights: Weights) -> WeightedSumAccumulator:
        """A streaming accumulator for one round over ``global_weights``' names, shapes and dtypes."""
        return WeightedSumAccumulator(global_weights, weight_of=self.update_weight)

    def finalize(
        self,
        accumulator: WeightedSumAccumulator,
        global_weights: Weights,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        """Turn a filled accumulator into the next global weights (consumes the accumulator)."""
        check_weights(global_weights, accumulator.spec, what="global weights")
        if type(self).server_step is FedAvg.server_step:  # adopt the mean: round it in place
            check_state(state, {})
            return AggregateResult(weights=accumulator.result(), state={})
        return self.server_step(global_weights, accumulator.mean_float64(), state)

    def server_step(
        self,
        global_weights: Weights,
        means: dict[str, torch.Tensor],
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        """The next weights and state from ``means``, the float64 mean of the new weights (consumed).

        FedAvg adopts the mean (rounded once to each tensor's dtype); server optimizers override this.
        """
        check_state(state, {})
        weights = {name: cast_like(means.pop(name), ref.dtype) for name, ref in global_weights.items()}
        return AggregateResult(weights=weights, state={})

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        global_weights: Weights,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        ordered = sorted_updates(updates, global_weights)
        accumulator = self.accumulator(global_weights)
        accumulator.add_all(ordered)  # every update is in memory: the tiled fold, same bits as add()
        return self.finalize(accumulator, global_weights, state)
