"""Builders for the policy tests (a module, not a conftest): a task, a catalog, weights, an update."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from governance.policies import Candidate, PolicyContext
from meshfl.events import (
    Column,
    DataProductDescriptor,
    DataProductRef,
    ModelSpec,
    ModelUpdate,
    TrainingTask,
)

FEATURES = ["age", "income"]
LABEL = "churn"


def make_task(**overrides: Any) -> TrainingTask:
    fields: dict[str, Any] = {
        "id": "churn-v1",
        "model": ModelSpec(input_dim=2, hidden=[], output_dim=3),
        "features": FEATURES,
        "label": LABEL,
        "num_classes": 3,
        "rounds": 5,
    }
    fields.update(overrides)
    return TrainingTask(**fields)


def make_product(domain: str = "sales", **overrides: Any) -> DataProductDescriptor:
    fields: dict[str, Any] = {
        "id": f"{domain}.customers",
        "domain": domain,
        "owner": f"{domain}-team",
        "version": "1.0.0",
        "columns": [
            Column(name="age", logical_type="integer"),
            Column(name="income", logical_type="number"),
            Column(name="churn", logical_type="integer"),
        ],
        "num_rows": 1000,
    }
    fields.update(overrides)
    return DataProductDescriptor(**fields)


def make_global() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {
        "fc.weight": torch.randn(3, 2, generator=generator),
        "fc.bias": torch.randn(3, generator=generator),
    }


def make_update(**overrides: Any) -> ModelUpdate:
    fields: dict[str, Any] = {
        "update_id": "u-1",
        "task_id": "churn-v1",
        "round": 1,
        "base_version": 0,
        "domain": "sales",
        "data_products": [DataProductRef(id="sales.customers", version="1.0.0")],
        "num_examples": 800,
        "tensors": [],
    }
    fields.update(overrides)
    return ModelUpdate(**fields)


def shifted(weights: Mapping[str, torch.Tensor], delta: float) -> dict[str, torch.Tensor]:
    """Weights moved by ``delta`` in every coordinate (a delta of L2 norm |delta| * sqrt(9))."""
    return {name: tensor + delta for name, tensor in weights.items()}


def make_ctx(task: TrainingTask | None = None, **overrides: Any) -> PolicyContext:
    global_weights = overrides.pop("global_weights", make_global())
    fields: dict[str, Any] = {
        "task": task or make_task(),
        "open_round": 1,
        "latest_version": 0,
        "global_weights": global_weights,
        "expected": {name: (tuple(t.shape), t.dtype) for name, t in global_weights.items()},
        "catalog": {"sales": [make_product("sales")], "ops": [make_product("ops")]},
        "decided_update_ids": frozenset(),
        "accepted_domains_this_round": frozenset(),
    }
    fields.update(overrides)
    return PolicyContext(**fields)


def make_candidate(ctx: PolicyContext, delta: float = 0.01, **update_overrides: Any) -> Candidate:
    return Candidate(update=make_update(**update_overrides), weights=shifted(ctx.global_weights, delta))
