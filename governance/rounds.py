"""The state of one task's federation and the pure step that turns a closed round into a version.

The governance service keeps one ``TaskState`` per task. Everything here is deterministic and free of
I/O, so the service, a restarted service and an audit replay all compute the same version bytes from
the same accepted updates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import torch

from governance.policies import Verdict, add_gaussian_noise, check_budget, noise_seed, privacy_spent
from governance.strategies import ClientUpdate, build_strategy
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
    failed_with: int = -1  # pending count at which the strategy last refused to aggregate

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

    def advance(self, version: ModelVersion) -> None:
        """Adopt a newly published version and drop the updates it consumed."""
        consumed = set(version.contributing_updates)
        self.latest = version
        self.latest_weights = from_wire(version.tensors)
        self.server_state = from_wire(version.server_state)
        self.pending = [item for item in self.pending if item.update_id not in consumed]
        self.failed_with = -1


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

    Under central DP every update weighs the same (sensitivity C/n of the mean; example weights would
    let one domain move the mean by up to C), and the noise seed is an HMAC under ``dp_secret``, held
    by governance and auditors only, so that the log alone does not let anyone subtract the noise.
    """
    if not updates:
        raise ValueError("a version needs at least one accepted update")
    strategy = build_strategy(task.strategy.name, strategy_params(task))
    ordered = sorted(updates, key=lambda u: (u.domain, u.update_id))
    examples = sum(u.num_examples for u in ordered)
    if task.privacy is not None:
        ordered = [replace(u, num_examples=1) for u in ordered]
    result = strategy.aggregate(ordered, parent_weights, dict(server_state) or None)
    weights = result.weights
    version_number = parent.version + 1
    privacy: PrivacySpent | None = None
    if task.privacy is not None:
        weights = add_gaussian_noise(
            weights,
            parent_weights,
            clip_norm=task.privacy.clip_norm,
            noise_multiplier=task.privacy.noise_multiplier,
            num_updates=len(ordered),
            seed=noise_seed(task.id, version_number, secret=dp_secret),
        )
        privacy = privacy_spent(
            noise_multiplier=task.privacy.noise_multiplier,
            sample_rate=1.0,
            steps=version_number,
            delta=task.privacy.target_delta,
        )
    tensors = to_wire(weights)
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
        metrics={
            "num_updates": float(len(ordered)),
            "num_examples": float(examples),
        },
        privacy=privacy,
        created_at=created_at,
    )
