"""Split-learning tests run torch on one thread: on a loaded two-core machine the intra-op thread pool
makes each small batch-norm call tens of times slower."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from meshfl.settings import MeshflSettings
from tests.federation.conftest import Processes, Threads


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def daemons() -> Iterator[Threads]:
    threads = Threads()
    try:
        yield threads
    finally:
        threads.stop_all()
    threads.check()


@pytest.fixture
def processes(settings: MeshflSettings, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(settings=settings, log_dir=tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()
