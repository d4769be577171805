"""Central differential privacy per domain: the accounting of the Gaussian mechanism, and the budget.

The mechanism is ``governance.policies.dp_mechanism`` (clip each delta to ``C``, sum, add
``N(0, (z C)^2)`` to the sum, divide by the public ``n``); which tasks it can protect is
``governance.policies.dp_config``. Uniform weights are required: with example weights ``n_k / sum n``, a
domain claiming many examples carries up to the whole weight and the sensitivity of the mean approaches
``C`` instead of ``C / n`` (McMahan et al., 2018, arXiv:1710.06963, bound it by capping the weights with a
fixed denominator; meshfl implements the uniform case only).

Adjacency: **zero-out** -- two federations are neighbours when one domain's contribution is replaced by
the zero delta: its *content* is added or removed, its participation stays. Participation cannot be
protected here: ``n`` and the contributing domains are public in every version (removing a participant
changes ``n``, visibly). Which domains took part in which version is therefore *not* protected. What
the epsilon bounds is what the released versions reveal about the content of a domain's update (hence
its data). Under **replace-one** adjacency (one domain's update swapped for any
other) the sum moves by up to ``2C``: the same mechanism gives the guarantee of noise multiplier
``z / 2`` (for ``z = 1``, 100 releases, delta 1e-5: epsilon 96 under zero-out, 295 under replace-one), so
double ``noise_multiplier`` to keep the reported epsilon.

Accounting: Rényi DP of the sampled Gaussian mechanism [Mironov et al., 2019, arXiv:1908.10530] with
the RDP -> (epsilon, delta) conversion of Balle et al., 2020 (arXiv:1905.09982), both computed by Opacus
(``opacus.accountants.analysis.rdp``). One step is one noised release; ``sample_rate`` is the fraction
of domains taking part per round (1.0 when all do, which gives no amplification). Amplification by
sampling assumes the service samples domains at random and secretly; domains that choose for themselves
whether to answer do not qualify, so use 1.0 unless the service samples.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from governance.policies.base import Verdict, accept, reject
from meshfl.events import PrivacyPolicy, PrivacySpent
from meshfl.extras import require
from meshfl.logs import get_logger

log = get_logger(__name__)

BUDGET_POLICY = "privacy_budget"
"""The policy name on budget verdicts."""

OPACUS_DEFAULT_ALPHAS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
"""``opacus.accountants.RDPAccountant.DEFAULT_ALPHAS`` (a test pins the equality), spelled out so that
importing the policies does not load Opacus (~2 s); it loads on the first privacy computation."""

RDP_ORDERS: tuple[float, ...] = tuple(
    sorted(
        {1 + x / 100 for x in range(1, 10)}
        | {float(a) for a in OPACUS_DEFAULT_ALPHAS}
        | {64.0, 80.0, 96.0, 128.0, 256.0, 512.0}
    )
)
"""Opacus' default RDP orders, widened at both ends so the optimum is rarely at an edge."""


# --- mechanism ----------------------------------------------------------------------------------


def noise_std(*, clip_norm: float, noise_multiplier: float, num_updates: int) -> float:
    """Std of the Gaussian noise on the uniform mean of ``num_updates`` deltas clipped to ``clip_norm``."""
    if num_updates < 1:
        raise ValueError(f"num_updates must be >= 1, got {num_updates}")
    if not clip_norm > 0 or noise_multiplier < 0:
        raise ValueError(f"need clip_norm > 0 and noise_multiplier >= 0, got {clip_norm}, {noise_multiplier}")
    return noise_multiplier * clip_norm / num_updates


# --- accounting ---------------------------------------------------------------------------------


def privacy_spent(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    *,
    orders: Sequence[float] = RDP_ORDERS,
) -> PrivacySpent:
    """(epsilon, delta) after ``steps`` noised releases, by Opacus' RDP accountant analysis."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    if steps == 0:
        return PrivacySpent(epsilon=0.0, delta=delta)
    epsilon = _epsilon(float(noise_multiplier), float(sample_rate), int(steps), float(delta), tuple(orders))
    return PrivacySpent(epsilon=epsilon, delta=delta)


@functools.lru_cache(maxsize=4096)
def _epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, orders: tuple) -> float:
    """Cached: the service asks the same question per version and per budget check, Opacus takes ~ms."""
    rdp_analysis = require("opacus.accountants.analysis.rdp", "dp")

    rdp = rdp_analysis.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=list(orders)
    )
    with warnings.catch_warnings():
        # Opacus warns when the optimum is at an edge of ``orders``; we log that in structured form.
        warnings.simplefilter("ignore", UserWarning)
        epsilon, best_order = rdp_analysis.get_privacy_spent(orders=list(orders), rdp=rdp, delta=delta)
    if best_order in (min(orders), max(orders)):
        log.warning("rdp_optimal_order_at_edge", order=float(best_order), epsilon=float(epsilon), steps=steps)
    return float(epsilon)


@dataclass(frozen=True)
class BudgetExceeded(Verdict):
    """The rejection given when the next release would spend more than ``max_epsilon``: stop the task."""

    projected_epsilon: float = math.nan
    max_epsilon: float = math.nan


def check_budget(privacy: PrivacyPolicy, *, sample_rate: float, releases: int) -> Verdict:
    """May one more noised version be released? ``releases`` = noised versions released so far.

    Accepts with the epsilon the next release brings; returns ``BudgetExceeded`` when that epsilon would
    exceed ``privacy.max_epsilon``, and a plain rejection for a policy that cannot be accounted.
    """
    if not privacy.noise_multiplier > 0:
        return reject(BUDGET_POLICY, f"noise_multiplier {privacy.noise_multiplier} gives no privacy")
    if not 0 < privacy.target_delta < 1:
        return reject(BUDGET_POLICY, f"target_delta {privacy.target_delta} is not in (0, 1)")
    if not 0 < sample_rate <= 1:
        return reject(BUDGET_POLICY, f"sample_rate {sample_rate} is not in (0, 1]")
    spent = privacy_spent(privacy.noise_multiplier, sample_rate, releases, privacy.target_delta)
    projected = privacy_spent(privacy.noise_multiplier, sample_rate, releases + 1, privacy.target_delta)
    facts = (
        f"after {releases} release(s) epsilon={spent.epsilon:.4g}, release {releases + 1} would bring "
        f"epsilon={projected.epsilon:.4g} at delta={privacy.target_delta:g} "
        f"(noise_multiplier={privacy.noise_multiplier:g}, sample_rate={sample_rate:g})"
    )
    if privacy.max_epsilon is None:
        return accept(BUDGET_POLICY, f"no epsilon budget set; {facts}")
    if projected.epsilon > privacy.max_epsilon:
        return BudgetExceeded(
            accepted=False,
            policy=BUDGET_POLICY,
            reason=f"budget exceeded: {facts} > max_epsilon={privacy.max_epsilon:g}",
            projected_epsilon=projected.epsilon,
            max_epsilon=privacy.max_epsilon,
        )
    return accept(BUDGET_POLICY, f"within budget: {facts} <= max_epsilon={privacy.max_epsilon:g}")
