"""Local training: reproducible bytes, inputs untouched, FedProx, evaluation, errors."""

from __future__ import annotations

import pytest
import torch

from meshfl.domain.training import evaluate, learning_rate_at, local_seed, train_centralized, train_local
from meshfl.errors import ConfigError, DataContractError
from meshfl.events import ModelSpec, TrainingTask
from meshfl.modelspec import initial_state


def _task(**changes: object) -> TrainingTask:
    fields: dict[str, object] = {
        "id": "blobs",
        "model": ModelSpec(input_dim=4, hidden=[16], output_dim=3),
        "features": ["a", "b", "c", "d"],
        "label": "y",
        "num_classes": 3,
        "rounds": 1,
        "local_epochs": 3,
        "batch_size": 16,
        "learning_rate": 0.05,
        "seed": 3,
    }
    fields.update(changes)
    return TrainingTask.model_validate(fields)


def _blobs(n: int = 120, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    return centres[y] + 0.5 * torch.randn(n, 4, generator=generator), y


def _bytes(state: dict[str, torch.Tensor]) -> list[bytes]:
    return [state[k].numpy().tobytes() for k in sorted(state)]


def test_same_seed_same_bytes_and_global_state_untouched() -> None:
    task = _task(model=ModelSpec(input_dim=4, hidden=[16], output_dim=3, dropout=0.2))
    x, y = _blobs()
    start = initial_state(task.model, task.seed)
    frozen = {k: v.clone() for k, v in start.items()}
    first = train_local(task, start, x, y, seed=11)
    second = train_local(task, start, x, y, seed=11)
    other = train_local(task, start, x, y, seed=12)
    assert _bytes(first.state) == _bytes(second.state)
    assert _bytes(first.state) != _bytes(other.state)
    assert all(torch.equal(start[k], frozen[k]) for k in start)
    assert first.num_examples == 120
    assert first.metrics["train_loss"] == second.metrics["train_loss"]
    assert set(first.metrics) == {"train_loss", "seconds"}


def test_training_learns_and_reports_holdout() -> None:
    task = _task()
    x, y = _blobs(150)
    x_ho, y_ho = _blobs(60, seed=1)
    start = initial_state(task.model, task.seed)
    before = evaluate(task.model, start, x_ho, y_ho)
    result = train_local(task, start, x, y, seed=0, holdout=(x_ho, y_ho))
    after = evaluate(task.model, result.state, x_ho, y_ho)
    assert after["loss"] < before["loss"] and after["accuracy"] >= 0.9
    assert result.metrics["holdout_accuracy"] == after["accuracy"]
    assert result.metrics["holdout_loss"] == pytest.approx(after["loss"])
    assert after["num_examples"] == 60


def test_adam() -> None:
    task = _task(optimizer="adam", learning_rate=0.01)
    x, y = _blobs()
    result = train_local(task, initial_state(task.model, 0), x, y, seed=0, holdout=_blobs(60, seed=1))
    assert result.metrics["holdout_accuracy"] >= 0.9


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(sum(((a[k] - b[k]) ** 2).sum() for k in a) ** 0.5)


def test_fedprox_term() -> None:
    task = _task(local_epochs=5)
    x, y = _blobs()
    start = initial_state(task.model, task.seed)
    plain = train_local(task, start, x, y, seed=4)
    mu_zero = train_local(task, start, x, y, seed=4, proximal_mu=0.0)
    prox = train_local(task, start, x, y, seed=4, proximal_mu=1.0)
    assert _bytes(plain.state) == _bytes(mu_zero.state)
    assert _bytes(prox.state) != _bytes(plain.state)
    assert _distance(prox.state, start) < _distance(plain.state, start)
    with pytest.raises(ConfigError, match="proximal_mu"):
        train_local(task, start, x, y, seed=4, proximal_mu=-1.0)


def test_centralized_starts_from_version_zero() -> None:
    task = _task()
    x, y = _blobs()
    centralized = train_centralized(task, x, y, epochs=task.local_epochs, seed=9)
    local = train_local(task, initial_state(task.model, task.seed), x, y, seed=9)
    assert _bytes(centralized.state) == _bytes(local.state)


def test_errors() -> None:
    task = _task()
    x, y = _blobs()
    start = initial_state(task.model, 0)
    wrong = initial_state(ModelSpec(input_dim=4, hidden=[8], output_dim=3), 0)
    with pytest.raises(ConfigError, match="does not fit"):
        train_local(task, wrong, x, y, seed=0)
    with pytest.raises(ConfigError, match="does not fit"):
        train_local(task, {k: v for k, v in start.items() if k != "layers.1.bias"}, x, y, seed=0)
    with pytest.raises(DataContractError, match="shape"):
        train_local(task, start, x[:, :3], y, seed=0)
    with pytest.raises(DataContractError, match="float32"):
        train_local(task, start, x.double(), y, seed=0)
    with pytest.raises(DataContractError, match="labels for"):
        train_local(task, start, x, y[:-1], seed=0)
    with pytest.raises(DataContractError, match="no rows"):
        train_local(task, start, x[:0], y[:0], seed=0)
    with pytest.raises(ConfigError, match="optimizer"):
        train_local(_task(optimizer="rmsprop"), start, x, y, seed=0)


def test_local_seed() -> None:
    assert local_seed(1, "retail", 3) == local_seed(1, "retail", 3)
    assert len({local_seed(1, "retail", 3), local_seed(1, "retail", 4), local_seed(1, "finance", 3)}) == 3
    assert 0 <= local_seed(7, "x", 0) < 2**63


def test_cosine_schedule_decays_over_rounds_and_the_baseline_follows_it() -> None:
    task = _task(rounds=4, local_epochs=2, learning_rate=0.2, lr_schedule="cosine")
    rates = [learning_rate_at(task, r) for r in range(1, 6)]
    assert rates[0] == 0.2 and rates[1] == pytest.approx(0.1 * (1 + 2**-0.5))
    assert rates[2] == pytest.approx(0.1) and rates[3] < rates[2] and rates[4] == rates[3]  # async: held
    assert learning_rate_at(_task(rounds=4), 3) == 0.05  # constant by default
    x, y = _blobs()
    start = initial_state(task.model, task.seed)
    # round 3 at rate 0.1 is the same training as a constant-rate task at 0.1
    scheduled = train_local(task, start, x, y, seed=5, round_=3)
    constant = train_local(_task(rounds=4, local_epochs=2, learning_rate=0.1), start, x, y, seed=5)
    assert all(torch.equal(scheduled.state[k], constant.state[k]) for k in start)
    assert not torch.equal(
        train_local(task, start, x, y, seed=5, round_=1).state["layers.0.weight"],
        scheduled.state["layers.0.weight"],
    )
    # the centralized baseline over rounds x local epochs walks the same rates, epoch by epoch
    baseline = train_centralized(task, x, y, epochs=8, seed=5)
    assert baseline.num_examples == 120
    with pytest.raises(ConfigError, match="lr_schedule"):
        learning_rate_at(_task(lr_schedule="step"), 1)
