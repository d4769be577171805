"""Norm bound: ``||weights - global||_2 <= update_checks.max_l2_norm``, rejected or clipped.

Bounding the update norm is the standard cheap defence against model replacement and boosted backdoor
updates [Sun et al., 2019, "Can You Really Backdoor Federated Learning?", arXiv:1911.07963]. With
``norm_action == "reject"`` an oversized update is refused; with ``"clip"`` its delta is scaled down to
the bound (direction kept) and the clipped weights are what gets aggregated. Any other action is
refused: a misconfigured defence fails closed. Under central DP the verdict is published outside the
noise, so it never names the norm nor says whether the update was clipped, and ``"reject"`` is refused
(``governance.policies.dp_config``; here every update is rejected, whatever its norm, should one slip by).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from governance.policies.base import Candidate, PolicyContext, Verdict, accept, reject
from governance.policies.deltas import delta_l2_norm, scale_delta

NORM_ACTIONS: frozenset[str] = frozenset({"reject", "clip"})


@dataclass(frozen=True)
class NormBound:
    name: ClassVar[str] = "norm_bound"

    def evaluate(self, candidate: Candidate, ctx: PolicyContext) -> Verdict:
        checks = ctx.task.update_checks
        bound = checks.max_l2_norm
        if bound is None:
            return accept(self.name, "no norm bound set")
        if checks.norm_action not in NORM_ACTIONS:
            return reject(self.name, f"unknown norm_action {checks.norm_action!r} (expected reject or clip)")
        if not bound > 0:
            return reject(self.name, f"max_l2_norm must be > 0, got {bound}")
        norm = delta_l2_norm(candidate.weights, ctx.global_weights)
        if ctx.task.privacy is not None:
            if checks.norm_action != "clip":
                return reject(self.name, "norm_action must be 'clip' under central DP")
            factor = min(1.0, bound / norm) if norm > 0 else 1.0
            weights = (
                dict(candidate.weights)
                if factor == 1.0
                else scale_delta(candidate.weights, ctx.global_weights, factor)
            )
            return accept(
                self.name,
                f"delta clipped to L2 norm <= {bound:.6g} (not published under DP)",
                weights=weights,
            )
        if norm <= bound:
            return accept(self.name, f"L2 norm of the delta {norm:.6g} within bound {bound:.6g}")
        if checks.norm_action == "reject":
            return reject(self.name, f"L2 norm of the delta {norm:.6g} exceeds bound {bound:.6g}")
        clipped = scale_delta(candidate.weights, ctx.global_weights, bound / norm)
        return accept(
            self.name, f"L2 norm of the delta clipped from {norm:.6g} to {bound:.6g}", weights=clipped
        )
