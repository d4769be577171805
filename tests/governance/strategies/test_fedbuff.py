"""FedBuff: staleness weights, hand-worked buffered aggregation and the reduction to FedAvg."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from strategy_helpers import random_updates, same_bits, tensors, update

from governance.strategies import ClientUpdate, FedAvg, FedBuff, staleness_weight


def test_staleness_weight_is_polynomial() -> None:
    assert staleness_weight(0, 0.5) == 1.0
    assert staleness_weight(3, 0.5) == 0.5  # 1 / sqrt(4)
    assert staleness_weight(3, 1.0) == 0.25
    assert staleness_weight(7, 0.0) == 1.0
    assert staleness_weight(7, 2.0) == pytest.approx(1 / 64)
    assert staleness_weight(2, 0.3) == pytest.approx(3**-0.3)
    with pytest.raises(ValueError):
        staleness_weight(-1, 0.5)


def test_hand_worked_buffer() -> None:
    # s = (1 + t) ** -0.5: fresh update (t = 0, n = 1) weight 1, stale one (t = 3, n = 2) weight 0.5 * 2 = 1.
    # g = [1, 1]; w - g = [1, 3] and [-3, 1]: mean delta = [-1, 2]; lr 0.5 -> g + 0.5 * [-1, 2] = [0.5, 2]
    updates = [
        update("fresh", tensors({"w": [2.0, 4.0]}), num_examples=1, staleness=0),
        update("stale", tensors({"w": [-2.0, 2.0]}), num_examples=2, staleness=3),
    ]
    result = FedBuff(server_learning_rate=0.5, staleness_alpha=0.5).aggregate(
        updates, tensors({"w": [1.0, 1.0]})
    )
    assert result.weights["w"].tolist() == [0.5, 2.0]
    assert result.state == {}


def test_matches_formula_on_random_data() -> None:
    global_weights = {"w": torch.randn(20, generator=torch.Generator().manual_seed(4))}
    updates = random_updates(40, 6, {"w": (20,)}, center=global_weights, scale=0.2, max_staleness=5)
    g = global_weights["w"].double().numpy()
    weights = [(1 + u.staleness) ** -0.7 * u.num_examples for u in updates]
    step = sum(w * (u.weights["w"].double().numpy() - g) for w, u in zip(weights, updates, strict=True))
    expected = g + 0.8 * step / sum(weights)
    result = FedBuff(server_learning_rate=0.8, staleness_alpha=0.7).aggregate(updates, global_weights)
    np.testing.assert_allclose(result.weights["w"].double().numpy(), expected, rtol=1.2e-7, atol=1e-7)


def test_without_staleness_discount_it_is_fedavg_bit_for_bit() -> None:
    updates = random_updates(41, 5, max_staleness=3)
    global_weights = {name: torch.zeros_like(t) for name, t in updates[0].weights.items()}
    buffered = FedBuff(staleness_alpha=0.0).aggregate(updates, global_weights)
    assert same_bits(buffered.weights, FedAvg().aggregate(updates, global_weights).weights)


def test_too_stale_updates_are_refused_also_when_streaming() -> None:
    strategy = FedBuff(max_staleness=2)
    global_weights = tensors({"w": [0.0]})
    late = update("late", tensors({"w": [1.0]}), staleness=3)
    with pytest.raises(ValueError, match="max_staleness"):
        strategy.aggregate([late], global_weights)
    accumulator = strategy.accumulator(global_weights)
    with pytest.raises(ValueError, match="max_staleness"):
        accumulator.add(late)
    accumulator.add(update("ok", tensors({"w": [1.0]}), staleness=2))
    assert accumulator.total_weight == pytest.approx(1 / math.sqrt(3))
    assert strategy.finalize(accumulator, global_weights).weights["w"].tolist() == [1.0]


def _based(domain: str, weights: dict, base: dict, num_examples: int = 1, staleness: int = 0) -> ClientUpdate:
    return ClientUpdate(
        update_id=f"{domain}-u",
        domain=domain,
        weights=weights,
        num_examples=num_examples,
        staleness=staleness,
        base=base,
    )


def test_a_stale_update_brings_its_own_delta_not_a_pull_back_to_its_base() -> None:
    # The domain trained from version b = [0, 0] and moved by [1, 2]; the global has meanwhile reached [5, 5].
    old, current = tensors({"w": [0.0, 0.0]}), tensors({"w": [5.0, 5.0]})
    stale = _based("stale", tensors({"w": [1.0, 2.0]}), old, staleness=3)
    result = FedBuff().aggregate([stale], current)
    assert result.weights["w"].tolist() == [6.0, 7.0]  # current + own delta
    assert FedBuff().aggregate([update("stale", stale.weights, staleness=3)], current).weights[
        "w"
    ].tolist() == [
        1.0,
        2.0,
    ]  # without its base the update would drag the model back to where it started


def test_hand_worked_buffer_of_deltas_against_own_bases() -> None:
    # weights: fresh 1 x 1, stale (t = 3) 0.5 x 2 = 1. deltas [1, 3] and [-3, 1]: mean [-1, 2]; lr 0.5.
    g = tensors({"w": [1.0, 1.0]})
    old = tensors({"w": [0.0, -1.0]})
    updates = [
        _based("fresh", tensors({"w": [2.0, 4.0]}), g, num_examples=1, staleness=0),
        _based("stale", tensors({"w": [-3.0, 0.0]}), old, num_examples=2, staleness=3),
    ]
    result = FedBuff(server_learning_rate=0.5).aggregate(updates, g)
    assert result.weights["w"].tolist() == [0.5, 2.0]


def test_deltas_against_bases_are_order_independent_and_touch_no_input() -> None:
    g = {"w": torch.randn(33, generator=torch.Generator().manual_seed(1))}
    made = random_updates(50, 6, {"w": (33,)}, center=g, scale=0.3, max_staleness=3)
    bases = random_updates(51, 6, {"w": (33,)}, center=g, scale=0.1)
    updates = [
        _based(u.domain, u.weights, b.weights, u.num_examples, u.staleness)
        for u, b in zip(made, bases, strict=True)
    ]
    snapshot = [(u.weights["w"].clone(), u.base["w"].clone()) for u in updates]
    g_before = g["w"].clone()
    first = FedBuff(server_learning_rate=0.7).aggregate(updates, g)
    again = FedBuff(server_learning_rate=0.7).aggregate(list(reversed(updates)), g)
    assert same_bits(first.weights, again.weights)
    assert all(
        torch.equal(u.weights["w"], w) and torch.equal(u.base["w"], b)
        for u, (w, b) in zip(updates, snapshot, strict=True)
    )
    assert torch.equal(g["w"], g_before)
    s = [(1 + u.staleness) ** -0.5 * u.num_examples for u in updates]
    step = sum(w * (u.weights["w"].double() - u.base["w"].double()) for w, u in zip(s, updates, strict=True))
    expected = g["w"].double() + 0.7 * step / sum(s)
    np.testing.assert_allclose(first.weights["w"].double().numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)


def test_a_buffer_mixing_based_and_unbased_updates_is_refused() -> None:
    g = tensors({"w": [0.0]})
    mixed = [_based("a", tensors({"w": [1.0]}), g), update("b", tensors({"w": [2.0]}))]
    with pytest.raises(ValueError, match="base"):
        FedBuff().aggregate(mixed, g)
    with pytest.raises(ValueError, match="shape"):
        FedBuff().aggregate([_based("a", tensors({"w": [1.0]}), tensors({"w": [1.0, 2.0]}))], g)


def test_server_momentum_accumulates_the_buffered_deltas() -> None:
    # delta of each buffer: [2, -1] then [1, 1]; m 0.5, lr 0.5: v1 = [2, -1] -> w1 = g + 0.5 v1 = [1, -0.5];
    # v2 = 0.5 v1 + [1, 1] = [2, 0.5] -> w2 = w1 + 0.5 v2 = [2, -0.25]
    strategy = FedBuff(server_learning_rate=0.5, server_momentum=0.5)
    g = tensors({"w": [0.0, 0.0]})
    first = strategy.aggregate([_based("a", tensors({"w": [2.0, -1.0]}), g)], g)
    assert first.weights["w"].tolist() == [1.0, -0.5]
    assert first.state["momentum.w"].dtype == torch.float64
    assert first.state["momentum.w"].tolist() == [2.0, -1.0]
    w1 = first.weights
    old = tensors({"w": [-1.0, 0.0]})  # a stale update's own base: its delta is [1, 1]
    second = strategy.aggregate([_based("b", tensors({"w": [0.0, 1.0]}), old, staleness=0)], w1, first.state)
    assert second.weights["w"].tolist() == [2.0, -0.25]
    assert second.state["momentum.w"].tolist() == [2.0, 0.5]
    with pytest.raises(ValueError):  # a foreign or partial state is refused, never silently restarted
        strategy.aggregate([_based("c", w1, w1)], w1, {"velocity.w": first.state["momentum.w"]})
    with pytest.raises(ValueError):
        FedBuff(server_momentum=1.0)
