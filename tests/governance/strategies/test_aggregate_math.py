"""The pure math helpers of governance.strategies.aggregate, against hand-worked values and definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from governance.strategies import aggregate
from governance.strategies.aggregate import (
    bulyan_select,
    cast_like,
    coordinate_median,
    fold_scaled_,
    krum_scores,
    krum_select,
    mean_around_median,
    pairwise_squared_distances,
    trimmed_mean,
    weighted_mean,
)


def t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_weighted_mean_hand_worked() -> None:
    # (1*1 + 3*3) / 4 = 2.5 and (2*1 + 6*3) / 4 = 5
    result = weighted_mean([t([1, 2]), t([3, 6])], [1, 3])
    assert result.dtype == torch.float64
    assert result.tolist() == [2.5, 5.0]


def test_fold_scaled_is_exact_for_integer_weights_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregate, "FOLD_CHUNK", 7)  # many chunks and a ragged last one
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(50, generator=generator)
    acc = torch.full((50,), 0.25, dtype=torch.float64)
    before = x.clone()
    fold_scaled_(acc, x, 12345.0)
    # float32 * integer < 2**29 is exact in float64, so one rounding only: that of the sum
    expected = [0.25 + v * 12345 for v in x.double().tolist()]
    assert acc.tolist() == expected
    assert torch.equal(x, before)


def test_fold_scaled_accepts_integer_tensors_and_float_weights() -> None:
    acc = torch.zeros(3, dtype=torch.float64)
    fold_scaled_(acc, torch.tensor([1, 2, 3]), 0.5)
    assert acc.tolist() == [0.5, 1.0, 1.5]
    with pytest.raises(ValueError):
        fold_scaled_(acc, torch.zeros(4), 1.0)


def test_cast_like_rounds_integers_and_keeps_floats() -> None:
    values = torch.tensor([0.4, 2.5, 3.6, -1.5], dtype=torch.float64)
    assert cast_like(values, torch.int64).tolist() == [0, 2, 4, -2]  # round half to even
    assert cast_like(values, torch.float16).dtype == torch.float16


def test_coordinate_median_odd_and_even() -> None:
    # odd: median of {1, 2, 100} = 2 and of {10, -5, 0} = 0
    assert coordinate_median([t([1, 10]), t([2, -5]), t([100, 0])]).tolist() == [2.0, 0.0]
    # even: (2 + 3) / 2 = 2.5
    assert coordinate_median([t([1]), t([2]), t([3]), t([100])]).tolist() == [2.5]


def test_coordinate_median_matches_numpy_on_random_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregate, "SORT_BLOCK", 5)
    generator = torch.Generator().manual_seed(2)
    for count in (4, 7):
        xs = [torch.randn(3, 7, generator=generator) for _ in range(count)]
        expected = np.median(np.stack([x.double().numpy() for x in xs]), axis=0)
        assert np.array_equal(coordinate_median(xs).numpy(), expected)


def test_zero_signs_never_depend_on_sort_ties() -> None:
    minus, plus = t([-0.0]), t([0.0])
    for xs in ([minus, plus, minus], [plus, minus, minus], [minus, minus, plus]):
        result = coordinate_median(xs)
        assert math.copysign(1.0, result.item()) == 1.0


def test_trimmed_mean_hand_worked_and_definition() -> None:
    # cut one at each end: mean(2, 3) = 2.5 and mean(0, 1) = 0.5
    xs = [t([1, -50]), t([100, 0]), t([2, 1]), t([3, 2])]
    assert trimmed_mean(xs, num_trim=1).tolist() == [2.5, 0.5]
    generator = torch.Generator().manual_seed(3)
    ys = [torch.randn(40, generator=generator) for _ in range(9)]
    values = np.sort(np.stack([y.double().numpy() for y in ys]), axis=0)[2:7]
    np.testing.assert_allclose(trimmed_mean(ys, num_trim=2).numpy(), values.mean(axis=0), rtol=1e-15)
    with pytest.raises(ValueError):
        trimmed_mean(xs, num_trim=2)


def test_mean_around_median_keeps_the_closest_window() -> None:
    # median 2, distances 2, 1, 0, 8, 9: keep 0, 1, 2 -> 1.0 (a symmetric trim would give mean(1, 2, 10))
    xs = [t([v]) for v in (10, 0, 2, 11, 1)]
    assert mean_around_median(xs, num_kept=3).tolist() == [1.0]
    # ties in distance keep the smaller value: values 1, 3 around median 2 with one slot -> 2 is closest,
    # with two slots {2, 1} (1 and 3 tie, 1 is smaller)
    ys = [t([v]) for v in (1, 2, 3)]
    assert mean_around_median(ys, num_kept=2).tolist() == [1.5]


def test_mean_around_median_matches_argsort_definition() -> None:
    generator = torch.Generator().manual_seed(4)
    for count, kept in ((7, 3), (8, 4), (11, 5)):
        xs = [torch.randn(300, generator=generator) for _ in range(count)]
        values = np.sort(np.stack([x.double().numpy() for x in xs], axis=1), axis=1)
        median = np.median(values, axis=1)
        order = np.argsort(np.abs(values - median[:, None]), axis=1, kind="stable")
        expected = np.take_along_axis(values, order[:, :kept], axis=1).mean(axis=1)
        np.testing.assert_allclose(mean_around_median(xs, num_kept=kept).numpy(), expected, rtol=1e-14)


def test_pairwise_squared_distances_match_direct_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregate, "DISTANCE_BLOCK", 4)
    generator = torch.Generator().manual_seed(5)
    center = [torch.randn(3, 3, generator=generator), torch.randn(5, generator=generator)]
    vectors = [[c + 0.1 * torch.randn(c.shape, generator=generator) for c in center] for _ in range(6)]
    flat = [torch.cat([v.reshape(-1).double() for v in vec]) for vec in vectors]
    expected = torch.tensor(
        [[float(torch.sum((a - b) ** 2)) for b in flat] for a in flat], dtype=torch.float64
    )
    distances = pairwise_squared_distances(vectors, center)
    torch.testing.assert_close(distances, expected, rtol=1e-12, atol=1e-15)
    assert torch.equal(distances, distances.T)
    assert distances.diagonal().tolist() == [0.0] * 6


def test_krum_scores_and_selection_hand_worked() -> None:
    # values 0, 1, 2, 3, 100 and f = 1: each score sums the n - f - 2 = 2 smallest squared distances
    # 0: 1 + 4 = 5; 1: 1 + 1 = 2; 2: 1 + 1 = 2; 3: 1 + 4 = 5; 100: 97**2 + 98**2 = 19013
    vectors = [[t([v])] for v in (0, 1, 2, 3, 100)]
    distances = pairwise_squared_distances(vectors, [t([0])])
    assert krum_scores(distances, num_byzantine=1) == [5.0, 2.0, 2.0, 5.0, 19013.0]
    assert krum_select(distances, num_byzantine=1) == [1]  # tie 1 / 2: the lower index
    assert krum_select(distances, num_byzantine=1, num_selected=3) == [0, 1, 2]  # tie 0 / 3 -> 0
    with pytest.raises(ValueError, match="2f \\+ 3"):
        krum_select(distances, num_byzantine=2)


def test_bulyan_select_hand_worked() -> None:
    # values 0..5 and 1000, f = 1: Krum on the remaining set, 5 times (worked out in test_robust.py)
    vectors = [[t([v])] for v in (0, 1, 2, 3, 4, 5, 1000)]
    distances = pairwise_squared_distances(vectors, [t([0])])
    assert bulyan_select(distances, num_byzantine=1) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="4f \\+ 3"):
        bulyan_select(distances, num_byzantine=2)


def test_helpers_do_not_mutate_their_inputs() -> None:
    generator = torch.Generator().manual_seed(6)
    xs = [torch.randn(10, generator=generator) for _ in range(7)]
    before = [x.clone() for x in xs]
    weighted_mean(xs, [1.0] * 7)
    coordinate_median(xs)
    trimmed_mean(xs, num_trim=1)
    mean_around_median(xs, num_kept=3)
    pairwise_squared_distances([[x] for x in xs], [xs[0]])
    assert all(torch.equal(a, b) for a, b in zip(xs, before, strict=True))
