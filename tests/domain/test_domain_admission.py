"""Tasks from the bus are checked like task files, and a domain trains only what its config admits.

The attacks: a task redefined with ``hidden = [2**40]`` crash-looped every agent on allocation;
``local_epochs = 10**9`` made agents train forever and ignore SIGTERM.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from domain_builders import SMALL_DOMAIN, small_task, write_domain

from meshfl.domain.admission import admits
from meshfl.domain.config import load_domain
from meshfl.domain.tasks import check_task
from meshfl.domain.training import train_local
from meshfl.errors import ConfigError, TrainingStopped
from meshfl.events import ModelSpec
from meshfl.modelspec import initial_state


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"model": ModelSpec(input_dim=2, hidden=[2**40], output_dim=2)}, "width"),
        ({"model": ModelSpec(input_dim=2, hidden=[60_000] * 2, output_dim=2)}, "parameters"),
        ({"model": ModelSpec(input_dim=2, hidden=[4] * 100, output_dim=2)}, "hidden layers"),
        ({"local_epochs": 10**9}, "local_epochs"),
        ({"rounds": 10**12}, "rounds"),
        ({"batch_size": 2**40}, "batch_size"),
    ],
)
def test_out_of_bounds_tasks_are_refused(changes: dict[str, object], match: str) -> None:
    task = small_task(**changes)
    with pytest.raises(ConfigError, match=match):
        check_task(task)


def test_hostile_task_is_refused_by_the_domain(tmp_path: Path) -> None:
    config = load_domain(write_domain(tmp_path / "shop", SMALL_DOMAIN))
    assert admits(config, small_task()) is None
    reason = admits(config, small_task(model=ModelSpec(input_dim=2, hidden=[2**40], output_dim=2)))
    assert reason is not None and reason.startswith("invalid task")
    assert "local_epochs" in (admits(config, small_task(local_epochs=10**9)) or "")


def test_domain_config_decides_which_tasks_it_trains(tmp_path: Path) -> None:
    toml = SMALL_DOMAIN.replace(
        'description = "a small test domain"\n',
        'description = "a small test domain"\n\n[training]\ntasks = ["shop-*"]\n'
        "max_parameters = 100\nmax_local_epochs = 3\n",
    )
    config = load_domain(write_domain(tmp_path / "shop", toml))
    assert admits(config, small_task()) is None
    assert "matches none" in (admits(config, small_task(id="attacker-task")) or "")
    big = ModelSpec(input_dim=2, hidden=[64], output_dim=2)
    assert "max_parameters" in (admits(config, small_task(model=big)) or "")
    assert "max_local_epochs" in (admits(config, small_task(local_epochs=4)) or "")


def test_training_stops_within_a_batch_of_a_stop_request() -> None:
    task = small_task(local_epochs=1_000, batch_size=1)
    x = torch.randn(2_000, 2)
    y = torch.randint(0, 2, (2_000,))
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    began = time.monotonic()
    with pytest.raises(TrainingStopped):
        train_local(task, initial_state(task.model, 0), x, y, seed=1, stop=stop)
    # 1,000 epochs of 2,000 batches would take many minutes; a stop is seen at the next batch.
    assert time.monotonic() - began < 60
