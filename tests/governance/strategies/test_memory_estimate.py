"""The round-memory estimate a task load prints: robust rules grow with the domains, FedAvg does not."""

from __future__ import annotations

import pytest

from governance.strategies import STRATEGIES, build_strategy
from governance.strategies.memory import round_memory

MODEL = 4 * 10_000_000


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_the_strategy_part_streams_only_for_the_fedavg_family(name: str) -> None:
    strategy = build_strategy(name, {})
    small = round_memory(strategy, domains=10, model_bytes=MODEL, parameters=MODEL // 4)
    large = round_memory(strategy, domains=1000, model_bytes=MODEL, parameters=MODEL // 4)
    family = name in {"fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedbuff"}
    assert small.streams is family
    if family:  # float64 sums (FedBuff also sums the bases); one update held, being decided
        assert large.working_bytes == small.working_bytes == (4 if name == "fedbuff" else 2) * MODEL
        assert large.updates_bytes == small.updates_bytes == MODEL
    else:
        assert large.working_bytes > small.working_bytes
        assert large.updates_bytes == 1000 * MODEL  # every accepted update until the round closes
    assert "MiB" in large.describe() and str(large.domains) in large.describe()


def test_krum_counts_its_distance_matrix() -> None:
    estimate = round_memory(build_strategy("krum", {}), domains=1000, model_bytes=400, parameters=100)
    assert estimate.working_bytes >= 8 * 1000 * 1000
