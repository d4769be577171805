"""Task and round: the update answers the open round of this task, from the right base version.

Sync mode (FedAvg rounds): ``round`` must be the open round and ``base_version`` the latest global
version, otherwise the update was computed against a model that is no longer the one being improved.
Async mode (FedBuff, Nguyen et al., 2022, arXiv:2106.06639): any base version is acceptable as long as
its staleness ``latest_version - base_version`` is at most ``round_policy.max_staleness``; the strategy
then down-weights it by staleness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from governance.policies.base import Candidate, PolicyContext, Verdict, accept, reject
from meshfl.events import FederationMode


@dataclass(frozen=True)
class TaskAndRound:
    name: ClassVar[str] = "task_and_round"

    def evaluate(self, candidate: Candidate, ctx: PolicyContext) -> Verdict:
        update = candidate.update
        if update.task_id != ctx.task.id:
            return reject(self.name, f"update is for task {update.task_id!r}, not {ctx.task.id!r}")
        if ctx.task.mode == FederationMode.ASYNC:
            return self._async(update.base_version, ctx)
        if update.round != ctx.open_round:
            return reject(
                self.name, f"update is for round {update.round}, the open round is {ctx.open_round}"
            )
        if update.base_version != ctx.latest_version:
            return reject(
                self.name,
                f"update was trained from version {update.base_version}, "
                f"the latest version is {ctx.latest_version}",
            )
        return accept(self.name, f"round {ctx.open_round} from version {ctx.latest_version}")

    def _async(self, base_version: int, ctx: PolicyContext) -> Verdict:
        staleness = ctx.latest_version - base_version
        bound = ctx.task.round_policy.max_staleness
        if staleness < 0:
            return reject(
                self.name, f"base version {base_version} is ahead of the latest version {ctx.latest_version}"
            )
        if staleness > bound:
            return reject(
                self.name,
                f"staleness {staleness} (version {base_version}, latest {ctx.latest_version}) "
                f"exceeds max_staleness {bound}",
            )
        return accept(self.name, f"staleness {staleness} within max_staleness {bound}")
