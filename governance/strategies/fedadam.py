"""FedAdam [Reddi et al., 2021]: Adam as the server optimizer, https://arxiv.org/abs/2003.00295."""

from __future__ import annotations

import torch

from governance.strategies.fedopt import FedOpt


class FedAdam(FedOpt):
    """``v = beta_2 * v_prev + (1 - beta_2) * delta ** 2`` (Algorithm 2, no bias correction)."""

    name = "fedadam"

    def second_moment(self, previous: torch.Tensor, delta_squared: torch.Tensor) -> torch.Tensor:
        return torch.mul(previous, self.beta_2).add_(torch.mul(delta_squared, 1.0 - self.beta_2))
