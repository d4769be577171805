"""Central differential privacy per domain: the Gaussian mechanism on the aggregate, and its accounting.

Mechanism (DP-FedAvg, McMahan et al., 2018, "Learning Differentially Private Recurrent Language Models",
arXiv:1710.06963): each accepted update's delta is clipped to ``clip_norm`` (``DPClip``); the aggregate
is the **uniform** mean of the ``n`` clipped deltas; Gaussian noise of std ``noise_multiplier *
clip_norm / n`` is added to that mean. Sensitivity: adding or removing one domain changes the *sum* of
clipped deltas by at most ``clip_norm`` in L2, so ``N(0, (z*C)^2)`` on the sum is the Gaussian mechanism
with noise multiplier ``z``; dividing by ``n`` is post-processing because ``n`` is public (the version
lists its contributing updates). This is why, with privacy on, the aggregate must use uniform weights:
with example weights ``n_k / sum n``, a domain claiming many examples carries up to the whole weight and
the sensitivity of the mean approaches ``C`` instead of ``C / n`` (McMahan et al. bound it by capping the
weights, ``w_k <= 1``, with a fixed denominator; meshfl implements the uniform case only).

Adjacency: the guarantee is for adding/removing one domain's update. Which domains contributed is public
in the log, so what it protects in practice is the *content* of a domain's update; for replace-one
adjacency the sensitivity of the sum is ``2C``, i.e. the same guarantee as half the noise multiplier.

Determinism and secrecy: the noise is drawn from a ``torch.Generator`` seeded by ``noise_seed``, so an
audit replay reproduces the noised version bit for bit (same torch CPU generator). The seed is an
HMAC of the task id and version under a secret held by governance and auditors: a seed derivable from
public fields would let anyone regenerate the noise and subtract it, voiding the guarantee.

Accounting: Rényi DP of the sampled Gaussian mechanism [Mironov et al., 2019, arXiv:1908.10530] with
the RDP -> (epsilon, delta) conversion of Balle et al., 2020 (arXiv:1905.09982), both computed by Opacus
(``opacus.accountants.analysis.rdp``). One step is one noised release; ``sample_rate`` is the fraction
of domains taking part per round (1.0 when all do, which gives no amplification). Amplification by
sampling assumes the service samples domains at random and secretly; domains that choose for themselves
whether to answer do not qualify, so use 1.0 unless the service samples.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from governance.policies.base import Verdict, accept, reject
from meshfl.events import PrivacyPolicy, PrivacySpent
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


def noise_seed(task_id: str, version: int, *, secret: bytes) -> int:
    """The generator seed for the noise of ``version``: HMAC-SHA256(secret, task_id, version), 63 bits."""
    if not secret:
        raise ValueError("a non-empty secret is required: a public seed lets anyone subtract the noise")
    message = f"{task_id}\x00{version}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def noise_std(*, clip_norm: float, noise_multiplier: float, num_updates: int) -> float:
    """Std of the Gaussian noise on the uniform mean of ``num_updates`` deltas clipped to ``clip_norm``."""
    if num_updates < 1:
        raise ValueError(f"num_updates must be >= 1, got {num_updates}")
    if not clip_norm > 0 or noise_multiplier < 0:
        raise ValueError(f"need clip_norm > 0 and noise_multiplier >= 0, got {clip_norm}, {noise_multiplier}")
    return noise_multiplier * clip_norm / num_updates


def add_gaussian_noise(
    aggregate: Mapping[str, torch.Tensor],
    global_weights: Mapping[str, torch.Tensor],
    *,
    clip_norm: float,
    noise_multiplier: float,
    num_updates: int,
    seed: int,
) -> dict[str, torch.Tensor]:
    """``aggregate + N(0, std^2)`` on every floating-point tensor, ``std = z * C / n``; inputs untouched.

    ``aggregate`` holds the new weights ``global + mean(clipped deltas)`` (uniform mean), so noising it is
    noising the mean delta; ``global_weights`` must have the same tensors (checked: a mismatch means the
    aggregate is not of this model). Noise is drawn in sorted name order from one CPU generator seeded
    with ``seed``, in each tensor's dtype (float16 and bfloat16 in float32, then cast back); non-float
    tensors pass through. Same seed, same tensors, same torch: the same bits.
    """
    std = noise_std(clip_norm=clip_norm, noise_multiplier=noise_multiplier, num_updates=num_updates)
    if set(aggregate) != set(global_weights):
        missing = sorted(set(aggregate) ^ set(global_weights))
        raise ValueError(f"aggregate and global weights differ in tensors: {missing[:5]}")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    noised: dict[str, torch.Tensor] = {}
    for name in sorted(aggregate):
        tensor = aggregate[name]
        if tuple(tensor.shape) != tuple(global_weights[name].shape):
            raise ValueError(f"tensor {name!r}: aggregate shape {tuple(tensor.shape)} != global shape")
        if not tensor.is_floating_point():
            noised[name] = tensor
            continue
        dtype = tensor.dtype if tensor.dtype in (torch.float32, torch.float64) else torch.float32
        value = torch.randn(tuple(tensor.shape), generator=generator, dtype=dtype)
        value.mul_(std).add_(tensor.detach().to(device="cpu", dtype=dtype))
        noised[name] = value.to(device=tensor.device, dtype=tensor.dtype)
    return {name: noised[name] for name in aggregate}


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
    from opacus.accountants.analysis import rdp as rdp_analysis

    rdp = rdp_analysis.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=list(orders)
    )
    with warnings.catch_warnings():
        # Opacus warns when the optimum is at an edge of ``orders``; we log that in structured form.
        warnings.simplefilter("ignore", UserWarning)
        epsilon, best_order = rdp_analysis.get_privacy_spent(orders=list(orders), rdp=rdp, delta=delta)
    if best_order in (min(orders), max(orders)):
        log.warning("rdp_optimal_order_at_edge", order=float(best_order), epsilon=float(epsilon), steps=steps)
    return PrivacySpent(epsilon=float(epsilon), delta=delta)


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
