"""From a domain's data products to the tensors a task trains on, and which products can serve it.

A product serves a task when its contract has every feature as a numeric column (number, integer,
boolean) and the label as an integer or boolean column, and it is published (active or deprecated).
That is decided on the contract alone (``serves``), so governance can decide it from the catalog
descriptor without seeing data. Loading then checks the file against the contract and that the labels
fit ``num_classes``. Rows with a null in a used (optional) column are dropped and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from meshfl.domain.config import DataProductConfig, DomainConfig
from meshfl.domain.contract import LABEL_TYPES, NUMERIC_TYPES, check_contract, non_null_mask, read_table
from meshfl.errors import DataContractError
from meshfl.events import Column, DataProductDescriptor, DataProductRef, DataProductStatus, TrainingTask
from meshfl.logs import get_logger

log = get_logger(__name__)

XY = tuple[torch.Tensor, torch.Tensor]
"""Features (float32, rows x features) and labels (int64 class indices)."""

SERVING_STATUSES: frozenset[DataProductStatus] = frozenset(
    {DataProductStatus.ACTIVE, DataProductStatus.DEPRECATED}
)


def _reason(columns: Sequence[Column], status: DataProductStatus, task: TrainingTask) -> str | None:
    problems: list[str] = []
    if status not in SERVING_STATUSES:
        problems.append(f"status is {status.value}, not active or deprecated")
    by_name = {c.name: c for c in columns}
    missing = [f for f in task.features if f not in by_name]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        problems.append(f"missing feature column(s) {shown}")
    for feature in task.features:
        column = by_name.get(feature)
        if column is not None and column.logical_type not in NUMERIC_TYPES:
            problems.append(f"feature {feature!r} is {column.logical_type}, not numeric")
    label = by_name.get(task.label)
    if label is None:
        problems.append(f"missing label column {task.label!r}")
    elif label.logical_type not in LABEL_TYPES:
        problems.append(f"label {task.label!r} is {label.logical_type}, not integer or boolean")
    return "; ".join(problems) or None


def serves(descriptor: DataProductDescriptor, task: TrainingTask) -> str | None:
    """None if the product's contract can serve ``task``, else the reason it cannot."""
    return _reason(descriptor.columns, descriptor.status, task)


def product_serves(product: DataProductConfig, task: TrainingTask) -> str | None:
    """``serves`` for a product of the local config (no file read, no quality measured)."""
    return _reason(product.columns, product.status, task)


def table_to_xy(
    table: pa.Table, features: Sequence[str], label: str, num_classes: int, *, source: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features as float32 ``(n, d)`` and labels as int64 ``(n,)``; rows with a null are dropped.

    Raises ``DataContractError`` when a label is outside ``[0, num_classes)``.
    """
    used = [*features, label]
    table = table.select(used)
    mask = non_null_mask(table, used)
    kept = table.filter(mask)
    dropped = table.num_rows - kept.num_rows
    if dropped:
        log.info("rows with nulls dropped", source=source, dropped=dropped, kept=kept.num_rows)
    columns = [pc.cast(kept.column(f), pa.float32()).to_numpy() for f in features]
    x = np.stack(columns, axis=1) if columns else np.zeros((kept.num_rows, 0), np.float32)
    y = pc.cast(kept.column(label), pa.int64()).to_numpy()
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataContractError(
            f"{source}: label {label!r} has values in [{y.min()}, {y.max()}], outside [0, {num_classes})"
        )
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))


def load_training_data(
    domain: DomainConfig, task: TrainingTask
) -> tuple[torch.Tensor, torch.Tensor, list[DataProductRef]]:
    """Rows of every product of ``domain`` that serves ``task``, concatenated in config order.

    Each file is checked against its own contract first. Raises ``DataContractError`` when no product
    serves the task (with each product's reason) or a serving product's file breaks its contract.
    """
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    refs: list[DataProductRef] = []
    reasons: list[str] = []
    for product in domain.data_products:
        reason = product_serves(product, task)
        if reason is not None:
            reasons.append(f"{product.id}: {reason}")
            log.info(
                "data product does not serve task", domain=domain.name, product=product.id, reason=reason
            )
            continue
        table = read_table(domain.product_path(product), product.columns, product.file_format)
        check_contract(table, product.columns, product_id=product.id)
        x, y = table_to_xy(table, task.features, task.label, task.num_classes, source=product.id)
        xs.append(x)
        ys.append(y)
        refs.append(DataProductRef(id=product.id, version=product.version))
    if not refs:
        detail = "; ".join(reasons) or "the domain has no data products"
        raise DataContractError(f"domain {domain.name!r} cannot serve task {task.id!r}: {detail}")
    return torch.cat(xs), torch.cat(ys), refs


def split_holdout(x: torch.Tensor, y: torch.Tensor, *, fraction: float, seed: int) -> tuple[XY, XY | None]:
    """A seeded random split into ``((x_train, y_train), (x_holdout, y_holdout) or None)``.

    ``floor(n * fraction)`` rows are held out, leaving at least one training row; the holdout is
    None when that is zero rows. The permutation comes from a private ``torch.Generator``, so it is
    the same on every machine and leaves the global RNG alone. Inputs are not modified.
    """
    n = x.shape[0]
    n_holdout = min(int(n * fraction), max(n - 1, 0))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    hold, train = order[:n_holdout].sort().values, order[n_holdout:].sort().values
    return (x[train], y[train]), ((x[hold], y[hold]) if n_holdout else None)


@dataclass(frozen=True)
class LocalData:
    """What a domain agent trains and evaluates on for one task."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    holdout: XY | None
    refs: list[DataProductRef]


def prepare_local_data(domain: DomainConfig, task: TrainingTask, *, seed: int | None = None) -> LocalData:
    """Load the task's rows and split off the domain's holdout (``[training] holdout_fraction``).

    The split seed defaults to ``task.seed`` so the holdout rows stay the same in every round:
    a holdout that moved between rounds would have been trained on.
    """
    x, y, refs = load_training_data(domain, task)
    split_seed = task.seed if seed is None else seed
    (x_train, y_train), holdout = split_holdout(
        x, y, fraction=domain.training.holdout_fraction, seed=split_seed
    )
    return LocalData(x_train=x_train, y_train=y_train, holdout=holdout, refs=refs)


def load_xy_file(path: Path | str, task: TrainingTask) -> XY:
    """The task's features and labels from a Parquet or CSV file outside any domain (a global test set).

    Raises ``DataContractError`` if the file is missing, unreadable or lacks a column.
    """
    columns = [Column(name=f, logical_type="number") for f in task.features]
    columns.append(Column(name=task.label, logical_type="integer"))
    table = read_table(Path(path), columns)
    missing = [c.name for c in columns if c.name not in table.column_names]
    if missing:
        raise DataContractError(f"{path}: missing column(s) {', '.join(missing[:5])}")
    return table_to_xy(table, task.features, task.label, task.num_classes, source=str(path))
