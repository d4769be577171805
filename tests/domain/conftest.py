"""Fixtures of the domain-side tests: a materialized example mesh and small hand-made domains."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from domain_builders import TASKS

from meshfl.datasets import materialize
from meshfl.domain.tasks import load_task_file
from meshfl.events import TrainingTask


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread, as a domain agent runs, so float results do not depend on the machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mesh_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example domains, materialized once for the session (seed 42) in a temporary folder."""
    root = tmp_path_factory.mktemp("domains")
    materialize(root, seed=42)
    return root


@pytest.fixture(scope="session")
def digits_task() -> TrainingTask:
    return load_task_file(TASKS / "digits.toml")
