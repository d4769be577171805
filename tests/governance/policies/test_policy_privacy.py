"""Central DP accounting: the noise std, the RDP accounting, the budget."""

from __future__ import annotations

import numpy as np
import pytest
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

from governance.policies import (
    BUDGET_POLICY,
    BudgetExceeded,
    check_budget,
    noise_std,
    privacy_spent,
)
from meshfl.events import PrivacyPolicy, PrivacySpent


def test_noise_std_is_z_c_over_n() -> None:
    assert noise_std(clip_norm=0.8, noise_multiplier=1.3, num_updates=5) == pytest.approx(1.3 * 0.8 / 5)
    with pytest.raises(ValueError, match="num_updates"):
        noise_std(clip_norm=1.0, noise_multiplier=1.0, num_updates=0)


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
