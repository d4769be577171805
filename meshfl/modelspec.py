"""Turn a task's ``ModelSpec`` into a PyTorch module, and say which tensors its state holds.

Every participant (domain agents, governance, auditors) builds the model from the same spec, so the
state-dict keys must not depend on anything but the layer sizes: the linear layers are named
``layers.<i>.weight`` / ``layers.<i>.bias`` whatever the activation or dropout. Governance checks the
shapes of an update against ``expected_shapes`` without building a model.

Initial weights are drawn from a private RNG seeded with ``seed`` (PyTorch's default
Kaiming-uniform init), so version 0 of a task is the same bytes on every machine.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import torch
from torch import nn

from meshfl.errors import ConfigError
from meshfl.events import ModelSpec

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "gelu": nn.functional.gelu,
}
ARCHITECTURES: tuple[str, ...] = ("mlp", "logreg")
PARAM_DTYPE = "float32"


class FeedForward(nn.Module):
    """Linear layers with an activation (and optional dropout) between them; logits out."""

    def __init__(self, sizes: list[int], activation: str, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(d_in, d_out) for d_in, d_out in pairwise(sizes))
        self.activation_name = activation
        self._activation = _ACTIVATIONS[activation]
        self._dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < last:
                x = self._dropout(self._activation(x))
        return x


def layer_sizes(spec: ModelSpec) -> list[int]:
    """Input, hidden and output widths of ``spec``, validated; raises ``ConfigError``."""
    if spec.architecture not in ARCHITECTURES:
        raise ConfigError(
            f"model.architecture: unknown {spec.architecture!r}; known: {', '.join(ARCHITECTURES)}"
        )
    if spec.architecture == "logreg" and spec.hidden:
        raise ConfigError("model.hidden: a logreg model has no hidden layers")
    if spec.activation not in _ACTIVATIONS:
        raise ConfigError(f"model.activation: unknown {spec.activation!r}; known: {', '.join(_ACTIVATIONS)}")
    if not 0.0 <= spec.dropout < 1.0:
        raise ConfigError(f"model.dropout: must be in [0, 1), got {spec.dropout}")
    sizes = [spec.input_dim, *spec.hidden, spec.output_dim]
    if any(size < 1 for size in sizes):
        raise ConfigError(f"model: every layer width must be >= 1, got {sizes}")
    return sizes


def build_model(spec: ModelSpec, seed: int | None = None) -> nn.Module:
    """A fresh model for ``spec``; with a seed, its initial weights depend on nothing else.

    The seeded draw runs inside ``torch.random.fork_rng`` so the caller's global RNG is untouched.
    Without a seed, weights come from the global RNG as usual (the caller will load a state anyway).
    """
    sizes = layer_sizes(spec)
    if seed is None:
        return FeedForward(sizes, spec.activation, spec.dropout)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FeedForward(sizes, spec.activation, spec.dropout)


def empty_model(spec: ModelSpec) -> nn.Module:
    """A model for ``spec`` with uninitialised weights, for a caller that loads a state into it at once.

    Built on the meta device, then given (unwritten) CPU memory: no random initialisation, which took as
    long as the load itself on a 1M-parameter model.
    """
    sizes = layer_sizes(spec)
    with torch.device("meta"):
        model = FeedForward(sizes, spec.activation, spec.dropout)
    return model.to_empty(device="cpu")


def initial_state(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    """The seeded initial weights as a plain state dict (version 0 of a task)."""
    model = build_model(spec, seed=seed)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[list[int], str]]:
    """Name -> (shape, dtype name) of every tensor in the model's state dict, in state-dict order."""
    sizes = layer_sizes(spec)
    shapes: dict[str, tuple[list[int], str]] = {}
    for index, (d_in, d_out) in enumerate(pairwise(sizes)):
        shapes[f"layers.{index}.weight"] = ([d_out, d_in], PARAM_DTYPE)
        shapes[f"layers.{index}.bias"] = ([d_out], PARAM_DTYPE)
    return shapes


def num_parameters(spec: ModelSpec) -> int:
    """How many scalars the model holds (for logs and size estimates)."""
    total = 0
    for shape, _ in expected_shapes(spec).values():
        count = 1
        for dim in shape:
            count *= dim
        total += count
    return total
