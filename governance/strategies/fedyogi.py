"""FedYogi [Reddi et al., 2021]: Yogi as the server optimizer, https://arxiv.org/abs/2003.00295."""

from __future__ import annotations

import torch

from governance.strategies.fedopt import FedOpt


class FedYogi(FedOpt):
    """``v = v_prev - (1 - beta_2) * delta ** 2 * sign(v_prev - delta ** 2)`` (Algorithm 2).

    Unlike Adam, ``v`` grows or shrinks by an additive amount, so a single large pseudo-gradient cannot
    shrink the effective learning rate for many rounds (Zaheer et al. 2018).
    """

    name = "fedyogi"

    def __init__(
        self,
        *,
        eta: float = 1e-2,
        eta_l: float = 0.0316,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        super().__init__(eta=eta, eta_l=eta_l, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def second_moment(self, previous: torch.Tensor, delta_squared: torch.Tensor) -> torch.Tensor:
        direction = torch.sign(torch.sub(previous, delta_squared))
        change = torch.mul(delta_squared, 1.0 - self.beta_2).mul_(direction)
        return torch.sub(previous, change)
