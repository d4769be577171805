"""A published version as a PyTorch module: the task says the architecture, the version the weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshfl.bus import read_all
from meshfl.errors import MeshflError
from meshfl.events import ModelVersion, TrainingTask
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

if TYPE_CHECKING:
    from torch import nn


def task_of(settings: MeshflSettings, task_id: str, *, timeout: float = 10.0) -> TrainingTask:
    """The task as first published on the bus (tasks are immutable: the first copy is the task)."""
    for envelope in read_all(settings, Topic.TASKS, timeout=timeout):
        event = envelope.event
        if isinstance(event, TrainingTask) and event.id == task_id:
            return event
    raise MeshflError(f"task {task_id!r} is not on {settings.topic_prefix}tasks")


def load_version_model(task: TrainingTask, version: ModelVersion) -> nn.Module:
    """The task's model with the version's weights, in eval mode; the weights are hash-checked first."""
    from meshfl.modelspec import build_model
    from meshfl.subscribe import version_weights

    if version.task_id != task.id:
        raise MeshflError(f"version {version.version} belongs to {version.task_id}, not {task.id}")
    model = build_model(task.model)
    model.load_state_dict({k: t.clone() for k, t in version_weights(version).items()})
    return model.eval()
