"""The state of one task's federation and the pure step that turns a closed round into a version.

The governance service keeps one ``TaskState`` per task. Everything here is deterministic and free of
I/O, so the service, a restarted service and an audit replay all compute the same version bytes from
the same accepted updates.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime

import torch

from governance.pending_list import PendingList
from governance.policies import (
    Verdict,
    check_budget,
    dp_config_problems,
    dp_mean_delta,
    noise_key,
    privacy_spent,
)
from governance.round_fold import RoundFold, strategy_params, streams, task_strategy
from governance.strategies import AggregateResult, ClientUpdate, FedAvg, Strategy
from governance.strategies.base import sorted_updates
from meshfl.events import FederationMode, ModelVersion, PrivacySpent, TrainingTask, utcnow
from meshfl.modelspec import build_model
from meshfl.tensors import from_wire, tensors_sha256, to_wire

__all__ = [
    "PendingUpdate",
    "TaskState",
    "aggregate_version",
    "fold_all",
    "initial_version",
    "strategy_params",
]


@dataclass(frozen=True)
class PendingUpdate:
    """An accepted update waiting for its round to close; ``first_offset`` pins the consumer's commits.

    ``weights`` is ``None`` once the update is folded into its round (``TaskState.fold``): only its
    coordinates and metadata stay.
    """

    update_id: str
    domain: str
    num_examples: int
    base_version: int
    weights: Mapping[str, torch.Tensor] | None
    partition: int
    first_offset: int


def unfolded_start(pending: Sequence[PendingUpdate]) -> int:
    """Index of the first update of ``pending`` still holding its tensors, read from the end.

    Updates are appended as decided and folded in that order (withdrawals and the async buffer's
    leftovers keep it), so the folded ones are a prefix: a decision reads only the unfolded tail,
    not every update of the round (quadratic in the domains per round otherwise).
    """
    start = len(pending)
    while start > 0 and pending[start - 1].weights is not None:
        start -= 1
    return start


@dataclass
class TaskState:
    """One task's latest version and the accepted updates of its open round (or async buffer)."""

    task: TrainingTask
    latest: ModelVersion
    latest_weights: dict[str, torch.Tensor]
    server_state: dict[str, torch.Tensor]
    # kept as a PendingList whatever is assigned (``__setattr__``): its domains are known at O(1)
    pending: PendingList[PendingUpdate] = field(default_factory=PendingList)
    # async: the versions before ``latest`` that buffered updates may have trained from (FedBuff takes each
    # delta against its own base), at most ``max_staleness`` of them; see governance.version_window
    recent: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    failed_with: int = -1  # pending count at which the strategy last refused to aggregate
    # FedAvg family and central DP: the open round's accepted updates folded in decision order (their
    # tensors released); None until the first is folded, and for rules that need every update
    fold: RoundFold | None = None
    error: str | None = None  # why the open round failed (strategy error): no version until fixed

    def __setattr__(self, name: str, value: object) -> None:
        if name == "pending" and not isinstance(value, PendingList):
            value = PendingList(value)  # type: ignore[arg-type]
        super().__setattr__(name, value)

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

    def accepted_domains(self) -> AbstractSet[str]:
        """The domains with an accepted update in the open round: a live read-only view, O(1) (it was a
        set built from every pending update, once per decision: quadratic in the domains per round)."""
        return self.pending.domains

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
        return [self.client_update(item, item.weights) for item in chosen]

    def client_update(self, item: PendingUpdate, weights: Mapping[str, torch.Tensor] | None) -> ClientUpdate:
        """One update as the strategy sees it, with ``weights`` (its form against the latest version)."""
        if weights is None:
            raise ValueError(f"update {item.update_id} was folded: its tensors are no longer held")
        return ClientUpdate(
            update_id=item.update_id,
            domain=item.domain,
            weights=weights,
            num_examples=item.num_examples,
            staleness=self.latest.version - item.base_version,
            base=self.base_weights(item.base_version) if self.is_async else None,
        )

    @functools.cached_property
    def streams(self) -> bool:
        """Whether this task's rounds fold as updates are decided (``governance.round_fold``)."""
        return streams(task_strategy(self.task))

    def advance(self, version: ModelVersion) -> None:
        """Adopt a newly published version and drop the updates it consumed."""
        consumed = set(version.contributing_updates)
        if self.is_async:
            self.recent[self.latest.version] = self.latest_weights
            floor = window_floor(self.task, version.version)
            self.recent = {number: w for number, w in self.recent.items() if number >= floor}
        self.latest = version
        # views of the version's bytes (which ``latest`` holds anyway): every reader only reads them
        # (strategies never mutate their inputs, clips make new tensors), so the model is held once
        self.latest_weights = from_wire(version.tensors, copy=False)
        self.server_state = from_wire(version.server_state)
        self.pending = [item for item in self.pending if item.update_id not in consumed]
        self.failed_with = -1
        self.fold = None


def window_floor(task: TrainingTask, latest_version: int) -> int:
    """The oldest version an accepted async update may have trained from: ``latest - max_staleness``."""
    return latest_version - max(task.round_policy.max_staleness, 0)


def initial_version(task: TrainingTask) -> ModelVersion:
    """Version 0: the task's model with weights drawn from the task's seed."""
    # views of the fresh model's own parameters (no clone, no copy): the model is held once, by the
    # version, not three times (module, clone, wire bytes) while a large version 0 is built
    state = {name: t.detach() for name, t in build_model(task.model, seed=task.seed).state_dict().items()}
    tensors = to_wire(state, copy=False)
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


def aggregate_version(
    task: TrainingTask,
    parent: ModelVersion,
    parent_weights: Mapping[str, torch.Tensor],
    server_state: Mapping[str, torch.Tensor],
    updates: Sequence[ClientUpdate] | RoundFold,
    *,
    created_at: datetime,
    dp_secret: bytes = b"",
) -> ModelVersion:
    """Aggregate accepted updates into the next version: the one function service and replay share.

    ``updates`` is a round already folded as it was decided (``governance.round_fold``: the service)
    or a list. A list of a folding strategy's updates is folded in the order given, which is the order
    the version lists (the replay passes the published order); for the rules that need every update it
    is sorted by ``(domain, update_id)`` (their result does not depend on the order anyway).

    Under central DP (``governance.policies.dp_mechanism``) the release is the noised uniform mean of the
    clipped deltas, computed first; the strategy's server step (FedAvgM momentum, FedAdam moments ...)
    then runs on that noised mean, so neither the weights nor the published ``server_state`` depend on
    the clean mean. The noise key binds ``dp_secret`` (held by governance and auditors only) to this
    round's content. Only what the mechanism covers is published: no example counts.
    """
    strategy = task_strategy(task)
    if isinstance(updates, RoundFold) or streams(strategy):
        fold = updates if isinstance(updates, RoundFold) else fold_all(task, parent_weights, updates)
        result = fold.release(parent, parent_weights, server_state, dp_secret=dp_secret)
        update_ids, domains, examples = fold.update_ids, fold.domains, fold.num_examples
    else:
        if not updates:
            raise ValueError("a version needs at least one accepted update")
        ordered = sorted(updates, key=lambda u: (u.domain, u.update_id))
        if task.privacy is None:
            result = strategy.aggregate(ordered, parent_weights, dict(server_state) or None)
        else:
            result = _dp_release(task, parent, parent_weights, server_state, ordered, strategy, dp_secret)
        update_ids = [u.update_id for u in ordered]
        domains = [u.domain for u in ordered]
        examples = sum(u.num_examples for u in ordered)
    version_number = parent.version + 1
    privacy: PrivacySpent | None = None
    metrics = {"num_updates": float(len(update_ids))}
    if task.privacy is None:
        metrics["num_examples"] = float(examples)
    else:
        privacy = privacy_spent(
            noise_multiplier=task.privacy.noise_multiplier,
            sample_rate=1.0,
            steps=version_number,
            delta=task.privacy.target_delta,
        )
    tensors = to_wire(result.weights, copy=False)  # the result is this version's alone: no second copy
    return ModelVersion(
        task_id=task.id,
        version=version_number,
        parent_version=parent.version,
        round=parent.round + 1,
        strategy=task.strategy,
        contributing_updates=list(update_ids),
        contributing_domains=list(domains),
        tensors=tensors,
        server_state=to_wire(result.state),
        sha256=tensors_sha256(tensors),
        metrics=metrics,
        privacy=privacy,
        created_at=created_at,
    )


def fold_all(
    task: TrainingTask, parent_weights: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]
) -> RoundFold:
    """``updates`` folded in the given order, as the service folds them one decision at a time."""
    if not updates:
        raise ValueError("a version needs at least one accepted update")
    fold = RoundFold(task, parent_weights)
    for update in updates:
        fold.add(update)
    return fold


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
