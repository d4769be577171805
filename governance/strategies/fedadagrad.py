"""FedAdagrad [Reddi et al., 2021]: Adagrad as the server optimizer, https://arxiv.org/abs/2003.00295."""

from __future__ import annotations

import torch

from governance.strategies.fedopt import FedOpt


class FedAdagrad(FedOpt):
    """``v = v_prev + delta ** 2`` (Algorithm 2); ``beta_2`` is unused and ``beta_1`` defaults to 0."""

    name = "fedadagrad"

    def __init__(
        self,
        *,
        eta: float = 1e-1,
        eta_l: float = 1e-1,
        beta_1: float = 0.0,
        beta_2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        super().__init__(eta=eta, eta_l=eta_l, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def second_moment(self, previous: torch.Tensor, delta_squared: torch.Tensor) -> torch.Tensor:
        return torch.add(previous, delta_squared)
