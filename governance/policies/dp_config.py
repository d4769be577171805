"""Which tasks central DP can protect: refused at configuration time unless the noise is calibrated.

The Gaussian mechanism (``governance.policies.dp_mechanism``) adds ``N(0, (z C)^2)`` to the *sum* of
``n`` deltas each clipped to ``C``: its guarantee needs every domain to move that sum by at most ``C``
(zero-out adjacency) and ``n`` to be public. It holds for the FedAvg family run on the noised uniform
mean: FedAvg, FedProx (same server step), and the server optimizers FedAvgM, FedAdam, FedYogi and
FedAdagrad, which only post-process the noised mean. It does not hold for

- FedMedian, Krum and Multi-Krum: they publish (coordinates of) one domain's own values, sensitivity
  ``C`` on the result, not ``C / n``;
- FedTrimmedAvg and Bulyan: they discard updates after looking at them, so the ``n`` that divides the
  noise counts updates that are not in the mean, and which ones are kept depends on every domain's data;
- FedBuff and async mode: staleness weights make a domain's weight other than ``1 / n``, and one domain
  can put several updates into one buffer (sensitivity ``k C``);
- ``norm_action = "reject"``: a domain's update being refused or not is a deterministic function of its
  data, published in a decision, outside the noise (epsilon infinite); use ``"clip"``;
- integer tensors: they would be published un-noised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from meshfl.errors import ConfigError
from meshfl.events import FederationMode, TrainingTask
from meshfl.modelspec import expected_shapes

DP_STRATEGIES: Mapping[str, str] = {
    "fedavg": "uniform mean of clipped deltas",
    "fedprox": "FedAvg's server step",
    "fedavgm": "momentum on the noised mean",
    "fedadam": "Adam moments of the noised mean",
    "fedyogi": "Yogi moments of the noised mean",
    "fedadagrad": "Adagrad moments of the noised mean",
}
"""The strategies whose output is post-processing of the noised uniform mean (sync mode)."""

_WHY_NOT: Mapping[str, str] = {
    "fedmedian": "it publishes coordinates of one domain's update (sensitivity C, not C/n)",
    "krum": "it publishes one domain's update (sensitivity C, not C/n)",
    "multikrum": "it averages domains chosen by looking at every update (sensitivity not bounded by C/n)",
    "fedtrimmedavg": "it discards updates after seeing them, so n counts updates that are not in the mean",
    "bulyan": "it discards updates after seeing them, so n counts updates that are not in the mean",
    "fedbuff": "staleness weights and several updates of one domain per buffer change the sensitivity",
}


def dp_config_problems(task: TrainingTask, weights: Mapping[str, torch.Tensor] | None = None) -> list[str]:
    """Why central DP cannot protect ``task`` as configured (empty when it can).

    ``weights`` (e.g. the parent version's) lets the check see integer tensors; without it the dtypes
    come from the model spec (no model is built).
    """
    privacy = task.privacy
    if privacy is None:
        return []
    problems: list[str] = []
    allowed = ", ".join(DP_STRATEGIES)
    name = task.strategy.name
    if name not in DP_STRATEGIES:
        why = _WHY_NOT.get(name, "its sensitivity is not calibrated")
        problems.append(f"strategy {name!r} cannot run under central DP: {why}; allowed: {allowed}")
    if task.mode != FederationMode.SYNC:
        problems.append(
            f"mode {task.mode.value!r} cannot run under central DP: a domain may put several updates in one "
            "buffer and staleness weights change the sensitivity; use mode = 'sync' with one of " + allowed
        )
    checks = task.update_checks
    if checks.max_l2_norm is not None and checks.norm_action != "clip":
        problems.append(
            f"update_checks.norm_action = {checks.norm_action!r} under central DP publishes whether each "
            "domain's delta norm exceeds the bound, outside the noise; use norm_action = 'clip'"
        )
    if not (math.isfinite(privacy.clip_norm) and privacy.clip_norm > 0):
        problems.append(f"privacy.clip_norm must be a finite number > 0, got {privacy.clip_norm}")
    if not (math.isfinite(privacy.noise_multiplier) and privacy.noise_multiplier > 0):
        problems.append(
            f"privacy.noise_multiplier must be > 0 (0 gives no privacy), got {privacy.noise_multiplier}"
        )
    if not 0 < privacy.target_delta < 1:
        problems.append(f"privacy.target_delta must be in (0, 1), got {privacy.target_delta}")
    if privacy.max_epsilon is not None and not privacy.max_epsilon > 0:
        problems.append(f"privacy.max_epsilon must be > 0, got {privacy.max_epsilon}")
    if weights is None:
        dtypes = {name: getattr(torch, dtype) for name, (_, dtype) in expected_shapes(task.model).items()}
    else:
        dtypes = {name: t.dtype for name, t in weights.items()}
    integer = sorted(n for n, dtype in dtypes.items() if not dtype.is_floating_point)
    if integer:
        problems.append(
            f"the model has integer tensors ({', '.join(integer[:5])}) that central DP would publish "
            "un-noised; remove them or turn DP off"
        )
    return problems


def check_dp_config(task: TrainingTask, weights: Mapping[str, torch.Tensor] | None = None) -> None:
    """Raise ``ConfigError`` listing every reason central DP cannot protect ``task``."""
    problems = dp_config_problems(task, weights)
    if problems:
        raise ConfigError(f"task {task.id}: " + "; ".join(problems))
