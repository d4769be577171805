"""Min examples: the update rests on enough data, and on no more data than the domain has.

FedAvg weighs each update by its ``num_examples``, so the count is an attack surface: a domain claiming a
billion examples would dominate the average. Below ``update_checks.min_examples`` an update is noise
(and can leak individual records); zero or a negative count is absurd. When every data product the
update names declares ``num_rows``, the claim may not exceed their total times ``local_epochs`` (a
generous bound that holds whether an agent counts rows or rows seen over all epochs). Under central DP
the count weighs nothing (uniform weights) and the verdict does not publish it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from governance.policies.base import Candidate, PolicyContext, Verdict, accept, reject


def _declared_rows(candidate: Candidate, ctx: PolicyContext) -> int | None:
    """Total ``num_rows`` of the named products, or None when any is unknown."""
    total = 0
    for ref in candidate.update.data_products:
        product = ctx.resolve(candidate.update.domain, ref)
        if product is None or product.num_rows is None:
            return None
        total += product.num_rows
    return total if candidate.update.data_products else None


@dataclass(frozen=True)
class MinExamples:
    name: ClassVar[str] = "min_examples"

    def evaluate(self, candidate: Candidate, ctx: PolicyContext) -> Verdict:
        count = candidate.update.num_examples
        minimum = ctx.task.update_checks.min_examples
        if ctx.task.privacy is not None:  # the claimed count is not published under DP
            verdict = self.evaluate(
                candidate, replace(ctx, task=ctx.task.model_copy(update={"privacy": None}))
            )
            if verdict.accepted:
                return accept(self.name, f"num_examples >= {minimum}")
            return reject(
                self.name,
                "num_examples is not a positive count within the minimum "
                f"{minimum} and what the named products hold (the count is not published under DP)",
            )
        if count <= 0:
            return reject(self.name, f"num_examples {count} is not a positive count")
        if count < minimum:
            return reject(self.name, f"num_examples {count} is below the minimum {minimum}")
        rows = _declared_rows(candidate, ctx)
        if rows is not None:
            ceiling = rows * max(1, ctx.task.local_epochs)
            if count > ceiling:
                return reject(
                    self.name,
                    f"num_examples {count} exceeds what the named products hold: {rows} rows "
                    f"x {ctx.task.local_epochs} epoch(s) = {ceiling}",
                )
        return accept(self.name, f"num_examples {count} >= {minimum}")
