"""Central DP: the Gaussian mechanism on the aggregate, the noise seed, the RDP accounting, the budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

from governance.policies import (
    BUDGET_POLICY,
    BudgetExceeded,
    add_gaussian_noise,
    check_budget,
    noise_seed,
    noise_std,
    privacy_spent,
)
from meshfl.events import PrivacyPolicy, PrivacySpent

SECRET = b"governance-and-auditors-only"


def _model(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "fc.weight": torch.randn(64, 32, generator=generator),
        "fc.bias": torch.randn(64, generator=generator),
        "steps": torch.tensor(12),
    }


def _noised(seed: int, **overrides: float) -> dict[str, torch.Tensor]:
    kwargs = {"clip_norm": 1.0, "noise_multiplier": 1.0, "num_updates": 4, **overrides}
    return add_gaussian_noise(_model(1), _model(0), seed=seed, **kwargs)  # type: ignore[arg-type]


# --- mechanism ----------------------------------------------------------------------------------


def test_noise_is_bit_for_bit_reproducible_per_seed() -> None:
    first, second = _noised(42), _noised(42)
    assert list(first) == list(_model(1))  # the aggregate's tensor order is kept
    for name in first:
        assert torch.equal(first[name], second[name])
        assert first[name].dtype == _model(1)[name].dtype


def test_noise_differs_between_seeds_and_is_actually_added() -> None:
    a, b = _noised(1), _noised(2)
    assert not torch.equal(a["fc.weight"], b["fc.weight"])
    assert not torch.equal(a["fc.weight"], _model(1)["fc.weight"])


def test_integer_tensors_pass_through_and_inputs_are_untouched() -> None:
    aggregate, base = _model(1), _model(0)
    copies = {name: t.clone() for name, t in aggregate.items()}
    noised = add_gaussian_noise(aggregate, base, clip_norm=1.0, noise_multiplier=1.0, num_updates=2, seed=5)
    assert torch.equal(noised["steps"], aggregate["steps"])
    assert all(torch.equal(aggregate[name], copies[name]) for name in aggregate)


def test_noise_std_matches_the_formula_on_a_large_tensor() -> None:
    clip_norm, multiplier, n = 0.8, 1.3, 5
    expected = multiplier * clip_norm / n
    assert noise_std(clip_norm=clip_norm, noise_multiplier=multiplier, num_updates=n) == pytest.approx(
        expected
    )
    aggregate = {"w": torch.full((1_000_000,), 0.25, dtype=torch.float64)}
    base = {"w": torch.zeros(1_000_000, dtype=torch.float64)}
    noised = add_gaussian_noise(
        aggregate, base, clip_norm=clip_norm, noise_multiplier=multiplier, num_updates=n, seed=11
    )
    noise = noised["w"] - aggregate["w"]
    assert float(noise.std()) == pytest.approx(expected, rel=0.01)
    assert abs(float(noise.mean())) < 5 * expected / math.sqrt(1_000_000)


def test_zero_noise_multiplier_adds_nothing() -> None:
    noised = _noised(3, noise_multiplier=0.0)
    assert torch.equal(noised["fc.weight"], _model(1)["fc.weight"])


def test_noise_refuses_a_mismatched_model_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="differ in tensors"):
        add_gaussian_noise(
            {"a": torch.zeros(2)},
            {"b": torch.zeros(2)},
            clip_norm=1,
            noise_multiplier=1,
            num_updates=1,
            seed=0,
        )
    with pytest.raises(ValueError, match="shape"):
        add_gaussian_noise(
            {"a": torch.zeros(2)},
            {"a": torch.zeros(3)},
            clip_norm=1,
            noise_multiplier=1,
            num_updates=1,
            seed=0,
        )
    with pytest.raises(ValueError, match="num_updates"):
        noise_std(clip_norm=1.0, noise_multiplier=1.0, num_updates=0)


def test_noise_seed_is_keyed_deterministic_and_distinct() -> None:
    seed = noise_seed("churn-v1", 3, secret=SECRET)
    assert seed == noise_seed("churn-v1", 3, secret=SECRET)
    assert 0 <= seed < 2**63
    others = {
        noise_seed("churn-v1", 4, secret=SECRET),
        noise_seed("churn-v2", 3, secret=SECRET),
        noise_seed("churn-v1", 3, secret=b"another secret"),
    }
    assert seed not in others and len(others) == 3
    with pytest.raises(ValueError, match="secret"):
        noise_seed("churn-v1", 3, secret=b"")


# --- accounting ---------------------------------------------------------------------------------


def test_privacy_spent_grows_with_steps_and_shrinks_with_noise() -> None:
    by_steps = [privacy_spent(1.0, 1.0, steps, 1e-5).epsilon for steps in (1, 5, 20, 100)]
    assert by_steps == sorted(by_steps) and len(set(by_steps)) == 4
    by_noise = [privacy_spent(z, 1.0, 20, 1e-5).epsilon for z in (0.8, 1.0, 2.0, 5.0)]
    assert by_noise == sorted(by_noise, reverse=True) and len(set(by_noise)) == 4
    assert privacy_spent(1.0, 1.0, 0, 1e-5) == PrivacySpent(epsilon=0.0, delta=1e-5)


def test_privacy_spent_matches_opacus_rdp_accountant() -> None:
    accountant = RDPAccountant()
    for _ in range(30):
        accountant.step(noise_multiplier=1.2, sample_rate=0.5)
    theirs = accountant.get_epsilon(delta=1e-5)
    same_orders = privacy_spent(1.2, 0.5, 30, 1e-5, orders=RDPAccountant.DEFAULT_ALPHAS)
    assert same_orders.epsilon == pytest.approx(theirs, rel=1e-12)
    wider = privacy_spent(1.2, 0.5, 30, 1e-5)  # a superset of orders can only tighten the bound
    assert theirs * 0.99 <= wider.epsilon <= theirs + 1e-12


def test_full_participation_matches_the_closed_form_gaussian_rdp() -> None:
    """q = 1: the Gaussian mechanism's RDP is T * alpha / (2 z^2) [Mironov 2017], then Balle et al. 2020."""
    z, steps, delta = 2.0, 50, 1e-6
    orders = np.array(RDPAccountant.DEFAULT_ALPHAS, dtype=np.float64)
    rdp = steps * orders / (2 * z**2)
    eps = rdp + np.log((orders - 1) / orders) - (np.log(delta) + np.log(orders)) / (orders - 1)
    spent = privacy_spent(z, 1.0, steps, delta, orders=RDPAccountant.DEFAULT_ALPHAS)
    assert spent.epsilon == pytest.approx(float(eps.min()), rel=1e-9)


def test_rdp_part_reproduces_tf_privacys_published_mnist_figure() -> None:
    """TF Privacy's tutorial: N=60000, batch 256, z=1.1, 60 epochs, delta=1e-5 -> eps = 3.01.

    That figure used the older conversion eps = rdp - log(delta) / (alpha - 1); the tighter one of
    Balle et al. 2020 that Opacus (and we) use must give less.
    """
    q, steps = 256 / 60000, 14063
    orders = np.array(RDPAccountant.DEFAULT_ALPHAS, dtype=np.float64)
    rdp = rdp_analysis.compute_rdp(q=q, noise_multiplier=1.1, steps=steps, orders=list(orders))
    assert float(np.min(rdp - np.log(1e-5) / (orders - 1))) == pytest.approx(3.01, abs=0.005)
    assert privacy_spent(1.1, q, steps, 1e-5).epsilon < 3.0


def test_privacy_spent_rejects_invalid_arguments() -> None:
    for args in ((0.0, 1.0, 1, 1e-5), (1.0, 0.0, 1, 1e-5), (1.0, 1.5, 1, 1e-5), (1.0, 1.0, -1, 1e-5)):
        with pytest.raises(ValueError):
            privacy_spent(*args)
    with pytest.raises(ValueError, match="delta"):
        privacy_spent(1.0, 1.0, 1, 1.0)


# --- budget -------------------------------------------------------------------------------------


def test_budget_accepts_while_the_next_release_fits() -> None:
    policy = PrivacyPolicy(clip_norm=1.0, noise_multiplier=1.0, target_delta=1e-5, max_epsilon=10.0)
    verdict = check_budget(policy, sample_rate=1.0, releases=0)
    assert verdict.accepted
    assert verdict.policy == BUDGET_POLICY
    assert "within budget" in verdict.reason and "max_epsilon=10" in verdict.reason


def test_budget_exceeded_when_the_next_release_would_overspend() -> None:
    policy = PrivacyPolicy(clip_norm=1.0, noise_multiplier=1.0, target_delta=1e-5, max_epsilon=10.0)
    releases = next(r for r in range(100) if not check_budget(policy, sample_rate=1.0, releases=r).accepted)
    assert releases > 0
    verdict = check_budget(policy, sample_rate=1.0, releases=releases)
    assert isinstance(verdict, BudgetExceeded)
    assert verdict.policy == BUDGET_POLICY
    assert verdict.reason.startswith("budget exceeded")
    projected = privacy_spent(1.0, 1.0, releases + 1, 1e-5).epsilon
    assert verdict.projected_epsilon == pytest.approx(projected)
    assert verdict.projected_epsilon > 10.0 >= privacy_spent(1.0, 1.0, releases, 1e-5).epsilon
    assert f"release {releases + 1} would bring epsilon={projected:.4g}" in verdict.reason


def test_budget_without_a_cap_reports_the_spend_and_bad_policies_are_refused() -> None:
    uncapped = PrivacyPolicy(clip_norm=1.0, noise_multiplier=1.0)
    verdict = check_budget(uncapped, sample_rate=1.0, releases=1000)
    assert verdict.accepted and "no epsilon budget set" in verdict.reason
    no_noise = PrivacyPolicy(clip_norm=1.0, noise_multiplier=0.0, max_epsilon=1.0)
    refused = check_budget(no_noise, sample_rate=1.0, releases=0)
    assert not refused.accepted and not isinstance(refused, BudgetExceeded)
    assert "gives no privacy" in refused.reason


def test_default_orders_are_opacus_defaults() -> None:
    from opacus.accountants import RDPAccountant

    from governance.policies.privacy import OPACUS_DEFAULT_ALPHAS

    assert list(OPACUS_DEFAULT_ALPHAS) == [float(a) for a in RDPAccountant.DEFAULT_ALPHAS]
