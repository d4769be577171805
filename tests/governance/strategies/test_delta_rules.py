"""The delta-based robust rules: what one poisoned domain can and cannot do to normbound and trustscore."""

from __future__ import annotations

import torch
from strategy_helpers import flatten, random_updates, same_bits, update

from governance.strategies import ClientUpdate, NormBound, TrustScore
from governance.strategies.deltas import clip_scale, median, sequential_sum, squared_norm


def _setup(count: int = 5) -> tuple[dict[str, torch.Tensor], list[ClientUpdate], torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    g = {"w": torch.randn(64, generator=generator), "b": torch.randn(8, generator=generator)}
    direction = {k: 0.5 * torch.randn(v.shape, generator=generator) for k, v in g.items()}
    target = {k: g[k] + direction[k] for k in g}
    made = random_updates(9, count, {"w": (64,), "b": (8,)}, center=target, scale=0.02)
    return g, [update(u.domain, u.weights, 100) for u in made], flatten(direction)


def _poisoned(g: dict, honest: ClientUpdate, factor: float, claimed: int = 100) -> ClientUpdate:
    return update(honest.domain, {k: g[k] + factor * (honest.weights[k] - g[k]) for k in g}, claimed)


def test_normbound_caps_a_scaled_update_at_the_median_norm_whatever_its_scale_or_claim() -> None:
    g, updates, _ = _setup()
    x100 = NormBound().aggregate([_poisoned(g, updates[0], 100.0), *updates[1:]], g)
    x10000 = NormBound().aggregate([_poisoned(g, updates[0], 1e4, claimed=10**6), *updates[1:]], g)
    for name in g:  # the attacker is clipped to the same bound either way (up to the rounding of M / norm)
        torch.testing.assert_close(x100.weights[name], x10000.weights[name], rtol=0, atol=1e-6)
    honest_mean = torch.stack([flatten(u.weights) for u in updates[1:]]).mean(dim=0)
    moved = float(torch.linalg.vector_norm(flatten(x100.weights) - honest_mean))
    bound = median([float(torch.linalg.vector_norm(flatten(u.weights) - flatten(g))) for u in updates])
    assert moved <= 2 * bound / len(updates)  # at most M / n away, plus the honest mean's own shrink


def test_trustscore_gives_an_update_against_the_majority_no_weight() -> None:
    g, updates, direction = _setup()
    flipped = [_poisoned(g, updates[0], -100.0), *updates[1:]]
    result = TrustScore(server_momentum=0.0).aggregate(flipped, g)
    further = TrustScore(server_momentum=0.0).aggregate([_poisoned(g, updates[0], -1e4), *updates[1:]], g)
    assert same_bits(result.weights, further.weights)  # zero weight: its size does not matter
    step = flatten(result.weights) - flatten(g)
    cosine = float(step @ direction / (step.norm() * direction.norm()))
    assert cosine > 0.99  # the step is the honest direction


def test_trustscore_momentum_carries_the_robust_step_into_the_next_version() -> None:
    g, updates, _ = _setup()
    strategy = TrustScore(server_momentum=0.5)
    first = strategy.aggregate(updates, g)
    assert set(first.state) == {"momentum.w", "momentum.b"}
    assert all(t.dtype == torch.float64 for t in first.state.values())
    step = {k: first.weights[k].double() - g[k].double() for k in g}
    assert all(torch.allclose(first.state[f"momentum.{k}"], step[k], atol=1e-6) for k in g)
    again = strategy.aggregate(updates, first.weights, first.state)
    plain = TrustScore(server_momentum=0.0).aggregate(updates, first.weights)
    expected = {k: plain.weights[k].double() + 0.5 * first.state[f"momentum.{k}"] for k in g}
    assert all(torch.allclose(again.weights[k].double(), expected[k], atol=1e-6) for k in g)


def test_reproducible_sums_are_sequential_and_clip_scales_exact() -> None:
    values = torch.tensor([1e16, 1.0, -1e16, 1.0], dtype=torch.float64)
    assert sequential_sum(values) == 1.0  # left to right: (1e16 + 1) - 1e16 + 1, not a pairwise 0 or 2
    assert squared_norm([torch.tensor([3.0, 4.0], dtype=torch.float64)]) == 25.0
    assert clip_scale(10.0, 5.0) == 0.5 and clip_scale(2.0, 5.0) == 1.0 and clip_scale(0.0, 0.0) == 1.0
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([4.0, 1.0, 2.0, 3.0]) == 2.5
