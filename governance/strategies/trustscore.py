"""Trust scoring [Cao et al., 2021] against the coordinate-wise median delta, with server momentum.

FLTrust: Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping",
NDSS 2021, https://arxiv.org/abs/2012.13995. FLTrust weighs each update by ``ReLU(cos(delta_i, delta_0))``
where ``delta_0`` is the server's own update on a small clean root set, and brings every update to the
magnitude of ``delta_0``. Here the trusted direction is the coordinate-wise median of the deltas (Yin et al.,
ICML 2018, https://arxiv.org/abs/1803.01498), which an honest majority controls, so governance needs no data
of its own and the rule stays a pure function of the accepted updates (an audit replays it bit for bit).
Magnitudes are bounded by the median norm (norm bounding, Sun et al. 2019, arXiv:1911.07963). Server
momentum (Hsu et al. 2019, arXiv:1909.06335) carries the robust direction across rounds, as the history of
Karimireddy et al. (ICML 2021, arXiv:2012.10333) does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from governance.strategies.aggregate import cast_like, coordinate_median
from governance.strategies.base import (
    AggregateResult,
    ClientUpdate,
    Strategy,
    Weights,
    check_state,
    sorted_updates,
)
from governance.strategies.deltas import (
    clip_scale,
    clipped_mean_step,
    delta,
    distance,
    float_names,
    median,
    sequential_sum,
)
from governance.strategies.normbound import integer_means

MOMENTUM_PREFIX = "momentum."


def cosine_scores(
    updates: Sequence[Mapping[str, torch.Tensor]],
    base: Mapping[str, torch.Tensor],
    names: Sequence[str],
    reference: Mapping[str, torch.Tensor],
) -> list[float]:
    """``max(0, cos(w_i - base, reference))`` for every update (0 for a zero delta), reproducibly."""
    ref_norm = math.sqrt(sum(sequential_sum(torch.mul(reference[n], reference[n])) for n in names))
    scores = []
    for weights in updates:
        dot = 0.0
        squares = 0.0
        for name in names:
            d = delta(weights, base, name)
            dot = sequential_sum(torch.mul(d, reference[name]), dot)
            squares = sequential_sum(d.mul_(d), squares)
        norm = math.sqrt(squares)
        scores.append(max(0.0, dot / (norm * ref_norm)) if norm > 0 and ref_norm > 0 else 0.0)
    return scores


class TrustScore(Strategy):
    """``v = m v_prev + sum_i c_i min(1, M/||d_i||) d_i / sum_i c_i``; ``w = w_g + v``.

    ``d_i = w_i - w_g``; ``c_i = ReLU(cos(d_i, median_j d_j))``; ``M`` the median of the ``||d_i||``;
    ``m`` is ``server_momentum`` (``v`` kept in float64 as ``"momentum.<name>"`` when ``m > 0``; 0.5 won
    ``bench/robustness.py`` over 0, as it won ``bench/sweep.py`` for FedAvgM). A sign
    flipped or label-flipped update points away from what the majority agrees on and gets little or no
    weight; a scaled one is brought back to the honest norm. One vote a domain (claimed example counts are
    ignored). If no update has a positive score, the step is the median delta itself. Integer tensors
    take the rounded unweighted mean.
    """

    name = "trustscore"

    def __init__(self, *, server_momentum: float = 0.5) -> None:
        if not 0.0 <= server_momentum < 1.0:
            raise ValueError(f"server_momentum must be in [0, 1), got {server_momentum}")
        self.server_momentum = float(server_momentum)

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        global_weights: Weights,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        ordered = sorted_updates(updates, global_weights)
        names = float_names(global_weights)
        stateful = self.server_momentum > 0
        expected = {MOMENTUM_PREFIX + n: global_weights[n].shape for n in names} if stateful else {}
        previous = check_state(state, expected)
        models = [u.weights for u in ordered]
        reference = {
            name: coordinate_median([w[name] for w in models]).sub_(global_weights[name].to(torch.float64))
            for name in names
        }
        scores = cosine_scores(models, global_weights, names, reference)
        total = math.fsum(scores)
        if total > 0:
            norms = [distance(w, global_weights, names) for w in models]
            bound = median(norms)
            n = float(len(models))
            factors = [s * clip_scale(norm, bound) * n / total for s, norm in zip(scores, norms, strict=True)]
            step = clipped_mean_step(models, global_weights, names, factors)
        else:
            step = reference
        weights = integer_means(ordered, global_weights)
        new_state: dict[str, torch.Tensor] = {}
        for name in names:
            velocity = step[name]
            if previous is not None:
                velocity = torch.mul(previous[MOMENTUM_PREFIX + name], self.server_momentum).add_(velocity)
            if stateful:
                new_state[MOMENTUM_PREFIX + name] = velocity
            new = torch.add(global_weights[name].to(torch.float64), velocity)
            weights[name] = cast_like(new, global_weights[name].dtype)
        return AggregateResult(weights={name: weights[name] for name in global_weights}, state=new_state)
