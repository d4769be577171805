"""The state of one task's federation and the pure step that turns a closed round into a version.

The governance service keeps one ``TaskState`` per task. Everything here is deterministic and free of
I/O, so the service, a restarted service and an audit replay all compute the same version bytes from
the same accepted updates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import torch

from governance.policies import (
    Verdict,
    check_budget,
    dp_config_problems,
    dp_mean_delta,
    noise_key,
    privacy_spent,
)
from governance.strategies import AggregateResult, ClientUpdate, FedAvg, Strategy, build_strategy
from governance.strategies.base import sorted_updates
from meshfl.events import FederationMode, ModelVersion, PrivacySpent, TrainingTask, utcnow
from meshfl.modelspec import build_model
from meshfl.tensors import from_wire, tensors_sha256, to_wire


@dataclass(frozen=True)
class PendingUpdate:
    """An accepted update waiting for its round to close; ``first_offset`` pins the consumer's commits."""

    update_id: str
    domain: str
    num_examples: int
    base_version: int
    weights: Mapping[str, torch.Tensor]
    partition: int
    first_offset: int


@dataclass
class TaskState:
    """One task's latest version and the accepted updates of its open round (or async buffer)."""

    task: TrainingTask
    latest: ModelVersion
    latest_weights: dict[str, torch.Tensor]
    server_state: dict[str, torch.Tensor]
    pending: list[PendingUpdate] = field(default_factory=list)
    # async: the versions before ``latest`` that buffered updates may have trained from (FedBuff takes each
    # delta against its own base), at most ``max_staleness`` of them; see governance.version_window
    recent: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    failed_with: int = -1  # pending count at which the strategy last refused to aggregate
    error: str | None = None  # why the open round failed (strategy error): no version until fixed

    @property
    def open_round(self) -> int:
        return self.latest.round + 1

    @property
    def complete(self) -> bool:
        return self.latest.round >= self.task.rounds or not self.budget().accepted

    def budget(self) -> Verdict:
        """May the next version be released under the task's privacy budget? (Recomputed, never stored.)"""
        if self.task.privacy is None:
            return Verdict(True, "privacy_budget", "no differential privacy for this task")
        return check_budget(self.task.privacy, sample_rate=1.0, releases=self.latest.version)

    @property
    def opened_at(self) -> datetime:
        return self.latest.created_at

    @property
    def is_async(self) -> bool:
        return self.task.mode == FederationMode.ASYNC

    def expected(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return {name: (tuple(t.shape), t.dtype) for name, t in self.latest_weights.items()}

    def holds(self) -> dict[int, int]:
        """Lowest first offset of a pending update per partition: commits must not pass it."""
        out: dict[int, int] = {}
        for item in self.pending:
            out[item.partition] = min(out.get(item.partition, item.first_offset), item.first_offset)
        return out

    def accepted_domains(self) -> set[str]:
        return {item.domain for item in self.pending}

    def base_weights(self, version: int) -> Mapping[str, torch.Tensor]:
        """The weights of ``version``, which an update trained from (async mode keeps a window of them)."""
        if version == self.latest.version:
            return self.latest_weights
        found = self.recent.get(version)
        if found is None:
            raise ValueError(f"base version {version} is not held (latest {self.latest.version})")
        return found

    def reference_weights(self, base_version: int) -> Mapping[str, torch.Tensor]:
        """What an update's delta is measured against by the norm and DP clips: in async mode the
        version it trained from when held (its FedBuff delta; the clip then does not depend on which
        buffer it lands in), else the latest version (sync rounds, or a base the policies will refuse)."""
        if self.is_async and base_version != self.latest.version and base_version in self.recent:
            return self.recent[base_version]
        return self.latest_weights

    def client_updates(self, chosen: Sequence[PendingUpdate]) -> list[ClientUpdate]:
        """The strategy's view of ``chosen``: staleness against the latest version and, in async mode,
        the weights of the version each update trained from (the same rule in the service and replay)."""
        return [
            ClientUpdate(
                update_id=item.update_id,
                domain=item.domain,
                weights=item.weights,
                num_examples=item.num_examples,
                staleness=self.latest.version - item.base_version,
                base=self.base_weights(item.base_version) if self.is_async else None,
            )
            for item in chosen
        ]

    def advance(self, version: ModelVersion) -> None:
        """Adopt a newly published version and drop the updates it consumed."""
        consumed = set(version.contributing_updates)
        if self.is_async:
            self.recent[self.latest.version] = self.latest_weights
            floor = window_floor(self.task, version.version)
            self.recent = {number: w for number, w in self.recent.items() if number >= floor}
        self.latest = version
        self.latest_weights = from_wire(version.tensors)
        self.server_state = from_wire(version.server_state)
        self.pending = [item for item in self.pending if item.update_id not in consumed]
        self.failed_with = -1


def window_floor(task: TrainingTask, latest_version: int) -> int:
    """The oldest version an accepted async update may have trained from: ``latest - max_staleness``."""
    return latest_version - max(task.round_policy.max_staleness, 0)


def initial_version(task: TrainingTask) -> ModelVersion:
    """Version 0: the task's model with weights drawn from the task's seed."""
    state = {
        name: t.detach().clone() for name, t in build_model(task.model, seed=task.seed).state_dict().items()
    }
    tensors = to_wire(state)
    return ModelVersion(
        task_id=task.id,
        version=0,
        parent_version=None,
        round=0,
        strategy=task.strategy,
        tensors=tensors,
        sha256=tensors_sha256(tensors),
        created_at=utcnow(),
    )


def strategy_params(task: TrainingTask) -> dict[str, float]:
    """The strategy's parameters; FedBuff takes its staleness rule from the round policy unless set."""
    params = dict(task.strategy.params)
    if task.strategy.name == "fedbuff":
        params.setdefault("staleness_alpha", task.round_policy.staleness_alpha)
        params.setdefault("max_staleness", float(max(task.round_policy.max_staleness, 0)))
    return params


def aggregate_version(
    task: TrainingTask,
    parent: ModelVersion,
    parent_weights: Mapping[str, torch.Tensor],
    server_state: Mapping[str, torch.Tensor],
    updates: Sequence[ClientUpdate],
    *,
    created_at: datetime,
    dp_secret: bytes = b"",
) -> ModelVersion:
    """Aggregate accepted updates into the next version: the one function service and replay share.

    Under central DP (``governance.policies.dp_mechanism``) the release is the noised uniform mean of the
    clipped deltas, computed first; the strategy's server step (FedAvgM momentum, FedAdam moments ...)
    then runs on that noised mean, so neither the weights nor the published ``server_state`` depend on
    the clean mean. The noise key binds ``dp_secret`` (held by governance and auditors only) to this
    round's content. Only what the mechanism covers is published: no example counts.
    """
    if not updates:
        raise ValueError("a version needs at least one accepted update")
    strategy = build_strategy(task.strategy.name, strategy_params(task))
    ordered = sorted(updates, key=lambda u: (u.domain, u.update_id))
    version_number = parent.version + 1
    privacy: PrivacySpent | None = None
    metrics = {"num_updates": float(len(ordered))}
    if task.privacy is None:
        result = strategy.aggregate(ordered, parent_weights, dict(server_state) or None)
        metrics["num_examples"] = float(sum(u.num_examples for u in ordered))
    else:
        result = _dp_release(task, parent, parent_weights, server_state, ordered, strategy, dp_secret)
        privacy = privacy_spent(
            noise_multiplier=task.privacy.noise_multiplier,
            sample_rate=1.0,
            steps=version_number,
            delta=task.privacy.target_delta,
        )
    tensors = to_wire(result.weights)
    return ModelVersion(
        task_id=task.id,
        version=version_number,
        parent_version=parent.version,
        round=parent.round + 1,
        strategy=task.strategy,
        contributing_updates=[u.update_id for u in ordered],
        contributing_domains=[u.domain for u in ordered],
        tensors=tensors,
        server_state=to_wire(result.state),
        sha256=tensors_sha256(tensors),
        metrics=metrics,
        privacy=privacy,
        created_at=created_at,
    )


def _dp_release(
    task: TrainingTask,
    parent: ModelVersion,
    parent_weights: Mapping[str, torch.Tensor],
    server_state: Mapping[str, torch.Tensor],
    ordered: Sequence[ClientUpdate],
    strategy: Strategy,
    dp_secret: bytes,
) -> AggregateResult:
    """Noise the uniform mean of the clipped deltas, then run the server step on the noised mean."""
    assert task.privacy is not None
    problems = dp_config_problems(task, parent_weights)
    if problems or not isinstance(strategy, FedAvg):
        raise ValueError("central DP refused: " + "; ".join(problems or [f"{strategy!r} has no server step"]))
    sorted_updates(ordered, parent_weights)  # same names, shapes, dtypes; no duplicates
    key = noise_key(
        dp_secret,
        task_id=task.id,
        version=parent.version + 1,
        parent_sha256=parent.sha256,
        update_ids=[u.update_id for u in ordered],
    )
    mean_delta = dp_mean_delta(
        parent_weights,
        (u.weights for u in ordered),
        clip_norm=task.privacy.clip_norm,
        noise_multiplier=task.privacy.noise_multiplier,
        key=key,
    )
    means = {name: mean_delta.pop(name).add_(t.to(torch.float64)) for name, t in parent_weights.items()}
    return strategy.server_step(parent_weights, means, dict(server_state) or None)
