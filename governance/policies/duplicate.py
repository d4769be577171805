"""Duplicate: each update is decided once, and in sync mode each domain counts once per round.

Kafka delivers at least once, so a redelivered update must not be aggregated twice (its id is already
decided); in sync mode a domain that publishes a second update in the same round would otherwise weigh
twice in FedAvg. Async mode lets a domain contribute several updates to the buffer, as in FedBuff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from governance.policies.base import Candidate, PolicyContext, Verdict, accept, reject
from meshfl.events import FederationMode


@dataclass(frozen=True)
class Duplicate:
    name: ClassVar[str] = "duplicate"

    def evaluate(self, candidate: Candidate, ctx: PolicyContext) -> Verdict:
        update = candidate.update
        if update.update_id in ctx.decided_update_ids:
            return reject(self.name, f"update {update.update_id!r} was already decided")
        if ctx.task.mode == FederationMode.SYNC and update.domain in ctx.accepted_domains_this_round:
            return reject(
                self.name,
                f"domain {update.domain!r} already has an accepted update in round {ctx.open_round}",
            )
        return accept(self.name, f"first decision on update {update.update_id!r}")
