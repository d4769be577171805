"""Admission: is this domain allowed to contribute to this task (``TrainingTask.admission``)?

A suspended domain is refused whatever else holds; when ``allowed_domains`` is non-empty only those
domains are admitted; ``required_tags`` (e.g. a certification such as ``gdpr-reviewed``) must all be
carried by one registered product of the domain that serves the task (see ``data_contract``). Admission
is a property of the domain, so it looks at the domain's catalog entries, not at the update's refs,
which ``DataContract`` checks next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from governance.policies.base import Candidate, PolicyContext, Verdict, accept, reject, summarize
from governance.policies.data_contract import serves_task


@dataclass(frozen=True)
class Admission:
    name: ClassVar[str] = "admission"

    def evaluate(self, candidate: Candidate, ctx: PolicyContext) -> Verdict:
        policy = ctx.task.admission
        domain = candidate.update.domain
        if domain in policy.suspended_domains:
            return reject(self.name, f"domain {domain!r} is suspended from task {ctx.task.id!r}")
        if policy.allowed_domains and domain not in policy.allowed_domains:
            allowed = summarize(sorted(policy.allowed_domains))
            return reject(self.name, f"domain {domain!r} is not among the allowed domains ({allowed})")
        if not policy.required_tags:
            return accept(self.name, f"domain {domain!r} admitted")
        required = set(policy.required_tags)
        serving = [p for p in ctx.products_of(domain) if serves_task(p, ctx.task)]
        for product in serving:
            if required <= set(product.tags):
                return accept(
                    self.name, f"domain {domain!r} admitted; {product.id} carries the required tags"
                )
        if not serving:
            return reject(self.name, f"domain {domain!r} has no product serving task {ctx.task.id!r}")
        shortfalls = [f"{p.id} lacks {sorted(required - set(p.tags))}" for p in serving]
        return reject(
            self.name,
            f"no serving product of domain {domain!r} carries the required tags "
            f"{sorted(required)}: {summarize(shortfalls)}",
        )
