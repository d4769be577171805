"""The committed digits task learns: centralized, and federated over the five skewed domains in-process.

This validates ``domains/tasks/digits.toml`` before the real federation (Kafka, governance) uses it: each
domain trains as its agent does (holdout split off, the agent's per-round seed and learning rate), and every
version is made by ``governance.rounds.aggregate_version`` with the task's strategy, as governance makes it.
The task's settings come from ``bench/sweep.py``: at least 0.99 of centralized on the same rows and budget.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from governance.rounds import aggregate_version, initial_version
from governance.strategies import ClientUpdate
from meshfl.datasets import find_testset
from meshfl.domain.agent import round_seed, update_id_for
from meshfl.domain.config import discover_domains, load_domain
from meshfl.domain.data import load_training_data, load_xy_file, prepare_local_data, product_serves
from meshfl.domain.training import evaluate, train_centralized, train_local
from meshfl.events import TrainingTask
from meshfl.tensors import from_wire

pytestmark = pytest.mark.slow


def _serving(mesh_root: Path, task: TrainingTask):
    configs = [load_domain(folder) for folder in discover_domains(mesh_root)]
    return [c for c in configs if any(product_serves(p, task) is None for p in c.data_products)]


def _federate(
    mesh_root: Path, task: TrainingTask
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The task's federation in process: the agents' seeds and rates, versions from aggregate_version."""
    domains = _serving(mesh_root, task)
    assert [d.name for d in domains] == [
        "digits-finance",
        "digits-logistics",
        "digits-marketing",
        "digits-retail",
        "digits-support",
    ]
    local = [prepare_local_data(domain, task) for domain in domains]
    version = initial_version(task)
    state, server_state = from_wire(version.tensors), {}
    for round_ in range(1, task.rounds + 1):
        updates = [
            ClientUpdate(
                update_id=update_id_for(task.id, round_, d.name),
                domain=d.name,
                weights=train_local(
                    task,
                    state,
                    data.x_train,
                    data.y_train,
                    seed=round_seed(task, round_, d.name),
                    round_=round_,
                ).state,
                num_examples=int(data.x_train.shape[0]),
            )
            for d, data in zip(domains, local, strict=True)
        ]
        version = aggregate_version(
            task, version, state, server_state, updates, created_at=version.created_at
        )
        state, server_state = from_wire(version.tensors), from_wire(version.server_state)
    return state, torch.cat([d.x_train for d in local]), torch.cat([d.y_train for d in local])


def test_centralized_digits_reaches_095(mesh_root: Path, digits_task: TrainingTask) -> None:
    x_test, y_test = load_xy_file(find_testset(mesh_root, digits_task), digits_task)
    parts = [load_training_data(d, digits_task) for d in _serving(mesh_root, digits_task)]
    x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    assert len(y) + len(y_test) == 1797
    result = train_centralized(digits_task, x, y, epochs=40, seed=digits_task.seed)
    accuracy = evaluate(digits_task.model, result.state, x_test, y_test)["accuracy"]
    assert accuracy >= 0.95, accuracy


def test_federated_digits_within_one_percent_of_centralized(
    mesh_root: Path, digits_task: TrainingTask
) -> None:
    torch.set_num_threads(1)  # as the agents and the demo: the bytes depend on the thread count
    x_test, y_test = load_xy_file(find_testset(mesh_root, digits_task), digits_task)
    federated, x_train, y_train = _federate(mesh_root, digits_task)
    budget = digits_task.rounds * digits_task.local_epochs
    centralized = train_centralized(digits_task, x_train, y_train, epochs=budget, seed=digits_task.seed)
    fed_accuracy = evaluate(digits_task.model, federated, x_test, y_test)["accuracy"]
    central_accuracy = evaluate(digits_task.model, centralized.state, x_test, y_test)["accuracy"]
    assert central_accuracy >= 0.95, central_accuracy
    assert fed_accuracy >= 0.99 * central_accuracy, (fed_accuracy, central_accuracy)
