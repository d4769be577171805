"""Pipelined training of one party's network with weight stashing (PipeDream, Narayanan et al., SOSP 2019,
arxiv.org/abs/1806.03377).

With several batches in flight, the optimizer steps (for batch ``b``) while the forward passes of later
batches are still waiting for their gradients. Each forward therefore runs on a detached copy of the
parameters (the *stash*): its backward uses exactly the weights its forward used, the gradients are
copied onto the live parameters and the optimizer steps. Buffers (batch-norm running statistics) are
the live ones. The number of stashes is bounded by the caller's window.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import torch
from torch import nn
from torch.func import functional_call

from meshfl.errors import MeshflError


class StashError(MeshflError):
    """A gradient does not fit what was stashed for its batch."""


class StashedNetwork:
    """``forward(key, x)`` keeps the graph of a batch; ``backward(key, grad)`` steps the optimizer."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, *, max_stashed: int) -> None:
        self.module = module
        self.optimizer = optimizer
        self.max_stashed = max_stashed
        self._params = dict(module.named_parameters())
        self._stash: OrderedDict[Hashable, tuple[torch.Tensor, dict[str, torch.Tensor]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._stash)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._stash

    def forward(self, key: Hashable, x: torch.Tensor, *, seed: int | None = None) -> torch.Tensor:
        """The output for batch ``key`` (detached); its graph waits for ``backward(key, ...)``.

        With ``seed``, dropout draws from a generator seeded by it: the batch's masks are reproducible."""
        if len(self._stash) >= self.max_stashed:
            raise StashError(f"{len(self._stash)} batches in flight, the bound is {self.max_stashed}")
        self.module.train()
        snapshot = {name: p.detach().clone().requires_grad_(True) for name, p in self._params.items()}
        buffers = dict(self.module.named_buffers())
        if seed is None:
            out = functional_call(self.module, {**snapshot, **buffers}, (x,))
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = functional_call(self.module, {**snapshot, **buffers}, (x,))
        self._stash[key] = (out, snapshot)
        return out.detach()

    def backward(self, key: Hashable, grad: torch.Tensor) -> None:
        """Back-propagate ``grad`` for ``key``, step, and drop the stash.

        ``StashError`` if the key is not in flight or the shape differs (nothing changes then)."""
        entry = self._stash.get(key)
        if entry is None:
            raise StashError(f"no batch {key!r} in flight")
        out, snapshot = entry
        if tuple(grad.shape) != tuple(out.shape):
            raise StashError(f"gradient of shape {tuple(grad.shape)} for an output of {tuple(out.shape)}")
        del self._stash[key]
        out.backward(grad.to(out.dtype))
        self.optimizer.zero_grad(set_to_none=True)
        for name, param in self._params.items():
            param.grad = snapshot[name].grad
        self.optimizer.step()

    def drop(self) -> None:
        """Forget every batch in flight (an aborted attempt)."""
        self._stash.clear()


def train_step(
    module: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, loss_fn: object
) -> tuple[torch.Tensor, float]:
    """One ordinary step on ``x`` (requires grad): returns (d loss / d x, loss)."""
    module.train()
    x = x.detach().requires_grad_(True)
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(module(x))  # type: ignore[operator]
    loss.backward()
    optimizer.step()
    assert x.grad is not None
    return x.grad.detach(), float(loss.detach())
