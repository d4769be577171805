"""Reductions that decide a version give the same bits at any thread count (a replay elsewhere agrees)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch

from governance.policies import delta_l2_norm
from governance.policies.deltas import NORM_BLOCK, sum_of_squares


@pytest.fixture
def threads() -> Iterator[Callable[[int], None]]:
    before = torch.get_num_threads()
    try:
        yield torch.set_num_threads
    finally:
        torch.set_num_threads(before)


def _model(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "big": torch.randn(3 * NORM_BLOCK + 12345, generator=g),
        "w": torch.randn(257, 129, generator=g),
        "steps": torch.tensor(7),
    }


def test_delta_norm_is_independent_of_thread_count(threads: Callable[[int], None]) -> None:
    weights, base = _model(1), _model(2)
    norms = []
    for count in (1, 2, 4):
        threads(count)
        norms.append(delta_l2_norm(weights, base))
    assert norms[0] == norms[1] == norms[2]  # bit for bit, not approximately


def test_sum_of_squares_matches_an_exactly_rounded_sum() -> None:
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(3))
    exact = math.fsum(float(v) ** 2 for v in x.tolist())
    assert sum_of_squares(x) == pytest.approx(exact, rel=1e-15)
    assert sum_of_squares(torch.zeros(0)) == 0.0


def test_krum_distances_are_independent_of_thread_count(threads: Callable[[int], None]) -> None:
    from governance.strategies.aggregate import pairwise_squared_distances

    g = torch.Generator().manual_seed(4)
    center = [torch.randn(200_003, generator=g), torch.randn(64, 33, generator=g)]
    vectors = [[c + 0.01 * torch.randn(c.shape, generator=g) for c in center] for _ in range(7)]
    results = []
    for count in (1, 2, 4):
        threads(count)
        results.append(pairwise_squared_distances(vectors, center))
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])
