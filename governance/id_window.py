"""How long governance must remember what it decided, so that its memory stays O(open rounds).

Two things are remembered, each for as long as it can still matter, and no longer:

* **Update ids** (the ``duplicate`` policy refuses a second copy of a decided update). An update is
  bound to its task, its round and its base version, and those checks run on every copy: a sync task
  accepts only ``round == open round`` (and the latest base), an async task only a base within
  ``max_staleness`` of the latest version (``governance.policies.task_round``), and a finished task
  nothing. So once the task's latest version reaches ``forget_at`` (sync: the update's round; async:
  its base + ``max_staleness`` + 1; never beyond the task's last round) a copy of the update is refused
  by its round or staleness, whatever the id set holds, and the id can go.
* **Decisions by message coordinate** (``decided_at``: a re-read message is not decided twice) and
  which accepted updates are settled (``aggregated``). After a restart the consumer re-reads from the
  committed offset, never below it (commits only move forward), so entries below a partition's
  committed offset are never consulted again.
"""

from __future__ import annotations

from collections.abc import Mapping

from meshfl.events import DecisionOutcome, FederationMode, TrainingTask


def forget_at(task: TrainingTask, *, round_: int, base_version: int | None) -> int:
    """The latest version of ``task`` from which a copy of this update is refused by its checks."""
    if task.mode == FederationMode.ASYNC:
        if base_version is None:  # a decision from before base versions were recorded: until the end
            return task.rounds
        return min(base_version + max(task.round_policy.max_staleness, 0) + 1, task.rounds)
    return min(round_, task.rounds)


def prune_decided(
    decided: dict[str, tuple[str, int]], latest_versions: Mapping[str, int]
) -> dict[str, tuple[str, int]]:
    """The update ids still worth remembering: their task is run here and has not reached ``forget_at``."""
    return {
        update_id: (task_id, until)
        for update_id, (task_id, until) in decided.items()
        if task_id in latest_versions and latest_versions[task_id] < until
    }


def prune_offsets(
    decided_at: dict[tuple[int, int], DecisionOutcome],
    decided_update: dict[tuple[int, int], str],
    aggregated: set[str],
    committed: Mapping[int, int],
) -> tuple[dict[tuple[int, int], DecisionOutcome], dict[tuple[int, int], str], set[str]]:
    """Drop decisions below each partition's committed offset (and of partitions not in ``committed``);
    keep the settled ids that a kept decision can still ask about."""
    kept = {key: outcome for key, outcome in decided_at.items() if key[1] >= committed.get(key[0], 1 << 62)}
    updates = {key: decided_update[key] for key in kept if key in decided_update}
    return kept, updates, aggregated & set(updates.values())
