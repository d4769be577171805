"""Krum and Multi-Krum [Blanchard et al., 2017]: keep the update(s) closest to their neighbours.

Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine Tolerant Gradient
Descent", NeurIPS 2017, https://proceedings.neurips.cc/paper/2017/hash/f4b9ec30ad9f68f89b29639786cb62ef-Abstract.html.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from governance.strategies.aggregate import cast_like, krum_select, pairwise_squared_distances, weighted_mean
from governance.strategies.base import (
    AggregateResult,
    ClientUpdate,
    Strategy,
    Weights,
    check_state,
    sorted_updates,
)
from meshfl.logs import get_logger

log = get_logger(__name__)


class Krum(Strategy):
    """Return the update whose ``n - f - 2`` nearest neighbours are closest (squared Euclidean distance).

    ``num_byzantine`` is ``f``, the number of Byzantine domains tolerated; Krum needs ``n >= 2f + 3``.
    The result is an exact copy of the selected update; ties go to the first in ``(domain, update_id)`` order.
    """

    name = "krum"

    def __init__(self, *, num_byzantine: int = 1) -> None:
        if isinstance(num_byzantine, bool) or not isinstance(num_byzantine, int) or num_byzantine < 0:
            raise ValueError(f"num_byzantine must be an int >= 0, got {num_byzantine!r}")
        self.num_byzantine = num_byzantine

    def selection_size(self, num_updates: int) -> int:
        """How many of ``num_updates`` updates are kept: one for Krum."""
        return 1

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        global_weights: Weights,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        ordered = sorted_updates(updates, global_weights)
        check_state(state, {})
        names = list(global_weights)
        distances = pairwise_squared_distances(
            [[u.weights[name] for name in names] for u in ordered], [global_weights[name] for name in names]
        )
        chosen = krum_select(
            distances, num_byzantine=self.num_byzantine, num_selected=self.selection_size(len(ordered))
        )
        log.debug("krum selected", strategy=self.name, update_ids=[ordered[i].update_id for i in chosen])
        if len(chosen) == 1:
            winner = ordered[chosen[0]].weights
            return AggregateResult(weights={name: winner[name].clone() for name in names}, state={})
        weights = {
            name: cast_like(
                weighted_mean([ordered[i].weights[name] for i in chosen], [1.0] * len(chosen)),
                global_weights[name].dtype,
            )
            for name in names
        }
        return AggregateResult(weights=weights, state={})


class MultiKrum(Krum):
    """The unweighted mean of the ``m`` updates with the lowest Krum scores (Blanchard et al., Sec. 4).

    ``num_selected`` is ``m``; by default ``n - f``. Unweighted, as in the paper, so a selected Byzantine
    update cannot gain weight by claiming many examples. ``m = 1`` is Krum; ``m = n`` is the plain mean.
    """

    name = "multikrum"

    def __init__(self, *, num_byzantine: int = 1, num_selected: int | None = None) -> None:
        super().__init__(num_byzantine=num_byzantine)
        if num_selected is not None and (
            isinstance(num_selected, bool) or not isinstance(num_selected, int) or num_selected < 1
        ):
            raise ValueError(f"num_selected must be an int >= 1, got {num_selected!r}")
        self.num_selected = num_selected

    def selection_size(self, num_updates: int) -> int:
        return num_updates - self.num_byzantine if self.num_selected is None else self.num_selected
