"""What every governance policy speaks: the verdict it gives, the candidate it judges, the context it reads.

Every decision the governance service takes becomes a ``GovernanceDecision`` event that an auditor reads,
so a verdict always names the policy that gave it and a reason a human can act on ("tensor 'fc1.weight'
has 3 NaN"), never a bare boolean. Policies are small frozen classes with a pure ``evaluate``: no I/O, no
mutation of what they are given, the same answer for the same inputs (audit replays depend on it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import torch

from meshfl.events import DataProductDescriptor, DataProductRef, ModelUpdate, TrainingTask

TensorSpecs = Mapping[str, tuple[tuple[int, ...], torch.dtype]]
"""A model's tensor names -> (shape, dtype)."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of one policy on one candidate.

    ``weights`` is set only by a policy that transforms the update (a clip): the weights to use from then
    on. It is left out of ``repr`` and equality so that verdicts stay cheap to log and compare.
    """

    accepted: bool
    policy: str
    reason: str
    weights: Mapping[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)


def accept(policy: str, reason: str = "ok", *, weights: Mapping[str, torch.Tensor] | None = None) -> Verdict:
    return Verdict(accepted=True, policy=policy, reason=reason, weights=weights)


def reject(policy: str, reason: str) -> Verdict:
    return Verdict(accepted=False, policy=policy, reason=reason)


@dataclass(frozen=True)
class Candidate:
    """A model update under review: its metadata and its tensors, already decoded by the service."""

    update: ModelUpdate
    weights: Mapping[str, torch.Tensor] = field(repr=False)


@dataclass(frozen=True)
class PolicyContext:
    """What the service knows when it judges an update (read from the log, so replayable).

    ``catalog`` maps a domain to its registered data products (every version the catalog holds);
    ``decided_update_ids`` are the updates already accepted or rejected for this task;
    ``accepted_domains_this_round`` the domains with an accepted update in the open round.
    """

    task: TrainingTask
    open_round: int
    latest_version: int
    global_weights: Mapping[str, torch.Tensor] = field(repr=False)
    expected: TensorSpecs = field(repr=False)
    catalog: Mapping[str, Sequence[DataProductDescriptor]] = field(repr=False)
    decided_update_ids: AbstractSet[str] = frozenset()
    accepted_domains_this_round: AbstractSet[str] = frozenset()

    def products_of(self, domain: str) -> Sequence[DataProductDescriptor]:
        """The products ``domain`` has registered (empty when it registered none)."""
        return self.catalog.get(domain, ())

    def resolve(self, domain: str, ref: DataProductRef) -> DataProductDescriptor | None:
        """The registered product of ``domain`` with exactly this id and version, if any."""
        for product in self.products_of(domain):
            if product.id == ref.id and product.version == ref.version:
                return product
        return None


@runtime_checkable
class UpdatePolicy(Protocol):
    """One update check: a name for the audit trail and a pure ``evaluate``."""

    name: ClassVar[str]

    def evaluate(self, candidate: Candidate, ctx: PolicyContext) -> Verdict: ...


def summarize(items: Sequence[str], *, limit: int = 5) -> str:
    """``a, b, c`` or ``a, b, c (+4 more)``: keeps reasons short when many things are wrong."""
    shown = ", ".join(items[:limit])
    extra = len(items) - limit
    return f"{shown} (+{extra} more)" if extra > 0 else shown
