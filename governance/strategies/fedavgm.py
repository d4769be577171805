"""FedAvgM [Hsu et al., 2019]: FedAvg with server momentum.

Hsu, Qi, Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
Classification", 2019, https://arxiv.org/abs/1909.06335.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from governance.strategies.aggregate import apply_server_step
from governance.strategies.base import AggregateResult, Weights, check_state
from governance.strategies.fedavg import FedAvg

MOMENTUM_PREFIX = "momentum."


class FedAvgM(FedAvg):
    """Server momentum on the FedAvg pseudo-gradient ``d = w_global - FedAvg(updates)``.

    ``v = server_momentum * v_prev + d`` (``v_prev = 0`` at the first round), then
    ``w = w_global - server_learning_rate * v``. With ``server_momentum = 0`` this is FedAvg with a server
    learning rate and no state. ``v`` is kept in float64 in the state as ``"momentum.<name>"`` for every
    floating-point tensor; integer tensors (e.g. BatchNorm's ``num_batches_tracked``) take the FedAvg mean.
    """

    name = "fedavgm"

    def __init__(self, *, server_learning_rate: float = 1.0, server_momentum: float = 0.0) -> None:
        if not server_learning_rate > 0:
            raise ValueError(f"server_learning_rate must be > 0, got {server_learning_rate}")
        if not 0.0 <= server_momentum < 1.0:
            raise ValueError(f"server_momentum must be in [0, 1), got {server_momentum}")
        self.server_learning_rate = float(server_learning_rate)
        self.server_momentum = float(server_momentum)

    def server_step(
        self,
        global_weights: Weights,
        means: dict[str, torch.Tensor],
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        stateful = self.server_momentum > 0
        expected = {
            MOMENTUM_PREFIX + name: t.shape
            for name, t in global_weights.items()
            if stateful and t.dtype.is_floating_point
        }
        previous = check_state(state, expected)

        def step(name: str, current: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, dict]:
            velocity = torch.sub(current, mean)
            if previous is not None:
                velocity = torch.mul(previous[MOMENTUM_PREFIX + name], self.server_momentum).add_(velocity)
            new = torch.sub(current, torch.mul(velocity, self.server_learning_rate))
            return new, ({MOMENTUM_PREFIX + name: velocity} if stateful else {})

        weights, new_state = apply_server_step(global_weights, means, step)
        return AggregateResult(weights=weights, state=new_state)
