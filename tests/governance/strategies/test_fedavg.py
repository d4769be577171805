"""FedAvg and its streaming accumulator: hand-worked values, exactness and the streaming guarantees."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from strategy_helpers import random_updates, same_bits, tensors, update

from governance.strategies import FedAvg, FedProx, proximal_term


def test_hand_worked_example() -> None:
    # w = (1 * [1, 2] + 3 * [3, 6]) / 4 = [2.5, 5]; b = (1 * 1 + 3 * -1) / 4 = -0.5
    global_weights = tensors({"w": [0.0, 0.0], "b": 0.0})
    updates = [
        update("a", tensors({"w": [1.0, 2.0], "b": 1.0}), num_examples=1),
        update("b", tensors({"w": [3.0, 6.0], "b": -1.0}), num_examples=3),
    ]
    result = FedAvg().aggregate(updates, global_weights)
    assert result.weights["w"].tolist() == [2.5, 5.0]
    assert result.weights["b"].item() == -0.5
    assert result.state == {}


def test_matches_the_defining_formula_bit_for_bit() -> None:
    updates = random_updates(10, 6)
    global_weights = {name: torch.zeros_like(t) for name, t in updates[0].weights.items()}
    result = FedAvg().aggregate(updates, global_weights)
    ordered = sorted(updates, key=lambda u: (u.domain, u.update_id))
    total = sum(u.num_examples for u in ordered)
    for name in global_weights:
        acc = np.zeros(global_weights[name].shape, dtype=np.float64)
        for u in ordered:  # float32 * int is exact in float64: the canonical sum has one rounding per add
            acc = acc + u.weights[name].numpy().astype(np.float64) * u.num_examples
        expected = torch.from_numpy(np.asarray(acc / total)).to(torch.float32)
        assert torch.equal(result.weights[name], expected)


def test_streaming_in_canonical_order_is_bit_identical_to_aggregate() -> None:
    updates = random_updates(11, 8)
    global_weights = {name: torch.zeros_like(t) for name, t in updates[0].weights.items()}
    strategy = FedAvg()
    accumulator = strategy.accumulator(global_weights)
    for u in sorted(updates, key=lambda u: u.key):
        accumulator.add(u)
    assert accumulator.count == 8
    assert accumulator.total_examples == sum(u.num_examples for u in updates)
    streamed = strategy.finalize(accumulator, global_weights)
    assert same_bits(streamed.weights, strategy.aggregate(updates, global_weights).weights)


def test_streaming_in_any_order_agrees_to_float32_rounding() -> None:
    updates = random_updates(12, 30, {"w": (200, 50)})
    global_weights = {"w": torch.zeros(200, 50)}
    reference = FedAvg().aggregate(updates, global_weights).weights["w"]
    for seed in range(3):
        arrival = updates[:]
        random.Random(seed).shuffle(arrival)
        accumulator = FedAvg().accumulator(global_weights)
        for u in arrival:
            accumulator.add(u)
        streamed = accumulator.result()["w"]
        # float64 sums differ by a few float64 ulps at most: the float32 results by at most one float32 ulp
        torch.testing.assert_close(streamed, reference, rtol=1.2e-7, atol=1e-12)
        ulps = (streamed.view(torch.int32).long() - reference.view(torch.int32).long()).abs()
        assert int(ulps.max()) <= 1


def test_accumulator_is_terminal_and_rejects_bad_updates() -> None:
    global_weights = tensors({"w": [0.0, 0.0]})
    accumulator = FedAvg().accumulator(global_weights)
    with pytest.raises(ValueError, match="empty"):
        accumulator.result()
    accumulator.add(update("a", tensors({"w": [1.0, 2.0]})))
    with pytest.raises(ValueError, match="duplicate"):
        accumulator.add(update("a", tensors({"w": [1.0, 2.0]})))
    with pytest.raises(ValueError, match="shape"):
        accumulator.add(update("b", tensors({"w": [1.0, 2.0, 3.0]})))
    with pytest.raises(ValueError, match="dtype"):
        accumulator.add(update("c", tensors({"w": [1.0, 2.0]}, dtype=torch.float64)))
    with pytest.raises(ValueError, match="names"):
        accumulator.add(update("d", tensors({"v": [1.0, 2.0]})))
    assert accumulator.count == 1
    assert accumulator.result()["w"].tolist() == [1.0, 2.0]
    with pytest.raises(RuntimeError):
        accumulator.add(update("e", tensors({"w": [1.0, 2.0]})))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_and_integer_buffers_are_preserved(dtype: torch.dtype) -> None:
    # num_batches_tracked-style integer buffers take the rounded weighted mean:
    # (10 * 1 + 13 * 3) / 4 = 12.25 -> 12
    global_weights = {"w": torch.zeros(2, dtype=dtype), "count": torch.tensor(0)}
    updates = [
        update("a", {"w": torch.tensor([1.0, 2.0], dtype=dtype), "count": torch.tensor(10)}, 1),
        update("b", {"w": torch.tensor([3.0, 6.0], dtype=dtype), "count": torch.tensor(13)}, 3),
    ]
    result = FedAvg().aggregate(updates, global_weights).weights
    assert result["w"].dtype == dtype
    assert result["w"].tolist() == [2.5, 5.0]
    assert result["count"].dtype == torch.int64
    assert result["count"].item() == 12


def test_fedprox_server_side_is_fedavg() -> None:
    updates = random_updates(13, 4)
    global_weights = {name: torch.zeros_like(t) for name, t in updates[0].weights.items()}
    assert same_bits(
        FedProx(proximal_mu=0.1).aggregate(updates, global_weights).weights,
        FedAvg().aggregate(updates, global_weights).weights,
    )


def test_proximal_term_value_and_gradient() -> None:
    # mu / 2 * ||w - w_g||^2 with w - w_g = [1, -2] and [3]: 0.5 / 2 * (1 + 4 + 9) = 3.5
    local = {"a": torch.tensor([1.0, 0.0], requires_grad=True), "b": torch.tensor([4.0], requires_grad=True)}
    global_weights = {"a": torch.tensor([0.0, 2.0]), "b": torch.tensor([1.0]), "buffer": torch.tensor(7)}
    term = proximal_term(local, global_weights, 0.5)
    assert term.item() == 3.5
    term.backward()
    # gradient mu * (w - w_g)
    assert local["a"].grad is not None and local["a"].grad.tolist() == [0.5, -1.0]
    assert local["b"].grad is not None and local["b"].grad.tolist() == [1.5]
    with pytest.raises(ValueError):
        proximal_term({"missing": torch.zeros(1)}, global_weights, 0.5)
    with pytest.raises(ValueError):
        FedProx(proximal_mu=-1.0)
