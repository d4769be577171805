"""Task files: the committed ones load and are consistent; bad ones fail naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from domain_builders import TASKS

from meshfl.domain.tasks import load_task_file
from meshfl.errors import ConfigError
from meshfl.events import TrainingTask


def test_digits_task_file() -> None:
    task = load_task_file(TASKS / "digits.toml")
    assert task.id == "digits-mlp"
    assert task.features == [f"px{i:02d}" for i in range(64)] and task.label == "label"
    assert (task.model.architecture, task.model.input_dim, task.model.hidden, task.model.output_dim) == (
        "mlp",
        64,
        [128],
        10,
    )
    assert (task.num_classes, task.rounds, task.local_epochs, task.batch_size) == (10, 20, 2, 32)
    assert (task.learning_rate, task.optimizer, task.strategy.name) == (0.1, "sgd", "fedavgm")
    assert task.round_policy.min_domains == 5
    assert TrainingTask.from_avro(task.to_avro()) == task


def test_breast_cancer_task_file() -> None:
    task = load_task_file(TASKS / "breast-cancer.toml")
    assert (task.num_classes, len(task.features), task.label) == (2, 30, "diagnosis")
    assert task.round_policy.min_domains == 3


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "task.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("rounds = 20", "rounds = 0", "rounds"),
        ("rounds = 20", "rounds = 20\ncolour = 'red'", "colour"),
        ("input_dim = 64", "input_dim = 63", "input_dim"),
        ("output_dim = 10", "output_dim = 9", "num_classes"),
        ('optimizer = "sgd"', 'optimizer = "lbfgs"', "optimizer"),
        ('architecture = "mlp"', 'architecture = "cnn"', "architecture"),
        ('label = "label"', 'label = "px00"', "also a feature"),
    ],
)
def test_bad_task_files(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = (TASKS / "digits.toml").read_text()
    assert old in text
    path = _write(tmp_path, text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message) as caught:
        load_task_file(path)
    assert str(path) in str(caught.value)


def test_unreadable_task_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such task file"):
        load_task_file(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"task\.toml"):
        load_task_file(_write(tmp_path, "id = [unclosed"))
