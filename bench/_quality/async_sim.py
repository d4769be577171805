"""An asynchronous (FedBuff) federation run in one process, on a simulated clock.

What the agents and governance do in async mode, without the transport: every domain trains on the
newest version it has not trained on yet (one update per domain per version, as the agent's progress
rule), with the agent's ``train_local`` and per-round seed (``round = version.round + 1``); its update
arrives one *cycle* later; governance buffers arrivals in log (arrival) order and aggregates the K
oldest with :func:`aggregate_version` as soon as it holds K, each update as its delta against its own
base version, with its staleness. Updates staler than ``max_staleness`` when their buffer closes are
withdrawn, as ``governance.closing`` does.

The clock: a domain's cycle is ``overhead + rows / mean_rows`` units (decode, publish and governance's
round trip, plus training time proportional to its rows), and the straggler's cycle is longer by
``delay`` units, the mean fast cycle being about 2 units. Ties break by domain name, so a run is
deterministic.
"""

from __future__ import annotations

import heapq
import random
import statistics
from collections import Counter
from dataclasses import dataclass, field

import torch

from bench._quality.sim import EPOCH, Federation, accuracy
from governance.rounds import aggregate_version, initial_version
from governance.strategies import ClientUpdate
from meshfl.domain.agent import round_seed, update_id_for
from meshfl.domain.training import train_local
from meshfl.events import ModelVersion
from meshfl.tensors import from_wire

OVERHEAD = 1.0
"""Units of a cycle that do not depend on the domain's rows (transport, decoding, governance)."""


@dataclass
class AsyncRun:
    """What an async run made: accuracy after each version, and who contributed how (and how stale)."""

    curve: list[float] = field(default_factory=list)
    accepted: Counter[str] = field(default_factory=Counter)
    withdrawn: Counter[str] = field(default_factory=Counter)
    staleness: dict[str, list[int]] = field(default_factory=dict)

    @property
    def updates(self) -> int:
        return sum(self.accepted.values())

    def mean_staleness(self, domain: str) -> float:
        values = self.staleness.get(domain, [])
        return statistics.fmean(values) if values else float("nan")


@dataclass(frozen=True, order=True)
class _Arrival:
    time: float
    domain: str
    base_version: int = field(compare=False)
    weights: dict[str, torch.Tensor] = field(compare=False)
    num_examples: int = field(compare=False)


def run_async(
    fed: Federation, *, slow_domain: str, delay: float, jitter: float = 0.0, distinct: bool = False
) -> AsyncRun:
    """Run ``fed.task`` (async: ``rounds`` versions of ``round_policy.buffer_size`` updates) to the end.

    ``jitter`` scales every cycle by a factor drawn uniformly from ``[1 - jitter, 1 + jitter]`` (seeded by
    the task seed): a loaded machine, where the fast domains drift out of step and one domain can have two
    updates in a buffer. ``distinct`` takes the K oldest updates *of distinct domains* into a buffer (the
    others wait for the next one), FedBuff with one update per domain per buffer.
    """
    task = fed.task
    policy = task.round_policy
    k = policy.buffer_size
    if k < 1:
        raise ValueError("an async task needs round_policy.buffer_size >= 1")
    mean_rows = statistics.fmean(int(d.x_train.shape[0]) for d in fed.data)
    cycle = {
        name: OVERHEAD + int(d.x_train.shape[0]) / mean_rows + (delay if name == slow_domain else 0.0)
        for name, d in zip(fed.domains, fed.data, strict=True)
    }
    data = dict(zip(fed.domains, fed.data, strict=True))
    versions: dict[int, ModelVersion] = {0: initial_version(task)}
    weights: dict[int, dict[str, torch.Tensor]] = {0: from_wire(versions[0].tensors)}
    server_state: dict[str, torch.Tensor] = {}
    rng = random.Random(task.seed)
    trained: dict[str, int] = {}  # the newest version each domain trained on
    arrivals: list[_Arrival] = []
    run = AsyncRun()

    def start(name: str, now: float) -> None:
        latest = max(versions)
        if trained.get(name, -1) >= latest or versions[latest].round >= task.rounds:
            return
        trained[name] = latest
        round_ = versions[latest].round + 1
        local = data[name]
        seed = round_seed(task, round_, name)
        state = train_local(
            task, weights[latest], local.x_train, local.y_train, seed=seed, round_=round_
        ).state
        heapq.heappush(
            arrivals,
            _Arrival(
                now + cycle[name] * rng.uniform(1 - jitter, 1 + jitter),
                name,
                latest,
                state,
                int(local.x_train.shape[0]),
            ),
        )

    for name in fed.domains:
        start(name, 0.0)
    buffer: list[_Arrival] = []
    while arrivals and len(versions) - 1 < task.rounds:
        arrival = heapq.heappop(arrivals)
        buffer.append(arrival)
        latest = max(versions)
        while len(buffer) >= k:  # (distinct: may still lack K domains)
            stale = [a for a in buffer if latest - a.base_version > policy.max_staleness]
            for item in stale:
                run.withdrawn[item.domain] += 1
                buffer.remove(item)
            chosen = _choose(buffer, k, distinct)
            if chosen is None:
                break
            buffer = [a for a in buffer if all(a is not c for c in chosen)]
            updates = [
                ClientUpdate(
                    update_id=update_id_for(task.id, versions[a.base_version].round + 1, a.domain),
                    domain=a.domain,
                    weights=a.weights,
                    num_examples=a.num_examples,
                    staleness=latest - a.base_version,
                    base=weights[a.base_version],
                )
                for a in chosen
            ]
            version = aggregate_version(
                task, versions[latest], weights[latest], server_state, updates, created_at=EPOCH
            )
            for a in chosen:
                run.accepted[a.domain] += 1
                run.staleness.setdefault(a.domain, []).append(latest - a.base_version)
            latest = version.version
            versions[latest] = version
            weights[latest] = from_wire(version.tensors)
            server_state = from_wire(version.server_state)
            run.curve.append(accuracy(fed, weights[latest]))
            for old in [n for n in weights if n < latest - policy.max_staleness]:
                del weights[old]
            if version.round >= task.rounds:
                break
        start(arrival.domain, arrival.time)
        for name in fed.domains:  # idle domains take the newest version as soon as it is out
            if name not in {a.domain for a in arrivals}:
                start(name, arrival.time)
    return run


def _choose(buffer: list[_Arrival], k: int, distinct: bool) -> list[_Arrival] | None:
    """The K oldest arrivals (of distinct domains if ``distinct``), or None if there are not K yet."""
    if not distinct:
        return buffer[:k] if len(buffer) >= k else None
    chosen: list[_Arrival] = []
    for arrival in buffer:
        if all(arrival.domain != c.domain for c in chosen):
            chosen.append(arrival)
        if len(chosen) == k:
            return chosen
    return None
