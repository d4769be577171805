"""The workload both frameworks run: one task, ten domains' data, and the per-round arithmetic.

Both sides train the same ``ModelSpec`` (an MLP of about 1.0M float32 parameters) with the same
``meshfl.domain.training.train_local`` call on the same Parquet rows, loaded the same way
(``prepare_local_data``), so the only thing that differs is the machinery around local training.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from meshfl.events import ModelSpec, RoundPolicy, TrainingTask
from meshfl.modelspec import num_parameters

FEATURES: list[str] = [f"f{i:02d}" for i in range(64)]
LABEL = "label"
NUM_CLASSES = 10
MODEL = ModelSpec(architecture="mlp", input_dim=len(FEATURES), hidden=[1024, 900], output_dim=NUM_CLASSES)
ROWS_PER_DOMAIN = 64
BATCH_SIZE = 32
TASK_SEED = 7


def make_task(task_id: str, rounds: int, domains: int) -> TrainingTask:
    """The task: 1 local epoch over 64 rows in batches of 32 (two SGD steps), all domains a round."""
    return TrainingTask(
        id=task_id,
        description="bench/round.py: per-round overhead",
        owner="bench@example.org",
        model=MODEL,
        features=FEATURES,
        label=LABEL,
        num_classes=NUM_CLASSES,
        rounds=rounds,
        local_epochs=1,
        batch_size=BATCH_SIZE,
        learning_rate=0.05,
        optimizer="sgd",
        seed=TASK_SEED,
        round_policy=RoundPolicy(min_domains=domains),
    )


def parameter_count() -> int:
    return num_parameters(MODEL)


# --- task file (TOML, as ``meshfl.domain.tasks.load_task_file`` reads it) ------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_table(data: Mapping[str, Any], prefix: str) -> list[str]:
    lines = [f"{key} = {_toml_value(value)}" for key, value in data.items() if not isinstance(value, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            lines += ["", f"[{name}]", *_toml_table(value, f"{name}.")]
    return lines


def task_toml(task: TrainingTask) -> str:
    """The task as a TOML task file (``created_at`` left to its default, nulls left out)."""
    data = task.model_dump(mode="json", exclude_none=True, exclude={"created_at"})
    return "\n".join(_toml_table(data, "")) + "\n"


# --- domain folders -----------------------------------------------------------------------------


def _domain_toml(name: str) -> str:
    columns = [(f, "number") for f in FEATURES] + [(LABEL, "integer")]
    lines = [
        f'name = "{name}"',
        'owner = "bench@example.org"',
        'description = "bench/round.py domain"',
        "",
        "[training]",
        "holdout_fraction = 0.0",
        "threads = 1",
        "",
        "[[data_products]]",
        f'id = "{name}.rows"',
        'version = "1.0.0"',
        'path = "data/rows.parquet"',
        'contract_id = "bench-rows"',
        'contract_version = "1.0.0"',
    ]
    for column, logical_type in columns:
        lines += ["", "[[data_products.columns]]", f'name = "{column}"', f'logical_type = "{logical_type}"']
    return "\n".join(lines) + "\n"


def write_domains(root: Path, count: int, *, seed: int = 0) -> list[Path]:
    """``count`` domain folders under ``root``, each with ``ROWS_PER_DOMAIN`` random rows."""
    rng = np.random.default_rng(seed)
    folders = []
    for index in range(count):
        name = f"bench-d{index:02d}"
        folder = root / name
        (folder / "data").mkdir(parents=True, exist_ok=True)
        columns = {f: rng.standard_normal(ROWS_PER_DOMAIN).astype(np.float32) for f in FEATURES}
        columns[LABEL] = rng.integers(0, NUM_CLASSES, ROWS_PER_DOMAIN, dtype=np.int64)
        pq.write_table(pa.table(columns), folder / "data" / "rows.parquet")
        (folder / "domain.toml").write_text(_domain_toml(name))
        folders.append(folder)
    return folders


# --- per-round arithmetic -----------------------------------------------------------------------


@dataclass(frozen=True)
class RoundFigure:
    """One round: wall time since the previous round closed, the slowest training, the rest."""

    round: int
    wall: float
    slowest_train: float
    participants: int

    @property
    def overhead(self) -> float:
        return self.wall - self.slowest_train


@dataclass(frozen=True)
class SideResult:
    """What one framework's run gave: its rounds, how long the whole side took, and extras."""

    figures: list[RoundFigure]
    seconds: float
    note: str = ""
    segments: dict[int, dict[str, float]] = field(default_factory=dict)


def round_figures(
    closed_at: Mapping[int, float], train_seconds: Mapping[int, list[float]]
) -> list[RoundFigure]:
    """Figures of every round ``r`` whose predecessor's close time is known (so from round 2 on).

    ``closed_at[r]`` is when round ``r``'s global model was made (seconds, any origin; round 0 is the
    initial model); ``train_seconds[r]`` holds each participant's local training time in round ``r``.
    """
    figures = []
    for round_ in sorted(closed_at):
        if round_ < 2 or round_ - 1 not in closed_at or not train_seconds.get(round_):
            continue
        figures.append(
            RoundFigure(
                round=round_,
                wall=closed_at[round_] - closed_at[round_ - 1],
                slowest_train=max(train_seconds[round_]),
                participants=len(train_seconds[round_]),
            )
        )
    return figures


def median_overhead(figures: list[RoundFigure]) -> float:
    return statistics.median(f.overhead for f in figures) if figures else float("nan")
