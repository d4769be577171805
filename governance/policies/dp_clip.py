"""DP clip: with central differential privacy on, every update's delta is clipped to ``clip_norm``.

The Gaussian mechanism's guarantee rests on a bounded sensitivity: each domain's contribution to the
sum of deltas must have L2 norm at most ``clip_norm`` [DP-FedAvg, McMahan et al., 2018, "Learning
Differentially Private Recurrent Language Models", arXiv:1710.06963, Algorithm 1, ``ClipFn``]. So it
clips always (never rejects on size), after any norm bound. The mechanism clips again, in float64
(``governance.policies.dp_mechanism``), before adding noise to the sum.

Its verdict is published in the decision, outside the noise, so it says the same thing for every update:
neither the pre-clip norm nor whether the update was clipped (a bit about the domain's data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from governance.policies.base import Candidate, PolicyContext, Verdict, accept, reject
from governance.policies.deltas import delta_l2_norm, scale_delta


@dataclass(frozen=True)
class DPClip:
    name: ClassVar[str] = "dp_clip"

    def evaluate(self, candidate: Candidate, ctx: PolicyContext) -> Verdict:
        privacy = ctx.task.privacy
        if privacy is None:
            return accept(self.name, "no privacy policy")
        bound = privacy.clip_norm
        if not bound > 0:
            return reject(self.name, f"privacy clip_norm must be > 0, got {bound}")
        norm = delta_l2_norm(candidate.weights, ctx.global_weights)
        weights = (
            dict(candidate.weights)
            if norm <= bound
            else scale_delta(candidate.weights, ctx.global_weights, bound / norm)
        )
        return accept(self.name, dp_clip_reason(bound), weights=weights)


def dp_clip_reason(bound: float) -> str:
    """The one reason every DP-clipped update gets: nothing in it depends on the update."""
    return f"delta clipped to L2 norm <= {bound:.6g} (norms are not published under DP)"
