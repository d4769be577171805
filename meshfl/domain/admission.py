"""Which tasks a domain agrees to train: its own configuration decides, whatever the bus says.

A task on the bus asks every agent to spend its CPU on, and expose a model trained on, its private
data. ``admits`` is the domain's own say: the task must pass the same validation as a task file
(``meshfl.domain.tasks.check_task``: sizes, epochs, rounds within sane limits), its id must match one
of ``[training] tasks`` and its model and epochs must fit the domain's ``max_parameters`` and
``max_local_epochs``. Whether governance signed the task is a separate check (``meshfl.domain``'s
signature verification), so both can be read and tested alone.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from meshfl.domain.config import DomainConfig
from meshfl.domain.tasks import check_task
from meshfl.errors import ConfigError
from meshfl.events import TrainingTask
from meshfl.modelspec import num_parameters


def admits(config: DomainConfig, task: TrainingTask) -> str | None:
    """``None`` when this domain's configuration admits ``task``, else the reason it does not."""
    try:
        check_task(task)
    except ConfigError as exc:
        return f"invalid task: {exc}"
    training = config.training
    if not any(fnmatchcase(task.id, pattern) for pattern in training.tasks):
        return f"task id {task.id!r} matches none of [training] tasks {training.tasks}"
    parameters = num_parameters(task.model)
    if parameters > training.max_parameters:
        return f"model of {parameters} parameters > this domain's max_parameters {training.max_parameters}"
    if task.local_epochs > training.max_local_epochs:
        return (
            f"local_epochs {task.local_epochs} > this domain's max_local_epochs {training.max_local_epochs}"
        )
    return None
