"""Centered clipping [Karimireddy et al., 2021]: clip every delta around a robust center, from history.

Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust Optimization", ICML 2021,
https://arxiv.org/abs/2012.10333 (Algorithm 2, centered clipping).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from governance.strategies.aggregate import cast_like
from governance.strategies.base import (
    AggregateResult,
    ClientUpdate,
    Strategy,
    Weights,
    check_state,
    sorted_updates,
)
from governance.strategies.deltas import clip_scale, clipped_mean_step, distance, float_names, median
from governance.strategies.normbound import integer_means

CENTER_PREFIX = "center."


class CenteredClipping(Strategy):
    """``v <- v + (1/n) sum_i clip(d_i - v, tau)``, ``iterations`` times, from the previous round's ``v``.

    ``d_i = w_i - w_g`` are the deltas; the center ``v`` starts from the aggregate delta of the previous
    version (the history the paper's momentum carries; zero at the first version), kept in float64 in the
    state as ``"center.<name>"``; the result is ``w_g + v``. ``clip_radius`` is ``tau``; ``0`` (the
    default) takes, at every iteration, the median distance of the deltas to the current center, so the
    radius follows the honest majority's spread. A poisoned domain moves ``v`` by at most ``tau / n`` an
    iteration, whatever it sends; honest deltas inside the radius are averaged unchanged. Unweighted, one
    vote a domain. Integer tensors take the rounded unweighted mean.
    """

    name = "centeredclip"

    def __init__(self, *, clip_radius: float = 0.0, iterations: int = 5) -> None:
        if not clip_radius >= 0:
            raise ValueError(f"clip_radius must be >= 0 (0: the median distance), got {clip_radius}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
        self.clip_radius = float(clip_radius)
        self.iterations = iterations

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        global_weights: Weights,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        ordered = sorted_updates(updates, global_weights)
        names = float_names(global_weights)
        previous = check_state(state, {CENTER_PREFIX + n: global_weights[n].shape for n in names})
        center = {
            name: (
                previous[CENTER_PREFIX + name].clone()
                if previous is not None
                else torch.zeros(global_weights[name].shape, dtype=torch.float64)
            )
            for name in names
        }
        deltas = [u.weights for u in ordered]
        for _ in range(self.iterations):
            distances = [distance(w, global_weights, names, center) for w in deltas]
            radius = self.clip_radius if self.clip_radius > 0 else median(distances)
            scales = [clip_scale(d, radius) for d in distances]
            center = clipped_mean_step(deltas, global_weights, names, scales, center)
        weights = integer_means(ordered, global_weights)
        for name in names:
            step = torch.add(center[name], global_weights[name].to(torch.float64))
            weights[name] = cast_like(step, global_weights[name].dtype)
        new_state = {CENTER_PREFIX + name: center[name] for name in names}
        return AggregateResult(weights={name: weights[name] for name in global_weights}, state=new_state)
