"""FedProx [Li et al., 2020]: FedAvg on the server, a proximal term in each domain's local objective.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, "Federated Optimization in Heterogeneous Networks", MLSys 2020,
https://arxiv.org/abs/1812.06127.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from governance.strategies.base import Weights
from governance.strategies.fedavg import FedAvg


def proximal_term(
    local_weights: Mapping[str, torch.Tensor], global_weights: Weights, mu: float
) -> torch.Tensor:
    """``mu / 2 * ||w - w_global||^2`` over the tensors of ``local_weights``, differentiable in ``w``.

    The domain agent adds this to its training loss (Li et al. 2020, Eq. 2) so that local steps on skewed
    data cannot drift far from the global model. ``global_weights`` is detached; every floating-point tensor
    named in ``local_weights`` (typically ``model.named_parameters()``) must exist there with the same shape.
    """
    if mu < 0:
        raise ValueError(f"proximal mu must be >= 0, got {mu}")
    total: torch.Tensor | None = None
    for name, local in local_weights.items():
        if not local.dtype.is_floating_point:
            continue
        if name not in global_weights:
            raise ValueError(f"{name} is not in the global weights")
        reference = global_weights[name]
        if reference.shape != local.shape:
            raise ValueError(f"{name} has shape {tuple(local.shape)}, global has {tuple(reference.shape)}")
        squared = torch.sum(
            torch.square(local - reference.detach().to(dtype=local.dtype, device=local.device))
        )
        total = squared if total is None else total + squared
    if total is None:
        raise ValueError("no floating-point tensors to regularise")
    return total * (mu / 2.0)


class FedProx(FedAvg):
    """FedAvg whose domains minimise ``loss + proximal_mu / 2 * ||w - w_global||^2`` locally.

    The server step is FedAvg's; ``proximal_mu`` travels with the task so that every agent applies
    :func:`proximal_term` with the same value.
    """

    name = "fedprox"

    def __init__(self, *, proximal_mu: float = 0.01) -> None:
        if not proximal_mu >= 0:
            raise ValueError(f"proximal_mu must be >= 0, got {proximal_mu}")
        self.proximal_mu = float(proximal_mu)
