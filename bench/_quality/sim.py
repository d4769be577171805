"""A synchronous federation run in one process with the project's own training and aggregation functions.

Each domain trains as its agent does (:func:`train_local` on :func:`prepare_local_data`'s rows, seeded with
:func:`round_seed`), so a run here follows the same arithmetic as ``meshfl demo`` over Kafka; versions come
from :func:`aggregate_version`. A poisoned domain is simulated by rewriting what it would publish
(:mod:`bench._quality.attacks`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from governance.rounds import aggregate_version, initial_version
from governance.strategies import ClientUpdate
from meshfl.datasets import find_testset, materialize
from meshfl.domain.agent import round_seed, update_id_for
from meshfl.domain.config import discover_domains, load_domain
from meshfl.domain.data import LocalData, load_xy_file, prepare_local_data, product_serves
from meshfl.domain.tasks import load_task_file
from meshfl.domain.training import evaluate, train_centralized, train_local
from meshfl.events import TrainingTask
from meshfl.tensors import from_wire

REPO = Path(__file__).resolve().parents[2]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # fixed version timestamps: they are not part of the weights


@dataclass(frozen=True)
class Federation:
    """A task file's domains, their local rows (holdout split off as the agent does) and the test set."""

    task: TrainingTask
    domains: list[str]
    data: list[LocalData]
    x_test: torch.Tensor
    y_test: torch.Tensor

    def with_task(self, **overrides: object) -> Federation:
        return Federation(
            self.task.model_copy(update=overrides), self.domains, self.data, self.x_test, self.y_test
        )


def load_federation(task_name: str, domains_root: Path = REPO / "domains") -> Federation:
    """Materialize the example data (idempotent) and load ``domains/tasks/<task_name>.toml``'s federation."""
    materialize(domains_root)
    task = load_task_file(domains_root / "tasks" / f"{task_name}.toml")
    configs = [load_domain(d) for d in discover_domains(domains_root)]
    serving = [c for c in configs if any(product_serves(p, task) is None for p in c.data_products)]
    x_test, y_test = load_xy_file(find_testset(domains_root, task), task)
    return Federation(
        task=task,
        domains=[c.name for c in serving],
        data=[prepare_local_data(c, task) for c in serving],
        x_test=x_test,
        y_test=y_test,
    )


def accuracy(fed: Federation, weights: Mapping[str, torch.Tensor]) -> float:
    return evaluate(fed.task.model, weights, fed.x_test, fed.y_test)["accuracy"]


def centralized_accuracy(fed: Federation) -> float:
    """The demo's baseline: the pooled training rows, ``rounds x local_epochs`` epochs, same model."""
    x = torch.cat([d.x_train for d in fed.data])
    y = torch.cat([d.y_train for d in fed.data])
    epochs = fed.task.rounds * fed.task.local_epochs
    return accuracy(fed, train_centralized(fed.task, x, y, epochs=epochs, seed=fed.task.seed).state)


Publish = Callable[[Mapping[str, torch.Tensor], dict[str, torch.Tensor]], dict[str, torch.Tensor]]
"""``(base, honest local weights) -> what the domain publishes``."""


@dataclass(frozen=True)
class Adversary:
    """One compromised domain: what it trains on (``labels``) and what it publishes (``publish``)."""

    domain: str
    labels: Callable[[torch.Tensor, int], torch.Tensor] | None = None
    publish: Publish | None = None


def run_sync(fed: Federation, adversary: Adversary | None = None) -> list[float]:
    """Test accuracy after every round of a synchronous federation over all of ``fed``'s domains."""
    task = fed.task
    version = initial_version(task)
    weights = from_wire(version.tensors)
    server_state: dict[str, torch.Tensor] = {}
    mu = float(task.strategy.params.get("proximal_mu", 0.0))
    curve: list[float] = []
    for round_ in range(1, task.rounds + 1):
        updates = []
        for name, data in zip(fed.domains, fed.data, strict=True):
            hostile = adversary is not None and adversary.domain == name
            y = data.y_train
            if hostile and adversary.labels is not None:
                y = adversary.labels(y, task.num_classes)
            seed = round_seed(task, round_, name)
            local = train_local(
                task, weights, data.x_train, y, seed=seed, proximal_mu=mu, round_=round_
            ).state
            if hostile and adversary.publish is not None:
                local = adversary.publish(weights, local)
            updates.append(
                ClientUpdate(
                    update_id=update_id_for(task.id, round_, name),
                    domain=name,
                    weights=local,
                    num_examples=int(data.x_train.shape[0]),
                )
            )
        version = aggregate_version(task, version, weights, server_state, updates, created_at=EPOCH)
        weights, server_state = from_wire(version.tensors), from_wire(version.server_state)
        curve.append(accuracy(fed, weights))
    return curve
