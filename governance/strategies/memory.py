"""What a round costs in governance memory, by strategy: said when a task is loaded, before round 1.

Two families. The FedAvg family (FedAvg, FedAvgM, FedProx, the FedOpt family, FedBuff; central DP
too) needs only a weighted sum: the service folds each accepted update into float64 sums as it is
decided and releases its tensors (``governance.round_fold``), so a round holds the sums (two bytes per
byte of float32 model; four for FedBuff, which also sums each update's base) and the one update being
decided, whatever the number of domains. Robust rules (median, trimmed mean, Krum, Multi-Krum, Bulyan,
norm bound, centered clipping, trust score) look at every update together (a coordinate's median,
pairwise distances, ...): they keep every accepted update of the open round in memory (as views of
their messages, one copy each), which grows with the number of domains, plus their own working set
(Krum's n x n distance matrix, the sort slab of the coordinate-wise statistics).
"""

from __future__ import annotations

from dataclasses import dataclass

from governance.strategies.aggregate import SORT_BLOCK
from governance.strategies.base import Strategy
from governance.strategies.fedavg import FedAvg

_PAIRWISE = frozenset({"krum", "multikrum", "bulyan", "trustscore"})


@dataclass(frozen=True)
class RoundMemory:
    """Bytes one round of a task needs in governance, and why."""

    strategy: str
    domains: int
    model_bytes: int
    updates_bytes: int  # accepted updates held at once: one (being decided) when folding, else all
    working_bytes: int  # the strategy's own buffers (float64 sums, distances, sort slab)
    streams: bool  # whether the strategy itself needs only O(model)

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.updates_bytes + self.working_bytes

    def describe(self) -> str:
        how = (
            "a float64 running sum, each update folded in as it is decided (O(model))"
            if self.streams
            else "every accepted update in memory until the round closes (grows with the number of domains)"
        )
        return (
            f"{self.strategy} needs {how}: about {self.total_bytes / 2**20:,.1f} MiB a round for "
            f"{self.domains} domains (model {self.model_bytes / 2**20:,.1f} MiB, held updates "
            f"{self.updates_bytes / 2**20:,.1f} MiB, working set {self.working_bytes / 2**20:,.1f} MiB)"
        )


def round_memory(strategy: Strategy, *, domains: int, model_bytes: int, parameters: int) -> RoundMemory:
    """The estimate for ``domains`` accepted updates of a float32 model of ``parameters`` parameters."""
    if domains < 1 or model_bytes < 0 or parameters < 0:
        raise ValueError("domains must be >= 1 and sizes >= 0")
    streams = isinstance(strategy, FedAvg)
    sums = 8 * parameters  # float64 sums (or the float64 mean the robust rules return)
    if streams:
        working = 2 * sums if strategy.name == "fedbuff" else sums
    elif strategy.name in _PAIRWISE:
        working = sums + 8 * domains * domains + 8 * domains * SORT_BLOCK
    else:
        working = sums + 8 * domains * SORT_BLOCK
    return RoundMemory(
        strategy=strategy.name,
        domains=domains,
        model_bytes=model_bytes,
        updates_bytes=model_bytes if streams else domains * model_bytes,
        working_bytes=working,
        streams=streams,
    )
