"""Governance policies: pure checks on model updates, round readiness and central differential privacy.

The governance service is a thin loop over these::

    verdict, weights = evaluate_update(Candidate(update, decoded), ctx)   # -> GovernanceDecision
    readiness = round_ready(task.round_policy, accepted=..., opened_at=..., now=..., ...)
    budget = check_budget(task.privacy, sample_rate=1.0, releases=...)     # BudgetExceeded -> stop
    noised = add_gaussian_noise(aggregate, global_weights, ..., seed=noise_seed(...))

Every policy is a frozen class with a ``name`` and a pure ``evaluate`` returning a ``Verdict`` that names
the policy and gives a reason; ``UPDATE_POLICIES`` is the explicit, ordered registry.
"""

from __future__ import annotations

from governance.policies.admission import Admission
from governance.policies.base import (
    Candidate,
    PolicyContext,
    TensorSpecs,
    UpdatePolicy,
    Verdict,
    accept,
    reject,
)
from governance.policies.checks import ALL_CHECKS, UPDATE_POLICIES, evaluate_update
from governance.policies.data_contract import NUMERIC_LOGICAL_TYPES, DataContract, contract_problems
from governance.policies.deltas import clip_delta, delta_l2_norm
from governance.policies.dp_clip import DPClip
from governance.policies.duplicate import Duplicate
from governance.policies.finite_values import FiniteValues
from governance.policies.known_domain import KnownDomain
from governance.policies.min_examples import MinExamples
from governance.policies.norm_bound import NormBound
from governance.policies.privacy import (
    BUDGET_POLICY,
    BudgetExceeded,
    add_gaussian_noise,
    check_budget,
    noise_seed,
    noise_std,
    privacy_spent,
)
from governance.policies.round import RoundReadiness, buffer_ready, buffer_size, round_ready, round_target
from governance.policies.task_round import TaskAndRound
from governance.policies.tensor_spec import TensorSpec

__all__ = [
    "ALL_CHECKS",
    "BUDGET_POLICY",
    "NUMERIC_LOGICAL_TYPES",
    "UPDATE_POLICIES",
    "Admission",
    "BudgetExceeded",
    "Candidate",
    "DPClip",
    "DataContract",
    "Duplicate",
    "FiniteValues",
    "KnownDomain",
    "MinExamples",
    "NormBound",
    "PolicyContext",
    "RoundReadiness",
    "TaskAndRound",
    "TensorSpec",
    "TensorSpecs",
    "UpdatePolicy",
    "Verdict",
    "accept",
    "add_gaussian_noise",
    "buffer_ready",
    "buffer_size",
    "check_budget",
    "clip_delta",
    "contract_problems",
    "delta_l2_norm",
    "evaluate_update",
    "noise_seed",
    "noise_std",
    "privacy_spent",
    "reject",
    "round_ready",
    "round_target",
]
