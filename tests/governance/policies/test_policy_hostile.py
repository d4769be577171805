"""Property test: hostile updates against the whole policy pipeline; only meshfl's own errors escape.

Weights of any dtype and shape (empty, NaN, inf, 1e38, bools, int8), missing and extra tensors, and
metadata at the int64 edges: every candidate gets a verdict (and the governance service's guard turns
anything else into an ``evaluation_error`` rejection, tested on the broker in
``tests/federation/test_hostile_updates.py``).
"""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_builders import make_ctx, make_task, make_update

from governance.policies import Candidate, evaluate_update
from meshfl.errors import MeshflError
from meshfl.events import PrivacyPolicy, UpdateChecks
from tests.hostile.hostile_strategies import names, torch_tensors

INT64 = st.one_of(st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63), 2**31]), st.integers(-5, 5))


@st.composite
def hostile_weights(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    weights = {}
    for name in ("fc.weight", "fc.bias"):
        if draw(st.booleans()):
            weights[name] = draw(torch_tensors())
        elif draw(st.booleans()):
            weights[name] = torch.full((3, 2) if name == "fc.weight" else (3,), draw(st.floats(width=32)))
    for extra in draw(st.lists(names(), max_size=2)):
        weights[extra] = draw(torch_tensors())
    return weights


@st.composite
def contexts(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    checks = UpdateChecks(
        max_l2_norm=draw(st.one_of(st.none(), st.floats(min_value=1e-6, max_value=1e6))),
        norm_action=draw(st.sampled_from(["reject", "clip"])),
        min_examples=draw(st.integers(min_value=0, max_value=10)),
    )
    privacy = draw(st.one_of(st.none(), st.just(PrivacyPolicy(clip_norm=1.0, noise_multiplier=1.0))))
    return make_ctx(make_task(update_checks=checks, privacy=privacy))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    weights=hostile_weights(),
    ctx=contexts(),
    num_examples=INT64,
    round_=INT64,
    base_version=INT64,
    metric=st.floats(allow_nan=True, allow_infinity=True),
    domain=st.one_of(st.just("sales"), names()),
)
def test_every_hostile_update_gets_a_verdict(  # type: ignore[no-untyped-def]
    weights, ctx, num_examples, round_, base_version, metric, domain
) -> None:
    update = make_update(
        num_examples=num_examples,
        round=round_,
        base_version=base_version,
        metrics={"loss": metric},
        domain=domain,
    )
    try:
        verdict, final = evaluate_update(Candidate(update=update, weights=weights), ctx)
    except MeshflError:
        return
    assert verdict.policy and verdict.reason
    if verdict.accepted:
        # Whatever passed is well formed: the model's tensors, finite.
        assert set(final) == set(ctx.expected)
        assert all(math.isfinite(float(t.double().abs().sum())) for t in final.values())
