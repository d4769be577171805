"""FedOpt [Reddi et al., 2021]: adaptive server optimizers on the FedAvg pseudo-gradient.

Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan, "Adaptive Federated Optimization",
ICLR 2021, https://arxiv.org/abs/2003.00295. Algorithm 2, per coordinate:

    delta = FedAvg(updates) - x                    (the paper averages the domains' deltas)
    m = beta_1 * m_prev + (1 - beta_1) * delta     (m_prev = 0 at the first round)
    v = second_moment(v_prev, delta ** 2)          (v_prev = tau ** 2 at the first round)
    x = x + eta * m / (sqrt(v) + tau)

FedAdam, FedYogi and FedAdagrad differ only in ``second_moment``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping

import torch

from governance.strategies.aggregate import apply_server_step
from governance.strategies.base import AggregateResult, Weights, check_state
from governance.strategies.fedavg import FedAvg

FIRST_MOMENT_PREFIX = "m."
SECOND_MOMENT_PREFIX = "v."


class FedOpt(FedAvg):
    """The shared server step of FedAdam, FedYogi and FedAdagrad (not a strategy of its own).

    ``eta`` is the server learning rate, ``eta_l`` the domains' local learning rate (carried with the task
    for the agents, unused on the server), ``beta_1`` / ``beta_2`` the moment decay rates, ``tau`` the
    adaptivity (it bounds the step where ``v`` is small). ``m`` and ``v`` are kept in float64 in the
    state as ``"m.<name>"`` and ``"v.<name>"`` for every floating-point tensor; integer tensors take the
    FedAvg mean.
    Each operation runs as its own IEEE-754 kernel (no fused multiply-add), so a replay reproduces the bits.
    """

    def __init__(
        self,
        *,
        eta: float = 1e-2,
        eta_l: float = 1e-1,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        for label, value in (("eta", eta), ("eta_l", eta_l), ("tau", tau)):
            if not value > 0:
                raise ValueError(f"{label} must be > 0, got {value}")
        for label, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{label} must be in [0, 1), got {value}")
        self.eta = float(eta)
        self.eta_l = float(eta_l)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.tau = float(tau)

    @abstractmethod
    def second_moment(self, previous: torch.Tensor, delta_squared: torch.Tensor) -> torch.Tensor:
        """``v_t`` from ``v_{t-1}`` and ``delta_t ** 2`` (new tensor; inputs untouched)."""

    def server_step(
        self,
        global_weights: Weights,
        means: dict[str, torch.Tensor],
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        floating = [name for name, t in global_weights.items() if t.dtype.is_floating_point]
        expected = {
            prefix + name: global_weights[name].shape
            for name in floating
            for prefix in (FIRST_MOMENT_PREFIX, SECOND_MOMENT_PREFIX)
        }
        previous = check_state(state, expected)

        def step(name: str, current: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, dict]:
            delta = mean.sub_(current)
            if previous is None:
                m_prev = torch.zeros_like(delta)
                v_prev = torch.full_like(delta, self.tau * self.tau)
            else:
                m_prev = previous[FIRST_MOMENT_PREFIX + name]
                v_prev = previous[SECOND_MOMENT_PREFIX + name]
            m = torch.mul(m_prev, self.beta_1).add_(torch.mul(delta, 1.0 - self.beta_1))
            v = self.second_moment(v_prev, torch.mul(delta, delta))
            update = torch.mul(m, self.eta).div_(torch.sqrt(v).add_(self.tau))
            return current.add_(update), {FIRST_MOMENT_PREFIX + name: m, SECOND_MOMENT_PREFIX + name: v}

        weights, new_state = apply_server_step(global_weights, means, step)
        return AggregateResult(weights=weights, state=new_state)
