"""Small hand-made domains for the domain-side tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from meshfl.events import ModelSpec, TrainingTask

TASKS = Path(__file__).resolve().parents[2] / "domains" / "tasks"
"""The committed federation task files."""


def write_domain(folder: Path, toml: str, tables: dict[str, pa.Table] | None = None) -> Path:
    """A domain folder with ``domain.toml`` and Parquet files (relative path -> table)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "domain.toml").write_text(toml, encoding="utf-8")
    for relative, table in (tables or {}).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    return folder


SMALL_DOMAIN = """
name = "shop"
owner = "shop-data@example.com"
description = "a small test domain"

[[data_products]]
id = "shop.orders"
version = "2.1.0"
tags = ["sales"]
path = "data/orders.parquet"
contract_id = "orders"
contract_version = "1.2.0"

  [[data_products.columns]]
  name = "x1"
  logical_type = "number"

  [[data_products.columns]]
  name = "x2"
  logical_type = "integer"

  [[data_products.columns]]
  name = "note"
  logical_type = "string"
  required = false

  [[data_products.columns]]
  name = "y"
  logical_type = "integer"
"""


def small_table(n: int = 10, *, note_nulls: int = 0) -> pa.Table:
    notes = [None if i < note_nulls else f"order {i}" for i in range(n)]
    return pa.table(
        {
            "x1": pa.array([i / 10 for i in range(n)], pa.float64()),
            "x2": pa.array(list(range(n)), pa.int32()),
            "note": pa.array(notes, pa.string()),
            "y": pa.array([i % 2 for i in range(n)], pa.int64()),
        }
    )


def small_task(**changes: object) -> TrainingTask:
    """A task over the small domain's columns x1, x2 -> y (2 classes)."""
    fields: dict[str, object] = {
        "id": "shop-task",
        "model": ModelSpec(input_dim=2, hidden=[4], output_dim=2),
        "features": ["x1", "x2"],
        "label": "y",
        "num_classes": 2,
        "rounds": 1,
    }
    fields.update(changes)
    return TrainingTask.model_validate(fields)
