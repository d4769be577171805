"""The tensor checks and the transforming policies: spec, finite values, norm bound, DP clip, delta math."""

from __future__ import annotations

import math

import pytest
import torch
from policy_builders import make_candidate, make_ctx, make_global, make_task, make_update, shifted

from governance.policies import (
    Candidate,
    DPClip,
    FiniteValues,
    NormBound,
    TensorSpec,
    clip_delta,
    delta_l2_norm,
)
from meshfl.events import PrivacyPolicy, UpdateChecks

NUM_PARAMS = 9  # fc.weight (3, 2) + fc.bias (3,)


def _clone(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in weights.items()}


# --- tensor spec --------------------------------------------------------------------------------


def test_tensor_spec_accepts_the_model_layout() -> None:
    ctx = make_ctx()
    verdict = TensorSpec().evaluate(make_candidate(ctx), ctx)
    assert verdict.accepted
    assert "2 tensors match" in verdict.reason


def test_tensor_spec_lists_missing_extra_shape_and_dtype_differences() -> None:
    ctx = make_ctx()
    weights = {
        "fc.weight": torch.zeros(2, 3),
        "fc.extra": torch.zeros(1),
    }
    verdict = TensorSpec().evaluate(Candidate(make_update(), weights), ctx)
    assert not verdict.accepted
    assert verdict.policy == "tensor_spec"
    assert "missing 'fc.bias'" in verdict.reason
    assert "unexpected 'fc.extra'" in verdict.reason
    assert "'fc.weight' shape (2, 3) != (3, 2)" in verdict.reason

    retyped = {name: t.to(torch.float64) for name, t in ctx.global_weights.items()}
    verdict = TensorSpec().evaluate(Candidate(make_update(), retyped), ctx)
    assert not verdict.accepted
    assert "'fc.bias' dtype float64 != float32" in verdict.reason


def test_tensor_spec_keeps_the_reason_short() -> None:
    expected = {f"t{i}": ((1,), torch.float32) for i in range(20)}
    ctx = make_ctx(expected=expected)
    verdict = TensorSpec().evaluate(Candidate(make_update(), {}), ctx)
    assert verdict.reason.startswith("20 difference(s)")
    assert "(+15 more)" in verdict.reason


# --- finite values ------------------------------------------------------------------------------


def test_finite_values_counts_nan_and_inf_per_tensor() -> None:
    ctx = make_ctx()
    weights = _clone(ctx.global_weights)
    weights["fc.weight"][0, 0] = float("nan")
    weights["fc.weight"][1, 0] = float("nan")
    weights["fc.bias"][2] = float("-inf")
    verdict = FiniteValues().evaluate(Candidate(make_update(), weights), ctx)
    assert not verdict.accepted
    assert "'fc.bias' has 0 NaN and 1 Inf" in verdict.reason
    assert "'fc.weight' has 2 NaN and 0 Inf" in verdict.reason


def test_finite_values_accepts_finite_and_integer_tensors() -> None:
    ctx = make_ctx()
    weights = {**ctx.global_weights, "bn.num_batches_tracked": torch.tensor(5)}
    assert FiniteValues().evaluate(Candidate(make_update(), weights), ctx).accepted


def test_finite_values_accepts_finite_values_whose_sum_overflows() -> None:
    ctx = make_ctx()
    huge = {"fc.weight": torch.full((3, 2), 3e38), "fc.bias": torch.zeros(3)}
    assert not math.isfinite(float(huge["fc.weight"].sum()))
    assert FiniteValues().evaluate(Candidate(make_update(), huge), ctx).accepted


@pytest.mark.parametrize(
    ("where", "value"),
    [("half", float("nan")), ("wide", float("inf")), ("cplx", complex(0.0, float("nan"))), (None, 0.0)],
    ids=["bf16-nan", "f64-inf", "complex-nan", "all-finite"],
)
def test_finite_values_over_mixed_dtypes(where: str | None, value: complex) -> None:
    """The sums of a state of several dtypes are tested together: one offender in any of them is found."""
    ctx = make_ctx()
    weights = {
        "fc.weight": torch.ones(4, 3),
        "half": torch.ones(5, dtype=torch.bfloat16),
        "wide": torch.ones(6, dtype=torch.float64),
        "cplx": torch.ones(2, dtype=torch.complex64),
    }
    if where is not None:
        weights[where][1] = value
    verdict = FiniteValues().evaluate(Candidate(make_update(), weights), ctx)
    assert verdict.accepted is (where is None)
    if where is not None:
        assert f"{where!r} has" in verdict.reason


# --- delta math ---------------------------------------------------------------------------------


def test_delta_norm_is_the_norm_of_the_whole_flattened_delta() -> None:
    base = make_global()
    assert delta_l2_norm(shifted(base, 0.5), base) == pytest.approx(0.5 * math.sqrt(NUM_PARAMS), rel=1e-6)
    assert delta_l2_norm(base, base) == 0.0


def test_delta_norm_ignores_integer_tensors() -> None:
    base = {**make_global(), "steps": torch.tensor(3)}
    moved = {**shifted(make_global(), 1.0), "steps": torch.tensor(1000)}
    assert delta_l2_norm(moved, base) == pytest.approx(math.sqrt(NUM_PARAMS), rel=1e-6)


def test_delta_norm_refuses_misaligned_weights() -> None:
    base = make_global()
    with pytest.raises(ValueError, match=r"fc\.extra"):
        delta_l2_norm({**base, "fc.extra": torch.zeros(1)}, base)


def test_clip_delta_reaches_the_bound_keeps_direction_and_leaves_input_untouched() -> None:
    generator = torch.Generator().manual_seed(3)
    base = {"w": torch.randn(1000, generator=generator, dtype=torch.float64)}
    weights = {"w": base["w"] + 5 * torch.randn(1000, generator=generator, dtype=torch.float64)}
    before = _clone(weights)
    clipped, norm = clip_delta(weights, base, 2.0)
    assert norm > 2.0
    assert delta_l2_norm(clipped, base) == pytest.approx(2.0, abs=1e-6)
    cosine = torch.nn.functional.cosine_similarity(clipped["w"] - base["w"], weights["w"] - base["w"], dim=0)
    assert float(cosine) == pytest.approx(1.0, abs=1e-12)
    assert torch.equal(weights["w"], before["w"])


def test_clip_delta_keeps_half_precision_dtypes() -> None:
    base = {"w": torch.zeros(4, dtype=torch.float16), "b": torch.zeros(2, dtype=torch.bfloat16)}
    weights = {
        "w": torch.full((4,), 2.0, dtype=torch.float16),
        "b": torch.full((2,), 2.0, dtype=torch.bfloat16),
    }
    clipped, norm = clip_delta(weights, base, 1.0)
    assert norm == pytest.approx(2.0 * math.sqrt(6))
    assert clipped["w"].dtype == torch.float16 and clipped["b"].dtype == torch.bfloat16
    assert delta_l2_norm(clipped, base) == pytest.approx(1.0, rel=1e-2)


def test_clip_delta_within_bound_returns_the_same_tensors() -> None:
    base = make_global()
    weights = shifted(base, 0.1)
    clipped, norm = clip_delta(weights, base, 10.0)
    assert norm == pytest.approx(0.3, rel=1e-5)
    assert all(clipped[name] is weights[name] for name in weights)


# --- norm bound ---------------------------------------------------------------------------------


def _norm_ctx(action: str, bound: float | None = 1.0):
    return make_ctx(make_task(update_checks=UpdateChecks(max_l2_norm=bound, norm_action=action)))


def test_norm_bound_accepts_within_bound_and_without_bound() -> None:
    ctx = _norm_ctx("reject")
    verdict = NormBound().evaluate(make_candidate(ctx, delta=0.1), ctx)
    assert verdict.accepted and verdict.weights is None
    assert "within bound 1" in verdict.reason
    unbounded = _norm_ctx("reject", bound=None)
    assert NormBound().evaluate(make_candidate(unbounded, delta=100.0), unbounded).accepted


def test_norm_bound_rejects_an_oversized_update_with_its_norm() -> None:
    ctx = _norm_ctx("reject")
    verdict = NormBound().evaluate(make_candidate(ctx, delta=1.0), ctx)
    assert not verdict.accepted
    assert verdict.policy == "norm_bound"
    assert "L2 norm of the delta 3 exceeds bound 1" in verdict.reason


def test_norm_bound_clips_to_the_bound_in_clip_mode() -> None:
    ctx = _norm_ctx("clip", bound=1.5)
    candidate = make_candidate(ctx, delta=1.0)
    before = _clone(dict(candidate.weights))
    verdict = NormBound().evaluate(candidate, ctx)
    assert verdict.accepted
    assert "clipped from 3 to 1.5" in verdict.reason
    assert verdict.weights is not None
    assert delta_l2_norm(verdict.weights, ctx.global_weights) == pytest.approx(1.5, abs=1e-6)
    for name, tensor in verdict.weights.items():
        expected = ctx.global_weights[name] + 0.5  # each coordinate's delta 1.0 scaled by 1.5 / 3
        assert torch.allclose(tensor, expected, atol=1e-6)
        assert tensor.dtype == torch.float32
        assert torch.equal(candidate.weights[name], before[name])


def test_norm_bound_fails_closed_on_a_misconfiguration() -> None:
    for ctx, fact in ((_norm_ctx("shrink"), "unknown norm_action 'shrink'"), (_norm_ctx("clip", 0.0), "> 0")):
        verdict = NormBound().evaluate(make_candidate(ctx), ctx)
        assert not verdict.accepted
        assert fact in verdict.reason


# --- DP clip ------------------------------------------------------------------------------------


def _dp_ctx(clip_norm: float):
    return make_ctx(make_task(privacy=PrivacyPolicy(clip_norm=clip_norm, noise_multiplier=1.0)))


def test_dp_clip_is_a_no_op_without_privacy() -> None:
    ctx = make_ctx()
    verdict = DPClip().evaluate(make_candidate(ctx, delta=100.0), ctx)
    assert verdict.accepted and verdict.weights is None
    assert verdict.reason == "no privacy policy"


def test_dp_clip_clips_to_clip_norm_and_publishes_no_norm() -> None:
    ctx = _dp_ctx(0.3)
    candidate = make_candidate(ctx, delta=0.5)
    verdict = DPClip().evaluate(candidate, ctx)
    assert verdict.accepted
    assert verdict.policy == "dp_clip"
    assert verdict.reason == "delta clipped to L2 norm <= 0.3 (norms are not published under DP)"
    assert verdict.weights is not None
    assert delta_l2_norm(verdict.weights, ctx.global_weights) == pytest.approx(0.3, abs=1e-6)


def test_dp_clip_leaves_a_small_update_unchanged() -> None:
    ctx = _dp_ctx(10.0)
    candidate = make_candidate(ctx, delta=0.5)
    verdict = DPClip().evaluate(candidate, ctx)
    assert verdict.accepted and verdict.weights is not None
    assert all(verdict.weights[n] is candidate.weights[n] for n in candidate.weights)  # no copy
    assert verdict.reason == "delta clipped to L2 norm <= 10 (norms are not published under DP)"


def test_dp_clip_rejects_a_non_positive_clip_norm() -> None:
    ctx = _dp_ctx(0.0)
    assert not DPClip().evaluate(make_candidate(ctx), ctx).accepted
