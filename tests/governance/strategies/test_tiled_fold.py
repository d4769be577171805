"""The tiled fold (every update in memory) gives the very bits of the update-by-update fold."""

from __future__ import annotations

import pytest
import torch

from governance.strategies import FedAvg, WeightedSumAccumulator
from governance.strategies.aggregate import TILE, exact_product, fold_scaled_, fold_tiled_
from governance.strategies.base import ClientUpdate
from governance.strategies.fused_fold import FUSED_TILE, fold_fused_


def _updates(count: int) -> tuple[dict[str, torch.Tensor], list[ClientUpdate]]:
    generator = torch.Generator().manual_seed(11)
    shapes = {"big": (3 * TILE + 17,), "matrix": (37, 53), "half": (TILE + 5,), "steps": ()}
    dtypes = {"big": torch.float32, "matrix": torch.float32, "half": torch.bfloat16, "steps": torch.int64}
    global_weights = {n: torch.zeros(s, dtype=dtypes[n]) for n, s in shapes.items()}
    updates = []
    for i in range(count):
        weights = {
            n: (torch.randn(s, generator=generator) * 10 ** (i % 5)).to(dtypes[n])
            if dtypes[n].is_floating_point
            else torch.tensor(i * 3, dtype=dtypes[n])
            for n, s in shapes.items()
        }
        updates.append(
            ClientUpdate(update_id=f"u{i}", domain=f"d{i}", weights=weights, num_examples=7 + 13 * i)
        )
    return global_weights, updates


@pytest.mark.parametrize(
    "weight_of", [None, lambda u: 1.0 / (1 + u.num_examples)], ids=["examples", "fraction"]
)
def test_add_all_is_bit_identical_to_add(weight_of: object) -> None:
    global_weights, updates = _updates(9)
    kwargs = {} if weight_of is None else {"weight_of": weight_of}
    one_by_one = WeightedSumAccumulator(global_weights, **kwargs)  # type: ignore[arg-type]
    for update in updates:
        one_by_one.add(update)
    tiled = WeightedSumAccumulator(global_weights, **kwargs)  # type: ignore[arg-type]
    tiled.add(updates[0])
    tiled.add_all(updates[1:])
    assert tiled.count == one_by_one.count and tiled.total_examples == one_by_one.total_examples
    expected, got = one_by_one.mean_float64(), tiled.mean_float64()
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_add_all_checks_every_update_before_folding_any() -> None:
    global_weights, updates = _updates(3)
    accumulator = WeightedSumAccumulator(global_weights)
    with pytest.raises(ValueError, match="duplicate"):
        accumulator.add_all([updates[0], updates[1], updates[0]])
    assert accumulator.count == 0
    accumulator.add_all(updates)
    assert accumulator.count == 3


def test_fedavg_aggregate_matches_streaming_in_canonical_order() -> None:
    global_weights, updates = _updates(6)
    streamed = FedAvg().accumulator(global_weights)
    for update in sorted(updates, key=lambda u: (u.domain, u.update_id)):
        streamed.add(update)
    expected = streamed.result()
    got = FedAvg().aggregate(list(reversed(updates)), global_weights).weights
    assert all(torch.equal(expected[name], got[name]) for name in expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_one_kernel_fold_gives_the_bits_of_multiply_then_add(dtype: torch.dtype) -> None:
    """Integer weights fold with one ``add_(alpha=)`` kernel: the product is exact, so the sums are the
    bits of the separate multiply and add that published versions were computed with (replays of
    older logs stay bit for bit)."""
    generator = torch.Generator().manual_seed(5)
    x = [(torch.randn(2 * TILE + 3, generator=generator) * 1e3).to(dtype) for _ in range(6)]
    weights = [1.0, 3.0, 1234567.0, float((1 << 29) - 1), 17.0, 2.0]
    assert all(exact_product(t, w) for t, w in zip(x, weights, strict=True))
    fused = torch.zeros(x[0].shape, dtype=torch.float64)
    tiled = torch.zeros(x[0].shape, dtype=torch.float64)
    separate = torch.zeros(x[0].shape, dtype=torch.float64)
    for t, w in zip(x, weights, strict=True):
        fold_scaled_(fused, t, w)
        separate.add_(t.to(torch.float64).mul_(w))
    fold_tiled_(tiled, x, weights, torch.empty(TILE, dtype=torch.float64))
    assert torch.equal(fused, separate) and torch.equal(tiled, separate)
    assert not exact_product(x[0], 0.5) and not exact_product(x[0].double(), 3.0)


def _awkward(dtype: torch.dtype, size: int, count: int) -> list[torch.Tensor]:
    """Random values over 7 decades with subnormals, rounding ties, signed zeros, +-inf and NaN."""
    generator = torch.Generator().manual_seed(23)
    tiny = 2.0**-1074 if dtype == torch.float64 else 2.0**-149
    xs = []
    for i in range(count):
        x = torch.randn(size, generator=generator, dtype=torch.float64) * 10.0 ** (i % 7 - 3)
        x[::7] = tiny * (i + 1)
        x[5::13] = 2.0**24 + i % 2  # with the 0.5s below: sums halfway between two floats
        x[6::13] = 0.5
        x[7::17] = -0.0
        x[8::19] = float("inf") * (-1) ** i
        x[9::23] = float("nan")
        xs.append(x.to(dtype))
    return xs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "weights",
    [[7.0 + 13 * i for i in range(7)], [1 / (3 + i) for i in range(7)], [1.0] * 7, [(1 << 29) - 1.0] * 7],
    ids=["integers", "fractions", "ones", "largest-exact"],
)
def test_fused_kernel_gives_the_sequential_fold_bits_at_any_thread_count(
    dtype: torch.dtype, weights: list[float]
) -> None:
    """The numba kernel (float32/float64 updates) against ``fold_scaled_`` update by update: the same
    bits, NaN payloads and infinities included, with 1 and 2 threads (a thread owns whole tiles)."""
    xs = _awkward(dtype, 2 * FUSED_TILE + 11, len(weights))
    expected = torch.zeros(xs[0].shape, dtype=torch.float64)
    for x, w in zip(xs, weights, strict=True):
        fold_scaled_(expected, x, w)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            got = torch.zeros(xs[0].shape, dtype=torch.float64)
            fold_scaled_(got, xs[0], weights[0])  # a running sum that already holds an update
            assert fold_fused_(got, xs[1:], weights[1:])
            assert torch.equal(got.view(torch.int64), expected.view(torch.int64))
    finally:
        torch.set_num_threads(threads)
    assert not fold_fused_(expected, [x.to(torch.bfloat16) for x in xs], weights)  # torch loop instead
