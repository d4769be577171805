"""Federation task files: TOML mirroring the fields of ``meshfl.events.TrainingTask``.

Besides the schema, a task must be self-consistent before it is published: the model takes one input
per feature and gives one logit per class, and its architecture, activation and optimizer are known.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from meshfl.domain.training import LR_SCHEDULES, OPTIMIZERS
from meshfl.errors import ConfigError
from meshfl.events import TrainingTask
from meshfl.limits import DEFAULT_TASK_LIMITS, TaskLimits
from meshfl.modelspec import layer_sizes, num_parameters
from meshfl.vertical.events import SplitTask


def check_task_bounds(task: TrainingTask, limits: TaskLimits = DEFAULT_TASK_LIMITS) -> None:
    """Raise ``ConfigError`` if the task asks for more than any participant should give (sizes only,
    computed on integers before any model is built)."""
    model = task.model
    if len(model.hidden) + 1 > limits.max_layers:
        raise ConfigError(f"model.hidden: {len(model.hidden)} hidden layers > {limits.max_layers - 1}")
    widths = [model.input_dim, *model.hidden, model.output_dim]
    if max(widths) > limits.max_width:
        raise ConfigError(f"model: a layer of width {max(widths)} > {limits.max_width}")
    if len(task.features) > limits.max_features:
        raise ConfigError(f"features: {len(task.features)} > {limits.max_features}")
    if task.num_classes > limits.max_classes:
        raise ConfigError(f"num_classes: {task.num_classes} > {limits.max_classes}")
    bounded = {
        "local_epochs": (task.local_epochs, limits.max_local_epochs),
        "rounds": (task.rounds, limits.max_rounds),
        "batch_size": (task.batch_size, limits.max_batch_size),
    }
    for field, (value, most) in bounded.items():
        if value > most:
            raise ConfigError(f"{field}: {value} > {most}")
    if min(widths) >= 1:
        parameters = num_parameters(model)
        if parameters > limits.max_parameters:
            raise ConfigError(f"model: {parameters} parameters > {limits.max_parameters}")


def check_task(task: TrainingTask, limits: TaskLimits = DEFAULT_TASK_LIMITS) -> None:
    """Raise ``ConfigError`` if the task cannot be trained as written or is out of bounds.

    Task files and tasks read from the bus both go through here: the bus is not trusted more.
    """
    check_task_bounds(task, limits)
    layer_sizes(task.model)
    if task.model.input_dim != len(task.features):
        raise ConfigError(
            f"model.input_dim is {task.model.input_dim} but there are {len(task.features)} features"
        )
    if len(set(task.features)) != len(task.features):
        raise ConfigError("features: a feature is listed twice")
    if task.label in task.features:
        raise ConfigError(f"label {task.label!r} is also a feature")
    if task.num_classes < 2 or task.model.output_dim != task.num_classes:
        raise ConfigError(
            f"model.output_dim ({task.model.output_dim}) must equal num_classes ({task.num_classes}) >= 2"
        )
    if task.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer: unknown {task.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if task.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule: unknown {task.lr_schedule!r}; known: {', '.join(LR_SCHEDULES)}")
    if task.batch_size < 1 or task.local_epochs < 1 or task.learning_rate <= 0:
        raise ConfigError("batch_size, local_epochs and learning_rate must be positive")


TASK_KINDS = ("horizontal", "vertical")
"""``kind`` in a task file: horizontal (the default, a ``TrainingTask``) or vertical (a ``SplitTask``)."""


def _read_task_data(path: Path) -> dict[str, Any]:
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such task file") from exc
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a task file holds one table")
    return data


def _validation_message(path: Path, exc: ValidationError) -> str:
    fields = "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or '<root>'}: {error['msg']}" for error in exc.errors()
    )
    return f"{path}: {fields}"


def load_any_task_file(path: Path | str) -> TrainingTask | SplitTask:
    """A task file of either kind (``kind = "vertical"`` for split learning), parsed and checked."""
    path = Path(path)
    data = _read_task_data(path)
    kind = data.pop("kind", "horizontal")
    if kind not in TASK_KINDS:
        raise ConfigError(f"{path}: kind {kind!r} is not one of {', '.join(TASK_KINDS)}")
    if kind == "horizontal":
        return _horizontal(path, data)
    from meshfl.vertical.spec import check_split_task

    try:
        split = SplitTask.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_message(path, exc)) from exc
    try:
        check_split_task(split)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return split


def load_task_file(path: Path | str) -> TrainingTask:
    """Parse and check a task file (TOML, or JSON for generated tasks: ``TrainingTask.model_dump_json``);
    raises ``ConfigError`` naming the file and the field."""
    task = load_any_task_file(path)
    if not isinstance(task, TrainingTask):
        raise ConfigError(f"{path}: a vertical task, where a horizontal one is expected")
    return task


def _horizontal(path: Path, data: dict[str, Any]) -> TrainingTask:
    try:
        task = TrainingTask.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_message(path, exc)) from exc
    try:
        check_task(task)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return task
