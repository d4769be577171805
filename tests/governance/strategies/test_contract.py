"""The contract every registered strategy keeps, its robustness to one Byzantine domain, and the registry."""

from __future__ import annotations

import random

import pytest
import torch
from strategy_helpers import clone_weights, flatten, random_updates, same_bits, tensors, update

import governance.strategies as strategies
from governance.strategies import STRATEGIES, ClientUpdate, Strategy, build_strategy
from meshfl.errors import ConfigError

NAMES = sorted(STRATEGIES)
COUNT = 7  # enough for Bulyan's n >= 4f + 3 with the default f = 1


def global_for(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(99)
    return {
        "fc.weight": torch.randn(4, 3, generator=generator).to(dtype),
        "fc.bias": torch.randn(4, generator=generator).to(dtype),
        "bn.num_batches_tracked": torch.tensor(10),
    }


def updates_for(global_weights: dict[str, torch.Tensor], seed: int) -> list[ClientUpdate]:
    shapes = {k: tuple(v.shape) for k, v in global_weights.items() if v.dtype.is_floating_point}
    dtype = global_weights["fc.weight"].dtype
    made = random_updates(seed, COUNT, shapes, dtype=dtype, center=global_weights, scale=0.1, max_staleness=2)
    return [
        ClientUpdate(
            update_id=u.update_id,
            domain=u.domain,
            weights={**u.weights, "bn.num_batches_tracked": torch.tensor(10 + i)},
            num_examples=u.num_examples,
            staleness=u.staleness,
        )
        for i, u in enumerate(made)
    ]


@pytest.mark.parametrize("name", NAMES)
def test_order_independent_bit_for_bit_over_two_rounds(name: str) -> None:
    strategy = build_strategy(name, {})
    global_weights = global_for()
    first_round, second_round = updates_for(global_weights, 1), updates_for(global_weights, 2)
    first = strategy.aggregate(first_round, global_weights)
    reference = strategy.aggregate(second_round, first.weights, first.state or None)
    for seed in range(3):
        shuffled_first, shuffled_second = first_round[:], second_round[:]
        random.Random(seed).shuffle(shuffled_first)
        random.Random(seed + 10).shuffle(shuffled_second)
        again = strategy.aggregate(shuffled_first, global_weights)
        assert same_bits(again.weights, first.weights) and same_bits(again.state, first.state)
        later = strategy.aggregate(shuffled_second, again.weights, again.state or None)
        assert same_bits(later.weights, reference.weights) and same_bits(later.state, reference.state)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_are_neither_mutated_nor_aliased(name: str) -> None:
    strategy = build_strategy(name, {})
    global_weights = global_for()
    first = strategy.aggregate(updates_for(global_weights, 3), global_weights)
    updates = updates_for(first.weights, 4)
    snapshots = [clone_weights(u.weights) for u in updates]
    weights_before, state_before = clone_weights(first.weights), clone_weights(first.state)
    result = strategy.aggregate(updates, first.weights, first.state or None)
    assert all(same_bits(u.weights, s) for u, s in zip(updates, snapshots, strict=True))
    assert same_bits(first.weights, weights_before) and same_bits(first.state, state_before)
    inputs = [t.untyped_storage().data_ptr() for u in updates for t in u.weights.values()]
    inputs += [t.untyped_storage().data_ptr() for t in [*first.weights.values(), *first.state.values()]]
    outputs = [t.untyped_storage().data_ptr() for t in [*result.weights.values(), *result.state.values()]]
    assert not set(inputs) & set(outputs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_output_dtypes_and_shapes_equal_the_global_ones(name: str, dtype: torch.dtype) -> None:
    global_weights = global_for(dtype)
    result = build_strategy(name, {}).aggregate(updates_for(global_weights, 5), global_weights)
    assert result.weights.keys() == global_weights.keys()
    for key, reference in global_weights.items():
        assert result.weights[key].dtype == reference.dtype
        assert result.weights[key].shape == reference.shape
        assert torch.isfinite(result.weights[key].double()).all()
    assert all(t.dtype == torch.float64 for t in result.state.values())


@pytest.mark.parametrize("name", NAMES)
def test_invalid_inputs_raise_value_error(name: str) -> None:
    strategy = build_strategy(name, {})
    global_weights = global_for()
    updates = updates_for(global_weights, 6)
    with pytest.raises(ValueError, match="empty"):
        strategy.aggregate([], global_weights)
    renamed = {("fc.w" if k == "fc.weight" else k): v for k, v in updates[0].weights.items()}
    with pytest.raises(ValueError, match="names"):
        strategy.aggregate([update("zz", renamed), *updates[1:]], global_weights)
    reshaped = {**updates[0].weights, "fc.bias": torch.zeros(5)}
    with pytest.raises(ValueError, match="shape"):
        strategy.aggregate([update("zz", reshaped), *updates[1:]], global_weights)
    with pytest.raises(ValueError, match="duplicate"):
        strategy.aggregate([*updates, updates[0]], global_weights)


def honest_setup(count: int) -> tuple[dict[str, torch.Tensor], list[ClientUpdate]]:
    """Honest domains agree on a direction (global + delta) up to small noise."""
    generator = torch.Generator().manual_seed(7)
    global_weights = {"w": torch.randn(64, generator=generator)}
    target = {"w": global_weights["w"] + 0.5 * torch.randn(64, generator=generator)}
    updates = random_updates(8, count, {"w": (64,)}, center=target, scale=0.01)
    return global_weights, [update(u.domain, u.weights, 100) for u in updates]


@pytest.mark.parametrize("attack", ["scaled x100", "sign-flipped"])
@pytest.mark.parametrize(
    ("name", "params", "count"),
    [
        ("krum", {"num_byzantine": 1}, 5),
        ("multikrum", {"num_byzantine": 1}, 5),
        ("fedmedian", {}, 5),
        ("fedtrimmedavg", {"beta": 0.2}, 5),
        ("bulyan", {"num_byzantine": 1}, 7),  # Bulyan needs n >= 4f + 3
        ("centeredclip", {}, 5),
    ],
)
def test_one_byzantine_update_moves_fedavg_but_not_robust_rules(
    name: str, params: dict[str, float], count: int, attack: str
) -> None:
    global_weights, updates = honest_setup(count)
    honest = updates[1:]
    honest_mean = torch.stack([flatten(u.weights) for u in honest]).mean(dim=0)
    spread = max(float(torch.linalg.vector_norm(flatten(u.weights) - honest_mean)) for u in honest)
    factor = 100.0 if attack == "scaled x100" else -1.0
    byzantine = update(updates[0].domain, {"w": updates[0].weights["w"] * factor}, 100)
    attacked = [byzantine, *honest]

    def distance(strategy: Strategy) -> float:
        result = strategy.aggregate(attacked, global_weights).weights
        return float(torch.linalg.vector_norm(flatten(result) - honest_mean))

    fedavg_distance = distance(build_strategy("fedavg", {}))
    robust_distance = distance(build_strategy(name, params))
    assert fedavg_distance > 20 * spread  # the mean follows the attacker
    assert robust_distance < 2 * spread  # the robust rule stays among the honest updates


def test_registry_lists_every_strategy_explicitly() -> None:
    expected = ["fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedmedian"]
    expected += [
        "fedtrimmedavg",
        "krum",
        "multikrum",
        "bulyan",
        "fedbuff",
        "normbound",
        "centeredclip",
        "trustscore",
    ]
    assert sorted(expected) == NAMES
    for name, cls in STRATEGIES.items():
        assert cls.name == name
        assert isinstance(build_strategy(name, {}), cls)
    assert set(strategies.__all__) >= {
        "STRATEGIES",
        "build_strategy",
        "ClientUpdate",
        "AggregateResult",
        "Strategy",
    }
    assert all(hasattr(strategies, symbol) for symbol in strategies.__all__)


def test_build_strategy_configures_and_rejects() -> None:
    multi = build_strategy("multikrum", {"num_byzantine": 2.0, "num_selected": 3})
    assert isinstance(multi, strategies.MultiKrum)
    assert multi.num_byzantine == 2 and isinstance(multi.num_byzantine, int) and multi.num_selected == 3
    adam = build_strategy("fedadam", {"eta": 0.5, "tau": 1e-4})
    assert isinstance(adam, strategies.FedAdam) and adam.eta == 0.5 and adam.tau == 1e-4
    with pytest.raises(ConfigError, match=r"allowed: .*fedavg"):
        build_strategy("fedsgd", {})
    with pytest.raises(ConfigError, match="allowed: server_learning_rate, server_momentum"):
        build_strategy("fedavgm", {"momentum": 0.9})
    with pytest.raises(ConfigError, match="integer"):
        build_strategy("krum", {"num_byzantine": 1.5})
    with pytest.raises(ConfigError, match="beta"):
        build_strategy("fedtrimmedavg", {"beta": 0.7})
    with pytest.raises(ConfigError, match="number"):
        build_strategy("fedprox", {"proximal_mu": "0.1"})  # type: ignore[dict-item]


def test_client_update_validates_its_counts() -> None:
    weights = tensors({"w": [0.0]})
    with pytest.raises(ValueError):
        ClientUpdate(update_id="u", domain="d", weights=weights, num_examples=0)
    with pytest.raises(ValueError):
        ClientUpdate(update_id="u", domain="d", weights=weights, num_examples=1, staleness=-1)
