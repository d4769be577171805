"""Governance's top network of a split task and its steps; pure (no I/O), shared by the service and by
audit replay, so a replay recomputes every version's top tensors bit for bit from the logged batches.

Each attempt of an epoch starts from its base version's top (or the seeded initial one) with a fresh
optimizer, and steps once per training batch in batch order: with labels at governance on the
cross-entropy of its own output; with labels at a domain on the gradient the label owner returns for
the top's output of that batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from meshfl.vertical.events import SplitTask
from meshfl.vertical.spec import build_network, make_optimizer, part_seed, top_input_width

TOP_PARTY = "governance"


class TopModel:
    """The top network, its optimizer and the one batch whose output awaits the label owner's gradient."""

    def __init__(self, task: SplitTask, state: Mapping[str, torch.Tensor] | None = None) -> None:
        self.task = task
        self.widths = [domain.cut_width for domain in task.domains]
        self.network: nn.Sequential = build_network(
            task.top, top_input_width(task), seed=part_seed(task, TOP_PARTY, "top")
        )
        if state is not None:
            self.network.load_state_dict(dict(state))
        self.optimizer = make_optimizer(task, list(self.network.parameters()))
        self._held: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _inputs(self, activations: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(activations) != len(self.widths):
            raise ValueError(f"{len(activations)} activations for {len(self.widths)} domains")
        rows = {int(a.shape[0]) for a in activations}
        if len(rows) != 1:
            raise ValueError(f"activations of different batch sizes {sorted(rows)}")
        for activation, width in zip(activations, self.widths, strict=True):
            if activation.ndim != 2 or activation.shape[1] != width:
                raise ValueError(f"activation of shape {tuple(activation.shape)}, expected [*, {width}]")
        return torch.cat([a.to(torch.float32) for a in activations], dim=1).requires_grad_(True)

    def _slices(self, x: torch.Tensor) -> list[torch.Tensor]:
        assert x.grad is not None
        return [part.contiguous() for part in torch.split(x.grad.detach(), self.widths, dim=1)]

    def train_on_labels(
        self, activations: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> tuple[list[torch.Tensor], float]:
        """Labels at governance: one step; the gradient slice of each domain and the batch loss."""
        self.network.train()
        x = self._inputs(activations)
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.network(x), labels.to(torch.int64))
        loss.backward()
        self.optimizer.step()
        return self._slices(x), float(loss.detach())

    def forward_for_owner(self, batch: int, activations: Sequence[torch.Tensor]) -> torch.Tensor:
        """Labels at a domain: the top's output for the label owner; its graph waits for the gradient."""
        self.network.train()
        x = self._inputs(activations)
        out = self.network(x)
        self._held = (batch, x, out)
        return out.detach().contiguous()

    @property
    def held_batch(self) -> int | None:
        return None if self._held is None else self._held[0]

    def backward_from_owner(self, batch: int, grad: torch.Tensor) -> list[torch.Tensor]:
        """The owner's gradient of the held batch: one step; each domain's gradient slice."""
        if self._held is None or self._held[0] != batch:
            raise ValueError(f"batch {batch} is not awaiting a gradient")
        _, x, out = self._held
        if tuple(grad.shape) != tuple(out.shape):
            raise ValueError(f"gradient of shape {tuple(grad.shape)} for an output of {tuple(out.shape)}")
        self._held = None
        self.optimizer.zero_grad(set_to_none=True)
        out.backward(grad.to(out.dtype))
        self.optimizer.step()
        return self._slices(x)

    @torch.no_grad()
    def evaluate(self, activations: Sequence[torch.Tensor]) -> torch.Tensor:
        """The top's output in eval mode (batch norm on running statistics)."""
        self.network.eval()
        try:
            return self.network(self._inputs(activations).detach()).contiguous()
        finally:
            self.network.train()

    def state(self) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().clone() for name, tensor in self.network.state_dict().items()}
