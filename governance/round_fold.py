"""The open round folded as it is decided: governance holds O(model), not O(domains x model).

A FedAvg-family strategy (FedAvg, FedAvgM, FedProx, FedAdam, FedYogi, FedAdagrad, FedBuff) needs only
a weighted sum of the accepted updates, and central DP only the sum of the clipped deltas
(``governance.policies.dp_mechanism.ClippedSum``). So each accepted update, in the form its
transforming policies pass against the parent (norm clip, DP clip), is folded into one float64 running
sum when it is decided, and its tensors are released: a round costs the sums (2x the float32 model,
4x for FedBuff with per-update bases) whatever the number of domains. The other rules (median,
trimmed mean, Krum, Multi-Krum, Bulyan, norm bound, centered clipping, trust score) look at every
update together and keep the all-in-memory path (``streams`` is false for them).

Order. Float64 addition is not associative, so the fold order is part of what a version is: updates
are folded in decision order (the log order of the task's updates partition, which a restarted service
re-reads in the same order), and the version lists its contributing updates in that order. The audit
replay folds them in the listed order through this same class (``aggregate_version``), so its bits
are the service's. Versions published before folding listed their updates in ``(domain, update_id)``
order and were aggregated in that order: the listed order replays them too.

Withdrawals. An accepted update can leave its round before the round closes (too stale in the async
buffer, refused by its transforming policies, tensors that no longer decode on restore). Every such
condition is judged when the update is folded, against the version its round closes on (the parent
does not change while the round is open), so a withdrawn update is never in the sum: nothing is ever
subtracted (``a + b - b`` is not ``a`` in floating point).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from governance.policies import dp_config_problems
from governance.policies.dp_mechanism import ClippedSum, noise_key, noised_mean_delta
from governance.strategies import AggregateResult, ClientUpdate, FedAvg, Strategy, build_strategy
from governance.strategies.base import check_weights
from meshfl.events import ModelVersion, TrainingTask


def strategy_params(task: TrainingTask) -> dict[str, float]:
    """The strategy's parameters; FedBuff takes its staleness rule from the round policy unless set."""
    params = dict(task.strategy.params)
    if task.strategy.name == "fedbuff":
        params.setdefault("staleness_alpha", task.round_policy.staleness_alpha)
        params.setdefault("max_staleness", float(max(task.round_policy.max_staleness, 0)))
    return params


def task_strategy(task: TrainingTask) -> Strategy:
    """The task's strategy, configured as its versions use it."""
    return build_strategy(task.strategy.name, strategy_params(task))


def streams(strategy: Strategy) -> bool:
    """Whether a round of ``strategy`` folds as it goes (the FedAvg family; central DP too)."""
    return isinstance(strategy, FedAvg)


class RoundFold:
    """The running sums of one open round over ``parent_weights``, fed one accepted update at a time.

    ``add`` reads the update (it may be dropped afterwards); ``release`` turns the sums into the next
    weights and server state (terminal). ``update_ids`` and ``domains`` are in fold order.
    """

    def __init__(self, task: TrainingTask, parent_weights: Mapping[str, torch.Tensor]) -> None:
        strategy = task_strategy(task)
        if not streams(strategy):
            raise ValueError(f"{strategy!r} needs every update at once; it does not fold")
        self.task = task
        self.strategy: FedAvg = strategy  # type: ignore[assignment]
        self._spec = {
            name: torch.empty(t.shape, dtype=t.dtype, device="meta") for name, t in parent_weights.items()
        }
        self._clipped: ClippedSum | None = None
        self._sum = None
        if task.privacy is None:
            self._sum = self.strategy.accumulator(parent_weights)
        else:
            problems = dp_config_problems(task, parent_weights)
            if problems:
                raise ValueError("central DP refused: " + "; ".join(problems))
            self._clipped = ClippedSum(parent_weights, clip_norm=task.privacy.clip_norm)
        self.update_ids: list[str] = []
        self.domains: list[str] = []
        self.num_examples = 0
        self._keys: set[tuple[str, str]] = set()
        self._released = False

    @property
    def count(self) -> int:
        return len(self.update_ids)

    def add(self, update: ClientUpdate) -> None:
        """Fold ``update`` in (``ValueError`` if it does not fit the parent or is folded twice)."""
        if self._released:
            raise RuntimeError("the round was already released")
        if update.key in self._keys:
            raise ValueError(f"duplicate update {update.key}")
        check_weights(update.weights, self._spec, what=f"update {update.update_id}")
        if self._clipped is not None:
            self._clipped.add(update.weights)
        else:
            assert self._sum is not None
            self._sum.add(update)
        self._keys.add(update.key)
        self.update_ids.append(update.update_id)
        self.domains.append(update.domain)
        self.num_examples += update.num_examples

    def release(
        self,
        parent: ModelVersion,
        parent_weights: Mapping[str, torch.Tensor],
        server_state: Mapping[str, torch.Tensor],
        *,
        dp_secret: bytes = b"",
    ) -> AggregateResult:
        """The next weights and state (consumes the sums).

        Without DP: the strategy's ``finalize`` (mean, then its server step). Under central DP: the
        noised uniform mean of the clipped deltas, then the server step on it, exactly as
        ``governance.rounds`` documents; the noise key names the updates as a set (sorted).
        """
        if not self.update_ids:
            raise ValueError("a version needs at least one accepted update")
        if self._released:
            raise RuntimeError("the round was already released")
        self._released = True
        state = dict(server_state) or None
        if self._clipped is None:
            assert self._sum is not None
            return self.strategy.finalize(self._sum, parent_weights, state)
        privacy = self.task.privacy
        assert privacy is not None
        key = noise_key(
            dp_secret,
            task_id=self.task.id,
            version=parent.version + 1,
            parent_sha256=parent.sha256,
            update_ids=self.update_ids,
        )
        mean_delta = noised_mean_delta(self._clipped, noise_multiplier=privacy.noise_multiplier, key=key)
        means = {name: mean_delta.pop(name).add_(t.to(torch.float64)) for name, t in parent_weights.items()}
        return self.strategy.server_step(parent_weights, means, state)

    def held_bytes(self) -> int:
        """Bytes of the running sums (what a folded round costs, whatever its number of updates)."""
        if self._clipped is not None:
            return sum(t.numel() * t.element_size() for t in self._clipped.sums.values())
        assert self._sum is not None
        return self._sum.held_bytes()
