"""What every aggregation strategy takes and returns, and the contract it keeps.

A strategy is pure math: it takes the accepted updates of a round (each a domain's full local weights),
the global weights they started from and the server optimizer state of the previous version, and returns
the next global weights and state. The governance service publishes both inside the model version, so a
restarted service or an auditor replaying the log computes the same bits.

The contract (tested for every strategy):

- deterministic and independent of the order of ``updates``, bit for bit: updates are sorted by
  ``(domain, update_id)`` before any floating-point reduction;
- the output has exactly the names, shapes and dtypes of ``global_weights``;
- inputs (updates, global weights, state) are never mutated and never aliased by the output;
- ``TooFewUpdates`` (a ``ValueError``) when more updates are needed; ``ValueError`` on an empty list,
  duplicate update keys, or names, shapes or dtypes that differ from
  ``global_weights``.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

import torch

Weights: TypeAlias = Mapping[str, torch.Tensor]
"""Named tensors: a model state dict."""


class TooFewUpdates(ValueError):
    """The strategy needs more updates than it was given (Krum's 2f+3, Bulyan's 4f+3, a trim that
    leaves nothing). The only failure that makes governance wait for more updates: any other error
    of a strategy is a failed round, with a decision."""


@dataclass(frozen=True)
class ClientUpdate:
    """One domain's contribution to a round: its full local weights after training (not a delta).

    ``staleness`` is how many global versions were published between the version the domain trained
    from and the one being aggregated into (0 for a synchronous round). ``base`` is the global weights
    of that version when the caller holds them (asynchronous rounds): a strategy that aggregates deltas
    (FedBuff) then takes each update's delta against its own base, not against the current global.
    """

    update_id: str
    domain: str
    weights: Mapping[str, torch.Tensor]
    num_examples: int
    staleness: int = 0
    base: Mapping[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.num_examples, bool) or not isinstance(self.num_examples, int):
            raise ValueError(f"num_examples must be an int, got {type(self.num_examples).__name__}")
        if self.num_examples < 1:
            raise ValueError(f"num_examples must be >= 1, got {self.num_examples}")
        if isinstance(self.staleness, bool) or not isinstance(self.staleness, int) or self.staleness < 0:
            raise ValueError(f"staleness must be an int >= 0, got {self.staleness!r}")

    @property
    def key(self) -> tuple[str, str]:
        """The canonical sort key of an update: what makes aggregation independent of arrival order."""
        return (self.domain, self.update_id)


@dataclass(frozen=True)
class AggregateResult:
    """The next global weights and the server optimizer state to store beside them.

    ``state`` holds server-side optimizer tensors (momentum, Adam moments ...) in float64 under names
    such as ``"m.fc.weight"``; it is empty for stateless strategies.
    """

    weights: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]


class Strategy(ABC):
    """An aggregation rule: ``aggregate(updates, global_weights, state) -> AggregateResult``."""

    name: ClassVar[str]

    @abstractmethod
    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        global_weights: Weights,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        """Combine ``updates`` into the next global weights (see the module docstring for the contract)."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()) if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def check_weights(weights: Mapping[str, torch.Tensor], reference: Weights, *, what: str) -> None:
    """Raise ``ValueError`` unless ``weights`` has the names, shapes and dtypes of ``reference``."""
    if weights.keys() != reference.keys():
        missing = sorted(reference.keys() - weights.keys())
        extra = sorted(weights.keys() - reference.keys())
        raise ValueError(
            f"{what}: tensor names differ from the global weights (missing {missing}, extra {extra})"
        )
    for name, ref in reference.items():
        tensor = weights[name]
        if tensor.shape != ref.shape:
            raise ValueError(f"{what}: {name} has shape {tuple(tensor.shape)}, expected {tuple(ref.shape)}")
        if tensor.dtype != ref.dtype:
            raise ValueError(f"{what}: {name} has dtype {tensor.dtype}, expected {ref.dtype}")


def sorted_updates(updates: Sequence[ClientUpdate], global_weights: Weights) -> list[ClientUpdate]:
    """Validate ``updates`` against ``global_weights``; return them in ``(domain, update_id)`` order."""
    if not updates:
        raise ValueError("cannot aggregate an empty list of updates")
    if not global_weights:
        raise ValueError("global weights are empty")
    ordered = sorted(updates, key=lambda u: u.key)
    for previous, current in itertools.pairwise(ordered):
        if previous.key == current.key:
            raise ValueError(f"duplicate update {current.key}")
    for update in ordered:
        check_weights(update.weights, global_weights, what=f"update {update.update_id}")
    return ordered


def check_state(
    state: Mapping[str, torch.Tensor] | None, expected: Mapping[str, torch.Size]
) -> Mapping[str, torch.Tensor] | None:
    """Return ``state`` if it holds exactly the ``expected`` float64 tensors, ``None`` if it is empty.

    A partial or foreign state would silently restart the server optimizer from scratch; that is an error.
    """
    if not state:
        return None
    if state.keys() != expected.keys():
        missing = sorted(expected.keys() - state.keys())
        extra = sorted(state.keys() - expected.keys())
        raise ValueError(
            f"server state differs from what this strategy keeps (missing {missing}, extra {extra})"
        )
    for key, shape in expected.items():
        if state[key].shape != shape or state[key].dtype != torch.float64:
            raise ValueError(f"server state {key} must be float64 of shape {tuple(shape)}")
    return state
