"""Known domain: only a domain that has registered a data product in the catalog may take part.

The catalog is the data mesh's register of who owns what data; an update from a domain that never
described its data cannot be tied to a data contract, so it is turned away first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from governance.policies.base import Candidate, PolicyContext, Verdict, accept, reject


@dataclass(frozen=True)
class KnownDomain:
    name: ClassVar[str] = "known_domain"

    def evaluate(self, candidate: Candidate, ctx: PolicyContext) -> Verdict:
        domain = candidate.update.domain
        products = ctx.products_of(domain)
        if not products:
            return reject(self.name, f"domain {domain!r} has registered no data product in the catalog")
        return accept(self.name, f"domain {domain!r} has {len(products)} registered data product(s)")
