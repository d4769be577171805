"""``evaluate_update``: order, first rejection wins, transformed weights flow through, the public surface."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from policy_builders import make_candidate, make_ctx, make_product, make_task

import governance.policies as policies
from governance.policies import (
    ALL_CHECKS,
    UPDATE_POLICIES,
    Candidate,
    PolicyContext,
    UpdatePolicy,
    Verdict,
    accept,
    delta_l2_norm,
    evaluate_update,
    reject,
)
from meshfl.events import AdmissionPolicy, PrivacyPolicy, UpdateChecks

EXPECTED_ORDER = [
    "known_domain",
    "admission",
    "data_contract",
    "task_and_round",
    "duplicate",
    "tensor_spec",
    "finite_values",
    "min_examples",
    "norm_bound",
    "dp_clip",
]


def test_registry_is_the_documented_order_of_frozen_policies() -> None:
    assert [policy.name for policy in UPDATE_POLICIES] == EXPECTED_ORDER
    for policy in UPDATE_POLICIES:
        assert isinstance(policy, UpdatePolicy)
        assert dataclasses.is_dataclass(policy)
        assert type(policy).__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_a_good_update_passes_every_check_unchanged() -> None:
    ctx = make_ctx()
    candidate = make_candidate(ctx)
    verdict, weights = evaluate_update(candidate, ctx)
    assert verdict.accepted
    assert verdict.policy == ALL_CHECKS
    assert verdict.reason == f"passed 10 checks ({', '.join(EXPECTED_ORDER)})"
    assert weights is candidate.weights


def test_the_first_rejection_wins() -> None:
    task = make_task(admission=AdmissionPolicy(suspended_domains=["sales"]))
    catalog = {"sales": [make_product("sales", columns=[])]}  # also breaks the data contract
    ctx = make_ctx(task, catalog=catalog, open_round=2)  # and the round
    candidate = make_candidate(ctx)
    verdict, weights = evaluate_update(candidate, ctx)
    assert not verdict.accepted
    assert verdict.policy == "admission"
    assert weights is candidate.weights


def test_later_checks_still_reject_after_earlier_ones_pass() -> None:
    ctx = make_ctx()
    weights = {name: t.clone() for name, t in ctx.global_weights.items()}
    weights["fc.bias"][0] = float("nan")
    verdict, _ = evaluate_update(Candidate(make_candidate(ctx).update, weights), ctx)
    assert (verdict.accepted, verdict.policy) == (False, "finite_values")


def test_norm_clip_then_dp_clip_feed_the_aggregate_and_are_reported() -> None:
    task = make_task(
        update_checks=UpdateChecks(max_l2_norm=2.0, norm_action="clip"),
        privacy=PrivacyPolicy(clip_norm=0.5, noise_multiplier=1.0),
    )
    ctx = make_ctx(task)
    candidate = make_candidate(ctx, delta=1.0)
    original = {name: t.clone() for name, t in candidate.weights.items()}
    verdict, weights = evaluate_update(candidate, ctx)
    assert verdict.accepted
    assert "norm_bound: delta clipped to L2 norm <= 2 (not published under DP)" in verdict.reason
    assert "dp_clip: delta clipped to L2 norm <= 0.5 (norms are not published under DP)" in verdict.reason
    assert delta_l2_norm(weights, ctx.global_weights) == pytest.approx(0.5, abs=1e-6)
    assert all(torch.equal(candidate.weights[n], original[n]) for n in original)


def test_under_dp_the_decision_says_the_same_for_every_update() -> None:
    """A pre-clip norm, or whether an update was clipped at all, is a fact about a domain's data that a
    decision would publish outside the noise: under DP every accepted update gets the same reason."""
    task = make_task(
        update_checks=UpdateChecks(max_l2_norm=2.0, norm_action="clip"),
        privacy=PrivacyPolicy(clip_norm=0.5, noise_multiplier=1.0),
    )
    ctx = make_ctx(task)
    reasons = {evaluate_update(make_candidate(ctx, delta=d), ctx)[0].reason for d in (1e-4, 0.1, 1.0, 30.0)}
    assert len(reasons) == 1
    assert not any(char.isdigit() for char in reasons.pop().split("(")[-1])
    rejecting = make_task(
        update_checks=UpdateChecks(max_l2_norm=2.0, norm_action="reject"),
        privacy=PrivacyPolicy(clip_norm=0.5, noise_multiplier=1.0),
    )
    ctx = make_ctx(rejecting)
    verdicts = {evaluate_update(make_candidate(ctx, delta=d), ctx)[0] for d in (1e-4, 30.0)}
    assert verdicts == {Verdict(False, "norm_bound", "norm_action must be 'clip' under central DP")}


def test_a_custom_policy_list_is_honoured() -> None:
    class Veto:
        name = "veto"

        def evaluate(self, candidate: Candidate, ctx: PolicyContext) -> Verdict:
            return reject(self.name, f"no updates from {candidate.update.domain}")

    ctx = make_ctx()
    verdict, _ = evaluate_update(make_candidate(ctx), ctx, policies=[*UPDATE_POLICIES[:2], Veto()])
    assert verdict == Verdict(False, "veto", "no updates from sales")


def test_verdict_helpers_and_equality_ignore_weights() -> None:
    assert accept("p") == Verdict(True, "p", "ok")
    assert accept("p", "x", weights={"w": torch.zeros(1)}) == Verdict(True, "p", "x")
    assert reject("p", "why") == Verdict(False, "p", "why")
    with pytest.raises(dataclasses.FrozenInstanceError):
        reject("p", "why").accepted = True  # type: ignore[misc]


def test_public_surface() -> None:
    assert sorted(policies.__all__) == sorted(
        [
            "ALL_CHECKS",
            "BUDGET_POLICY",
            "NUMERIC_LOGICAL_TYPES",
            "UPDATE_POLICIES",
            "Admission",
            "BudgetExceeded",
            "Candidate",
            "ClippedSum",
            "DPClip",
            "DP_STRATEGIES",
            "DataContract",
            "Duplicate",
            "FiniteValues",
            "KnownDomain",
            "MIN_SECRET_BYTES",
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
            "noised_mean_delta",
            "noise_std",
            "privacy_spent",
            "reject",
            "round_ready",
            "round_target",
        ]
    )
    assert all(hasattr(policies, name) for name in policies.__all__)


def test_under_dp_rejections_publish_no_count_of_the_domains() -> None:
    """Claimed example counts and NaN counts are facts about a domain's update, outside the noise."""
    task = make_task(
        update_checks=UpdateChecks(min_examples=10),
        privacy=PrivacyPolicy(clip_norm=0.5, noise_multiplier=1.0),
    )
    ctx = make_ctx(task)
    few = evaluate_update(make_candidate(ctx, num_examples=7), ctx)[0]
    assert (few.accepted, few.policy) == (False, "min_examples")
    assert "7" not in few.reason and "not published under DP" in few.reason
    weights = {name: t.clone() for name, t in ctx.global_weights.items()}
    weights["fc.bias"][:3] = float("nan")
    nan = evaluate_update(Candidate(make_candidate(ctx).update, weights), ctx)[0]
    assert (nan.accepted, nan.policy) == (False, "finite_values")
    assert not any(char.isdigit() for char in nan.reason) and "fc.bias" not in nan.reason
    plain = make_ctx(make_task(update_checks=UpdateChecks(min_examples=10)))
    assert (
        "num_examples 7 is below the minimum 10"
        in evaluate_update(make_candidate(plain, num_examples=7), plain)[0].reason
    )
