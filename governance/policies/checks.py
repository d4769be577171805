"""The update checks in order, and the loop that runs them: the first rejection wins.

The order is deliberate: cheap metadata checks that identify who is speaking and whether they may
(catalog, admission, contract) come before the round bookkeeping, then the tensor checks from cheapest
to costliest, and the transforming policies (norm clip, DP clip) last, so that they only ever see a
well-formed, finite update. A transforming policy returns replacement weights in its verdict; later
policies and the aggregate see those, never the original.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch

from governance.policies.admission import Admission
from governance.policies.base import Candidate, PolicyContext, UpdatePolicy, Verdict, accept
from governance.policies.data_contract import DataContract
from governance.policies.dp_clip import DPClip
from governance.policies.duplicate import Duplicate
from governance.policies.finite_values import FiniteValues
from governance.policies.known_domain import KnownDomain
from governance.policies.min_examples import MinExamples
from governance.policies.norm_bound import NormBound
from governance.policies.task_round import TaskAndRound
from governance.policies.tensor_spec import TensorSpec

ALL_CHECKS = "update_checks"
"""The policy name on the verdict of an update that passed every check."""

UPDATE_POLICIES: tuple[UpdatePolicy, ...] = (
    KnownDomain(),
    Admission(),
    DataContract(),
    TaskAndRound(),
    Duplicate(),
    TensorSpec(),
    FiniteValues(),
    MinExamples(),
    NormBound(),
    DPClip(),
)


def evaluate_update(
    candidate: Candidate,
    ctx: PolicyContext,
    policies: Sequence[UpdatePolicy] = UPDATE_POLICIES,
) -> tuple[Verdict, Mapping[str, torch.Tensor]]:
    """Run ``policies`` in order; return the verdict to record and the weights to aggregate.

    On rejection the verdict is the rejecting policy's own and the weights are the input's. On
    acceptance the verdict is named ``update_checks`` and its reason lists the checks passed and any
    transformation ("norm_bound: L2 norm of the delta clipped from 3.2 to 1"), so that the decision an
    auditor reads says which weights went into the aggregate.
    """
    current = candidate
    notes: list[str] = []
    for policy in policies:
        verdict = policy.evaluate(current, ctx)
        if not verdict.accepted:
            return verdict, candidate.weights
        if verdict.weights is not None:
            current = replace(current, weights=verdict.weights)
            notes.append(f"{verdict.policy}: {verdict.reason}")
    summary = f"passed {len(policies)} checks ({', '.join(p.name for p in policies)})"
    reason = "; ".join([summary, *notes])
    return accept(ALL_CHECKS, reason), current.weights
