"""FedMedian, FedTrimmedAvg, Krum, Multi-Krum and Bulyan: hand-worked cases and direct transcriptions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from strategy_helpers import random_updates, tensors, update

from governance.strategies import Bulyan, ClientUpdate, FedMedian, FedTrimmedAvg, Krum, MultiKrum


def scalar_updates(values: list[float]) -> list[ClientUpdate]:
    """One update per value, domains d0, d1 ... in that (canonical) order, 2 coordinates: [v, -v]."""
    return [update(f"d{i}", tensors({"w": [v, -v]}), num_examples=i + 1) for i, v in enumerate(values)]


ZERO = tensors({"w": [0.0, 0.0]})


def test_fedmedian_hand_worked() -> None:
    # medians of {1, 2, 100} and {-1, -2, -100}, unweighted whatever num_examples says
    assert FedMedian().aggregate(scalar_updates([1, 100, 2]), ZERO).weights["w"].tolist() == [2.0, -2.0]
    # even count: (2 + 3) / 2
    assert FedMedian().aggregate(scalar_updates([1, 3, 2, 100]), ZERO).weights["w"].tolist() == [2.5, -2.5]


def test_fedtrimmedavg_hand_worked() -> None:
    # beta 0.2 of 5 -> cut 1 at each end: mean(1, 2, 3) = 2 (drops -1000 and 1000)
    updates = scalar_updates([1, 1000, 2, -1000, 3])
    assert FedTrimmedAvg(beta=0.2).aggregate(updates, ZERO).weights["w"].tolist() == [2.0, -2.0]
    assert FedTrimmedAvg(beta=0.29).num_trim(100) == 29
    with pytest.raises(ValueError):
        FedTrimmedAvg(beta=0.5)


def test_robust_means_match_numpy_definitions() -> None:
    updates = random_updates(30, 9, {"w": (30,)})
    stacked = np.stack([u.weights["w"].double().numpy() for u in updates])
    zero = {"w": torch.zeros(30)}
    median = FedMedian().aggregate(updates, zero).weights["w"]
    assert torch.equal(median, torch.from_numpy(np.median(stacked, axis=0)).float())
    trimmed = FedTrimmedAvg(beta=0.25).aggregate(updates, zero).weights["w"]
    expected = np.sort(stacked, axis=0)[2:7].mean(axis=0)  # floor(0.25 * 9) = 2 cut at each end
    np.testing.assert_allclose(trimmed.double().numpy(), expected, rtol=1.2e-7)


def test_krum_hand_worked() -> None:
    # 1-D positions 0, 1, 2, 3, 100 (the second coordinate mirrors them, doubling every distance):
    # with f = 1 each score sums the 2 smallest squared distances: 0 -> 5, 1 -> 2, 2 -> 2, 3 -> 5,
    # 100 -> 19013 (times 2). Tie 1 / 2 goes to the canonical first: d1.
    updates = scalar_updates([0, 1, 2, 3, 100])
    result = Krum(num_byzantine=1).aggregate(updates, ZERO)
    assert result.weights["w"].tolist() == [1.0, -1.0]
    # Multi-Krum m = 3: d1, d2 (score 2) then d0 (tie with d3 at 5): unweighted mean (0 + 1 + 2) / 3 = 1
    multi = MultiKrum(num_byzantine=1, num_selected=3).aggregate(updates, ZERO)
    assert multi.weights["w"].tolist() == [1.0, -1.0]
    # default m = n - f = 4: d0..d3 -> 1.5
    assert MultiKrum(num_byzantine=1).aggregate(updates, ZERO).weights["w"].tolist() == [1.5, -1.5]
    with pytest.raises(ValueError, match="2f \\+ 3"):
        Krum(num_byzantine=2).aggregate(updates, ZERO)


def naive_krum_scores(vectors: list[np.ndarray], f: int) -> list[float]:
    """Blanchard et al. 2017, Sec. 4, transcribed: sum of the n - f - 2 smallest ||V_i - V_j||^2, j != i."""
    scores = []
    for i, vi in enumerate(vectors):
        distances = sorted(float(np.sum((vi - vj) ** 2)) for j, vj in enumerate(vectors) if j != i)
        scores.append(sum(distances[: max(len(vectors) - f - 2, 0)]))
    return scores


def test_krum_and_multikrum_match_the_definition_on_random_data() -> None:
    global_weights = {"a": torch.randn(4, 4, generator=torch.Generator().manual_seed(3)), "b": torch.zeros(3)}
    updates = random_updates(31, 9, {"a": (4, 4), "b": (3,)}, center=global_weights, scale=0.1)
    ordered = sorted(updates, key=lambda u: u.key)
    vectors = [np.concatenate([u.weights[k].double().numpy().ravel() for k in ("a", "b")]) for u in ordered]
    scores = naive_krum_scores(vectors, 2)
    best = int(np.argmin(scores))
    result = Krum(num_byzantine=2).aggregate(updates, global_weights)
    assert all(torch.equal(result.weights[k], ordered[best].weights[k]) for k in ("a", "b"))
    chosen = sorted(np.argsort(scores, kind="stable")[:4].tolist())
    multi = MultiKrum(num_byzantine=2, num_selected=4).aggregate(updates, global_weights)
    expected = np.mean([vectors[i] for i in chosen], axis=0)
    got = np.concatenate([multi.weights[k].double().numpy().ravel() for k in ("a", "b")])
    np.testing.assert_allclose(got, expected, rtol=1.2e-7, atol=1e-7)


def test_bulyan_hand_worked() -> None:
    # n = 7, f = 1: theta = 5, beta = 3. Krum (n - f - 2 neighbours of the remaining set) picks, on the
    # positions 0, 1, 2, 3, 4, 5, 1000: 2 (score 10, tie with 3), then 3 (9), then 1 (10, tie with 4),
    # then 4 (1, tie with 5), then 0 (no neighbours left: first in order). Around the median 2 of
    # {0, 1, 2, 3, 4}, the 3 closest are 1, 2, 3 -> 2.
    updates = scalar_updates([0, 1, 2, 3, 4, 5, 1000])
    assert Bulyan(num_byzantine=1).aggregate(updates, ZERO).weights["w"].tolist() == [2.0, -2.0]


def test_bulyan_requires_4f_plus_3_updates() -> None:
    with pytest.raises(ValueError, match="4f \\+ 3"):
        Bulyan(num_byzantine=1).aggregate(scalar_updates([0, 1, 2, 3, 4, 5]), ZERO)
    with pytest.raises(ValueError, match="4f \\+ 3"):
        Bulyan(num_byzantine=2).aggregate(scalar_updates(list(range(10))), ZERO)


def test_bulyan_matches_the_definition_on_random_data() -> None:
    f = 2
    updates = random_updates(32, 11, {"w": (40,)}, scale=0.5)
    ordered = sorted(updates, key=lambda u: u.key)
    vectors = [u.weights["w"].double().numpy() for u in ordered]
    remaining, selected = list(range(11)), []
    for _ in range(11 - 2 * f):  # El Mhamdi et al. 2018, Algorithm 1 with Krum as the rule A
        scores = naive_krum_scores([vectors[i] for i in remaining], f)
        selected.append(remaining.pop(int(np.argmin(scores))))
    values = np.sort(np.stack([vectors[i] for i in sorted(selected)], axis=1), axis=1)
    median = np.median(values, axis=1)
    beta = len(selected) - 2 * f
    order = np.argsort(np.abs(values - median[:, None]), axis=1, kind="stable")[:, :beta]
    expected = np.take_along_axis(values, order, axis=1).mean(axis=1)
    result = Bulyan(num_byzantine=f).aggregate(updates, {"w": torch.zeros(40)})
    np.testing.assert_allclose(result.weights["w"].double().numpy(), expected, rtol=1.2e-7, atol=1e-7)
