"""Finite values: no NaN or infinity anywhere.

One NaN poisons a weighted average for every domain, and diverged local training is the common cause.
The reason names each offending tensor with its NaN and Inf counts. Fast path: a tensor whose sum is
finite has no NaN or Inf (either would propagate), so the element-wise count runs only when the sum is
not finite (an offender, or finite values whose sum overflowed); a tensor in a file-backed mapping
(``meshfl.spill``) is checked window by window, with the same counts. Under central DP the reason says
only that some value is not finite: the counts are facts about a domain's update, outside the noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from governance.policies.base import Candidate, PolicyContext, Verdict, accept, reject, summarize
from meshfl.spill import spans


@dataclass(frozen=True)
class FiniteValues:
    name: ClassVar[str] = "finite_values"

    def evaluate(self, candidate: Candidate, ctx: PolicyContext) -> Verdict:
        offenders: list[str] = []
        for name in sorted(candidate.weights):
            tensor = candidate.weights[name]
            if not (tensor.is_floating_point() or tensor.is_complex()):
                continue
            nan = inf = 0
            flat = tensor.reshape(-1)
            for start, stop in spans(flat):  # a spilled tensor is read a window at a time
                part = flat[start:stop]
                if not bool(torch.isfinite(part.sum())):
                    nan += int(torch.isnan(part).sum())
                    inf += int(torch.isinf(part).sum())
            if nan or inf:
                offenders.append(f"{name!r} has {nan} NaN and {inf} Inf")
        if offenders and ctx.task.privacy is not None:
            return reject(self.name, "non-finite values (which and how many are not published under DP)")
        if offenders:
            return reject(self.name, f"non-finite values: {summarize(offenders)}")
        return accept(self.name, "all values finite")
