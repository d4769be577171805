"""Governance policies: pure checks on model updates, round readiness and central differential privacy.

The governance service is a thin loop over these::

    verdict, weights = evaluate_update(Candidate(update, decoded), ctx)   # -> GovernanceDecision
    readiness = round_ready(task.round_policy, accepted=..., opened_at=..., now=..., ...)
    budget = check_budget(task.privacy, sample_rate=1.0, releases=...)     # BudgetExceeded -> stop
    check_dp_config(task)                                                  # at configuration time
    mean_delta = dp_mean_delta(base, updates, ..., key=noise_key(secret, ...))  # the DP release

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
from governance.policies.dp_config import DP_STRATEGIES, check_dp_config, dp_config_problems
from governance.policies.dp_mechanism import (
    MIN_SECRET_BYTES,
    ClippedSum,
    check_secret,
    dp_mean_delta,
    gaussian_stream,
    noise_key,
    noised_mean_delta,
)
from governance.policies.duplicate import Duplicate
from governance.policies.finite_values import FiniteValues
from governance.policies.known_domain import KnownDomain
from governance.policies.min_examples import MinExamples
from governance.policies.norm_bound import NormBound
from governance.policies.privacy import (
    BUDGET_POLICY,
    BudgetExceeded,
    check_budget,
    noise_std,
    privacy_spent,
)
from governance.policies.round import RoundReadiness, buffer_ready, buffer_size, round_ready, round_target
from governance.policies.task_round import TaskAndRound
from governance.policies.tensor_spec import TensorSpec

__all__ = [
    "ALL_CHECKS",
    "BUDGET_POLICY",
    "DP_STRATEGIES",
    "MIN_SECRET_BYTES",
    "NUMERIC_LOGICAL_TYPES",
    "UPDATE_POLICIES",
    "Admission",
    "BudgetExceeded",
    "Candidate",
    "ClippedSum",
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
    "buffer_ready",
    "buffer_size",
    "check_budget",
    "check_dp_config",
    "check_secret",
    "clip_delta",
    "contract_problems",
    "delta_l2_norm",
    "dp_config_problems",
    "dp_mean_delta",
    "evaluate_update",
    "gaussian_stream",
    "noise_key",
    "noise_std",
    "noised_mean_delta",
    "privacy_spent",
    "reject",
    "round_ready",
    "round_target",
]
