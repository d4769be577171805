"""FedBuff [Nguyen et al., 2022]: asynchronous buffered aggregation with staleness-weighted updates.

Nguyen, Malik, Zhan, Yousefpour, Rabbat, Malek, Huba, "Federated Learning with Buffered Asynchronous
Aggregation", AISTATS 2022, https://arxiv.org/abs/2106.06639. Staleness weight after Xie, Koyejo, Gupta,
"Asynchronous Federated Optimization" (FedAsync), 2019, https://arxiv.org/abs/1903.03934.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace

import torch

from governance.strategies.accumulator import WeightedSumAccumulator
from governance.strategies.aggregate import cast_like
from governance.strategies.base import AggregateResult, ClientUpdate, Weights, check_state, check_weights
from governance.strategies.fedavg import FedAvg
from governance.strategies.fedavgm import MOMENTUM_PREFIX


def staleness_weight(staleness: int, alpha: float) -> float:
    """FedAsync's polynomial staleness weight ``s(t) = (1 + t) ** -alpha``.

    ``alpha`` 0, 0.5 and 1 use only correctly rounded operations (1, 1/sqrt, 1/x) so they give the same
    bits on every platform; other exponents go through the C library's ``pow``.
    """
    if isinstance(staleness, bool) or not isinstance(staleness, int) or staleness < 0:
        raise ValueError(f"staleness must be an int >= 0, got {staleness!r}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    base = 1.0 + staleness
    if alpha == 0:
        return 1.0
    if alpha == 0.5:
        return 1.0 / math.sqrt(base)
    if alpha == 1:
        return 1.0 / base
    return base**-alpha


class FedBuffAccumulator(WeightedSumAccumulator):
    """FedBuff's running sums: ``sum_i s_i n_i w_i``, and ``sum_i s_i n_i b_i`` when updates carry a base.

    Either every update folded in carries its ``base`` or none does (``ValueError`` otherwise): the mean
    delta is then ``mean(w) - mean(b)`` over the same weights, both summed in float64 in fold order.
    """

    def __init__(self, global_weights: Weights, *, weight_of: Callable[[ClientUpdate], float]) -> None:
        super().__init__(global_weights, weight_of=weight_of)
        self.bases = WeightedSumAccumulator(global_weights, weight_of=weight_of)

    def held_bytes(self) -> int:
        return super().held_bytes() + self.bases.held_bytes()

    def add(self, update: ClientUpdate) -> None:
        if self.count and (update.base is None) != (self.bases.count == 0):
            raise ValueError("either every update of a FedBuff buffer carries its base version or none does")
        if update.base is not None:
            check_weights(update.base, self.spec, what=f"base of update {update.update_id}")
        super().add(update)
        if update.base is not None:
            self.bases.add(replace(update, weights=update.base, base=None))


class FedBuff(FedAvg):
    """``w = w_g + lr * sum_i s_i n_i (w_i - b_i) / sum_i s_i n_i`` with ``s_i = s(staleness_i)``.

    The service aggregates as soon as its buffer holds enough updates, whatever global version each one
    was trained from; older updates count less. ``b_i`` is the version update ``i`` trained from
    (``ClientUpdate.base``), as in Nguyen et al. (Algorithm 1: the server sums the clients' deltas): a
    stale update then brings its own progress and no pull back towards the older version it started
    from. Without bases, ``b_i = w_g`` (the current global weights), which is exact for fresh updates.
    Updates staler than ``max_staleness`` must be rejected by the caller (a governance decision); they
    raise ``ValueError`` here. With ``server_learning_rate = 1`` and no bases the result is the
    ``s_i n_i``-weighted mean itself (and with ``staleness_alpha = 0`` exactly FedAvg).

    ``server_momentum`` ``m > 0`` runs the server step as SGD with momentum on the buffered mean delta
    ``d`` (FedBuff's server optimizer, Nguyen et al. Section 5; FedAvgM, Hsu et al. 2019): ``v = m v + d``,
    ``w = w_g + lr * v``, ``v`` kept in float64 as ``"momentum.<name>"`` for every floating tensor
    (integer tensors take the buffered mean). ``m = 0`` keeps no state and the same bits as before.
    """

    name = "fedbuff"

    def __init__(
        self,
        *,
        server_learning_rate: float = 1.0,
        staleness_alpha: float = 0.5,
        max_staleness: int = 10,
        server_momentum: float = 0.0,
    ) -> None:
        if not server_learning_rate > 0:
            raise ValueError(f"server_learning_rate must be > 0, got {server_learning_rate}")
        if not 0.0 <= server_momentum < 1.0:
            raise ValueError(f"server_momentum must be in [0, 1), got {server_momentum}")
        if not staleness_alpha >= 0:
            raise ValueError(f"staleness_alpha must be >= 0, got {staleness_alpha}")
        if isinstance(max_staleness, bool) or not isinstance(max_staleness, int) or max_staleness < 0:
            raise ValueError(f"max_staleness must be an int >= 0, got {max_staleness!r}")
        self.server_learning_rate = float(server_learning_rate)
        self.staleness_alpha = float(staleness_alpha)
        self.max_staleness = max_staleness
        self.server_momentum = float(server_momentum)

    def update_weight(self, update: ClientUpdate) -> float:
        if update.staleness > self.max_staleness:
            raise ValueError(
                f"update {update.update_id} has staleness {update.staleness}"
                f" > max_staleness {self.max_staleness}"
            )
        return staleness_weight(update.staleness, self.staleness_alpha) * update.num_examples

    def accumulator(self, global_weights: Weights) -> FedBuffAccumulator:
        return FedBuffAccumulator(global_weights, weight_of=self.update_weight)

    def finalize(
        self,
        accumulator: WeightedSumAccumulator,
        global_weights: Weights,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        check_weights(global_weights, accumulator.spec, what="global weights")
        stateful = self.server_momentum > 0
        previous = check_state(
            state,
            {
                MOMENTUM_PREFIX + name: t.shape
                for name, t in global_weights.items()
                if stateful and t.dtype.is_floating_point
            },
        )
        bases = accumulator.bases if isinstance(accumulator, FedBuffAccumulator) else None
        if bases is not None and bases.count == 0:
            bases = None
        if bases is None and self.server_learning_rate == 1.0 and not stateful:
            return AggregateResult(weights=accumulator.result(), state={})
        means = accumulator.mean_float64()
        base_means = bases.mean_float64() if bases is not None else None
        weights: dict[str, torch.Tensor] = {}
        new_state: dict[str, torch.Tensor] = {}
        for name, reference in global_weights.items():
            current = reference.to(torch.float64, copy=True)
            start = base_means.pop(name) if base_means is not None else current
            step = means.pop(name).sub_(start)
            if stateful and reference.dtype.is_floating_point:
                if previous is not None:
                    step = torch.mul(previous[MOMENTUM_PREFIX + name], self.server_momentum).add_(step)
                new_state[MOMENTUM_PREFIX + name] = step.clone()
            weights[name] = cast_like(current.add_(step.mul_(self.server_learning_rate)), reference.dtype)
        return AggregateResult(weights=weights, state=new_state)
