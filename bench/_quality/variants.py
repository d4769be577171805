"""What ``bench/robustness.py --variants`` adds: tuned robust rules, and FLTrust with a root set (bench only).

FLTrust proper (Cao, Fang, Liu, Gong, NDSS 2021, arXiv:2012.13995) scores every update by
``ReLU(cos(delta_i, delta_0))`` against ``delta_0``, the server's own update on a small clean root set,
and rescales every delta to ``||delta_0||``. meshfl's governance does not train, so the product ships
``trustscore`` (the median delta as trusted direction); :class:`RootFLTrust` measures what a root set
would give. Its root rows are a sample of one honest domain's training rows, standing in for
governance's own data; the root update follows the agents' training (``train_local``, per-round seed and
learning rate). It is registered under a bench-only name for the run and never shipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from bench._quality.sim import Federation
from governance.strategies import STRATEGIES, AggregateResult, ClientUpdate, Strategy
from governance.strategies.aggregate import cast_like
from governance.strategies.base import Weights, sorted_updates
from governance.strategies.deltas import clipped_mean_step, distance, float_names
from governance.strategies.normbound import integer_means
from governance.strategies.trustscore import cosine_scores
from meshfl.domain.training import train_local
from meshfl.events import StrategySpec, TrainingTask

ROOT_NAME = "bench-fltrust-root"

VARIANTS: list[tuple[str, StrategySpec]] = [
    ("centeredclip 1 it", StrategySpec(name="centeredclip", params={"iterations": 1})),
    ("centeredclip 10 it", StrategySpec(name="centeredclip", params={"iterations": 10})),
    ("centeredclip tau 0.1", StrategySpec(name="centeredclip", params={"clip_radius": 0.1})),
    ("centeredclip tau 0.3", StrategySpec(name="centeredclip", params={"clip_radius": 0.3})),
    ("centeredclip tau 1", StrategySpec(name="centeredclip", params={"clip_radius": 1.0})),
    ("trustscore m 0", StrategySpec(name="trustscore", params={"server_momentum": 0.0})),
    ("trustscore m 0.8", StrategySpec(name="trustscore", params={"server_momentum": 0.8})),
    ("trustscore m 0.9", StrategySpec(name="trustscore", params={"server_momentum": 0.9})),
]


class RootFLTrust(Strategy):
    """FLTrust with the root update trained here, on ``root`` rows, from the global weights."""

    name = ROOT_NAME
    task: TrainingTask | None = None
    root: tuple[torch.Tensor, torch.Tensor] | None = None
    round_ = 0

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        global_weights: Weights,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> AggregateResult:
        assert RootFLTrust.task is not None and RootFLTrust.root is not None
        RootFLTrust.round_ += 1
        ordered = sorted_updates(updates, global_weights)
        names = float_names(global_weights)
        x, y = RootFLTrust.root
        task, round_ = RootFLTrust.task, RootFLTrust.round_
        root = train_local(task, global_weights, x, y, seed=round_, round_=round_).state
        reference = {n: root[n].to(torch.float64) - global_weights[n].to(torch.float64) for n in names}
        models = [u.weights for u in ordered]
        scores = cosine_scores(models, global_weights, names, reference)
        total = math.fsum(scores)
        root_norm = math.sqrt(sum(float(reference[n].square().sum()) for n in names))
        weights = integer_means(ordered, global_weights)
        if total > 0:
            norms = [distance(w, global_weights, names) for w in models]
            factors = [
                s * (root_norm / norm if norm > 0 else 0.0) * len(models) / total
                for s, norm in zip(scores, norms, strict=True)
            ]
            step = clipped_mean_step(models, global_weights, names, factors)
        else:
            step = {n: torch.zeros_like(reference[n]) for n in names}
        for n in names:
            weights[n] = cast_like(global_weights[n].to(torch.float64) + step[n], global_weights[n].dtype)
        return AggregateResult(weights={n: weights[n] for n in global_weights}, state={})


def use_root(fed: Federation, *, rows: int, seed: int, domain: str) -> StrategySpec:
    """Register :class:`RootFLTrust` for one run of ``fed`` with ``rows`` root rows of ``domain``."""
    data = fed.data[fed.domains.index(domain)]
    pick = torch.randperm(int(data.x_train.shape[0]), generator=torch.Generator().manual_seed(0))[:rows]
    RootFLTrust.task = fed.task.model_copy(update={"seed": seed})
    RootFLTrust.root = (data.x_train[pick], data.y_train[pick])
    RootFLTrust.round_ = 0
    STRATEGIES[ROOT_NAME] = RootFLTrust
    return StrategySpec(name=ROOT_NAME)
