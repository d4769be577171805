"""The committed digits task learns: centralized, and FedAvg over the five skewed domains in-process.

This validates ``domains/tasks/digits.toml`` before the real federation (Kafka, governance) uses it:
FedAvg [McMahan et al., 2017, arXiv:1602.05629] here is the plain weighted average of the domains'
states by ``num_examples``, each domain training as its agent does (its holdout split off, the
per-round seed from ``local_seed``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from meshfl.datasets import find_testset
from meshfl.domain.config import discover_domains, load_domain
from meshfl.domain.data import load_training_data, load_xy_file, prepare_local_data, product_serves
from meshfl.domain.training import evaluate, local_seed, train_centralized, train_local
from meshfl.events import TrainingTask
from meshfl.modelspec import initial_state

pytestmark = pytest.mark.slow


def _serving(mesh_root: Path, task: TrainingTask):
    configs = [load_domain(folder) for folder in discover_domains(mesh_root)]
    return [c for c in configs if any(product_serves(p, task) is None for p in c.data_products)]


def _fedavg(
    mesh_root: Path, task: TrainingTask
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    domains = _serving(mesh_root, task)
    assert [d.name for d in domains] == [
        "digits-finance",
        "digits-logistics",
        "digits-marketing",
        "digits-retail",
        "digits-support",
    ]
    local = [prepare_local_data(domain, task) for domain in domains]
    state = initial_state(task.model, task.seed)
    for round_ in range(1, task.rounds + 1):
        results = [
            train_local(task, state, data.x_train, data.y_train, seed=local_seed(task.seed, d.name, round_))
            for d, data in zip(domains, local, strict=True)
        ]
        total = sum(r.num_examples for r in results)
        state = {k: sum(r.state[k] * (r.num_examples / total) for r in results) for k in state}
    return state, torch.cat([d.x_train for d in local]), torch.cat([d.y_train for d in local])


def test_centralized_digits_reaches_095(mesh_root: Path, digits_task: TrainingTask) -> None:
    x_test, y_test = load_xy_file(find_testset(mesh_root, digits_task), digits_task)
    parts = [load_training_data(d, digits_task) for d in _serving(mesh_root, digits_task)]
    x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    assert len(y) + len(y_test) == 1797
    result = train_centralized(digits_task, x, y, epochs=40, seed=digits_task.seed)
    accuracy = evaluate(digits_task.model, result.state, x_test, y_test)["accuracy"]
    assert accuracy >= 0.95, accuracy


def test_fedavg_digits_close_to_centralized(mesh_root: Path, digits_task: TrainingTask) -> None:
    x_test, y_test = load_xy_file(find_testset(mesh_root, digits_task), digits_task)
    federated, x_train, y_train = _fedavg(mesh_root, digits_task)
    budget = digits_task.rounds * digits_task.local_epochs
    centralized = train_centralized(digits_task, x_train, y_train, epochs=budget, seed=digits_task.seed)
    fed_accuracy = evaluate(digits_task.model, federated, x_test, y_test)["accuracy"]
    central_accuracy = evaluate(digits_task.model, centralized.state, x_test, y_test)["accuracy"]
    assert central_accuracy >= 0.95, central_accuracy
    assert fed_accuracy >= 0.95 * central_accuracy, (fed_accuracy, central_accuracy)
