"""FedAvgM and FedOpt (FedAdam, FedYogi, FedAdagrad): hand-worked rounds and Algorithm 2 transcribed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from strategy_helpers import random_updates, same_bits, tensors, update

from governance.strategies import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedOpt, FedYogi


def test_fedavgm_two_rounds_hand_worked() -> None:
    # round 1: g = [1, 1], FedAvg = [0.5, 2]: d = g - avg = [0.5, -1], v = d, w = g - 1 * v = [0.5, 2]
    # round 2: g = [0.5, 2], FedAvg = [0, 3]: d = [0.5, -1], v = 0.5 * [0.5, -1] + d = [0.75, -1.5],
    #          w = g - v = [-0.25, 3.5]
    strategy = FedAvgM(server_learning_rate=1.0, server_momentum=0.5)
    first = strategy.aggregate([update("a", tensors({"w": [0.5, 2.0]}))], tensors({"w": [1.0, 1.0]}))
    assert first.weights["w"].tolist() == [0.5, 2.0]
    assert first.state["momentum.w"].tolist() == [0.5, -1.0]
    assert first.state["momentum.w"].dtype == torch.float64
    second = strategy.aggregate([update("a", tensors({"w": [0.0, 3.0]}))], first.weights, first.state)
    assert second.weights["w"].tolist() == [-0.25, 3.5]
    assert second.state["momentum.w"].tolist() == [0.75, -1.5]


def test_fedavgm_without_momentum_is_stateless() -> None:
    # lr 0.5: w = g - 0.5 * (g - avg) = [1 - 0.25, 1 + 0.5]
    result = FedAvgM(server_learning_rate=0.5).aggregate(
        [update("a", tensors({"w": [0.5, 2.0]}))], tensors({"w": [1.0, 1.0]})
    )
    assert result.weights["w"].tolist() == [0.75, 1.5]
    assert result.state == {}


def test_fedadam_one_round_hand_worked() -> None:
    # beta_1 = beta_2 = 0 so m = delta and v = delta ** 2: g = 0, avg = [1, -2] (weights 1 and 3 of [4, 1]
    # and [0, -3]) -> delta = [1, -2], step = eta * delta / (|delta| + tau) = 0.1 * [1/1.001, -2/2.001]
    strategy = FedAdam(eta=0.1, beta_1=0.0, beta_2=0.0, tau=1e-3)
    updates = [update("a", tensors({"w": [4.0, 1.0]}), 1), update("b", tensors({"w": [0.0, -3.0]}), 3)]
    result = strategy.aggregate(updates, tensors({"w": [0.0, 0.0]}))
    expected = torch.tensor([0.1 * 1.0 / 1.001, 0.1 * -2.0 / 2.001], dtype=torch.float64).float()
    assert torch.equal(result.weights["w"], expected)
    assert result.state["m.w"].tolist() == [1.0, -2.0]
    assert result.state["v.w"].tolist() == [1.0, 4.0]


def test_fedyogi_one_round_hand_worked() -> None:
    # v_prev = tau**2 = 1e-6 < delta**2 = 1, so sign(v_prev - delta**2) = -1 and v = 1e-6 + 0.01 * 1;
    # m = 0.1 * delta = 0.1; w = 0 + 0.01 * 0.1 / (sqrt(0.010001) + 0.001)
    strategy = FedYogi(eta=0.01, beta_1=0.9, beta_2=0.99, tau=1e-3)
    result = strategy.aggregate([update("a", tensors({"w": [1.0]}))], tensors({"w": [0.0]}))
    assert result.state["v.w"].item() == pytest.approx(0.010001, rel=1e-15)
    assert result.weights["w"].item() == pytest.approx(0.001 / (math.sqrt(0.010001) + 0.001), rel=1e-7)


def test_fedadagrad_accumulates_squares() -> None:
    # v = tau**2 + 1 then + 4; beta_1 = 0 so m = delta
    strategy = FedAdagrad(eta=0.1, tau=1e-3)
    first = strategy.aggregate([update("a", tensors({"w": [1.0]}))], tensors({"w": [0.0]}))
    assert first.state["v.w"].item() == 1e-6 + 1.0
    second = strategy.aggregate(
        [update("a", tensors({"w": [first.weights["w"].item() - 2.0]}))], first.weights, first.state
    )
    assert second.state["v.w"].item() == pytest.approx(1e-6 + 1.0 + 4.0, rel=1e-7)


def algorithm_2(
    kind: str, rounds: list[list[tuple[np.ndarray, int]]], x: np.ndarray, hp: dict[str, float]
) -> list[np.ndarray]:
    """Reddi et al. 2021, Algorithm 2, transcribed with plain numpy float64 (pseudo-gradient: FedAvg - x)."""
    m = np.zeros_like(x)
    v = np.full_like(x, hp["tau"] ** 2)
    outputs = []
    for updates in rounds:
        total = sum(n for _, n in updates)
        delta = sum(w.astype(np.float64) * n for w, n in updates) / total - x
        m = hp["beta_1"] * m + (1 - hp["beta_1"]) * delta
        if kind == "adam":
            v = hp["beta_2"] * v + (1 - hp["beta_2"]) * delta**2
        elif kind == "yogi":
            v = v - (1 - hp["beta_2"]) * delta**2 * np.sign(v - delta**2)
        else:
            v = v + delta**2
        x = (x + hp["eta"] * m / (np.sqrt(v) + hp["tau"])).astype(np.float32).astype(np.float64)
        outputs.append(x)
    return outputs


@pytest.mark.parametrize(("cls", "kind"), [(FedAdam, "adam"), (FedYogi, "yogi"), (FedAdagrad, "adagrad")])
def test_fedopt_matches_algorithm_2_over_two_rounds(cls: type[FedOpt], kind: str) -> None:
    hp = {"eta": 0.05, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}
    strategy = cls(**hp)
    shapes = {"w": (5, 4)}
    global_weights = {"w": torch.randn(5, 4, generator=torch.Generator().manual_seed(0))}
    rounds = [random_updates(seed, 3, shapes, center=global_weights, scale=0.1) for seed in (20, 21)]
    expected = algorithm_2(
        kind,
        [[(u.weights["w"].numpy(), u.num_examples) for u in updates] for updates in rounds],
        global_weights["w"].double().numpy(),
        hp,
    )
    weights, state = global_weights, None
    for updates, reference in zip(rounds, expected, strict=True):
        result = strategy.aggregate(updates, weights, state)  # state carried over between rounds
        np.testing.assert_allclose(result.weights["w"].double().numpy(), reference, rtol=2e-7, atol=1e-9)
        weights, state = result.weights, result.state
    assert state is not None and set(state) == {"m.w", "v.w"}


def test_server_state_is_validated() -> None:
    strategy = FedAdam()
    global_weights = tensors({"w": [0.0, 0.0]})
    updates = [update("a", tensors({"w": [1.0, 1.0]}))]
    with pytest.raises(ValueError, match="missing"):
        strategy.aggregate(updates, global_weights, {"m.w": torch.zeros(2, dtype=torch.float64)})
    with pytest.raises(ValueError, match="float64"):
        strategy.aggregate(updates, global_weights, {"m.w": torch.zeros(2), "v.w": torch.zeros(2)})
    with pytest.raises(ValueError, match="extra"):
        FedAvg().aggregate(updates, global_weights, {"momentum.w": torch.zeros(2, dtype=torch.float64)})


def test_streaming_fedopt_equals_aggregate_and_state_replays() -> None:
    strategy = FedYogi()
    global_weights = {"w": torch.randn(6, generator=torch.Generator().manual_seed(1))}
    updates = random_updates(22, 4, {"w": (6,)}, center=global_weights, scale=0.1)
    first = strategy.aggregate(updates, global_weights)
    accumulator = strategy.accumulator(global_weights)
    for u in sorted(updates, key=lambda u: u.key):
        accumulator.add(u)
    streamed = strategy.finalize(accumulator, global_weights)
    assert same_bits(first.weights, streamed.weights) and same_bits(first.state, streamed.state)
    # a restarted service that reloads weights and state continues bit for bit
    later = random_updates(23, 4, {"w": (6,)}, center=first.weights, scale=0.1)
    reloaded = {k: v.clone() for k, v in first.state.items()}
    a = strategy.aggregate(later, first.weights, first.state)
    b = FedYogi().aggregate(later, {k: v.clone() for k, v in first.weights.items()}, reloaded)
    assert same_bits(a.weights, b.weights) and same_bits(a.state, b.state)


def test_integer_buffers_skip_the_server_optimizer() -> None:
    global_weights = {"w": torch.zeros(2), "count": torch.tensor(4)}
    updates = [update("a", {"w": torch.ones(2), "count": torch.tensor(6)})]
    result = FedAdam().aggregate(updates, global_weights)
    assert result.weights["count"].item() == 6
    assert set(result.state) == {"m.w", "v.w"}


def test_parameters_are_validated() -> None:
    with pytest.raises(ValueError):
        FedAdam(tau=0.0)
    with pytest.raises(ValueError):
        FedYogi(beta_1=1.0)
    with pytest.raises(ValueError):
        FedAvgM(server_momentum=1.0)
