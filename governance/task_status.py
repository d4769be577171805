"""Where each task stands, from the log alone: running, complete, or failed (and why).

A round whose strategy raised (anything but its declared ``TooFewUpdates``) gets a decision with policy
``aggregation_error`` and the task stops there instead of waiting forever; this module turns the log
into the task states that ``meshfl governance status`` and the console show.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from governance.log_state import ROUND_FAILED
from meshfl.events import Event, GovernanceDecision, ModelVersion, TrainingTask


class TaskPhase(StrEnum):
    WAITING = "waiting"  # published, no version 0 yet
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


@dataclass(frozen=True)
class TaskStatus:
    task_id: str
    phase: TaskPhase
    version: int | None
    rounds: int
    reason: str = ""


def task_statuses(
    tasks: Iterable[Event], versions: Iterable[Event], decisions: Iterable[Event]
) -> list[TaskStatus]:
    """One status per task on the bus, sorted by task id (pure: the caller reads the topics)."""
    known = {t.id: t for t in tasks if isinstance(t, TrainingTask)}
    latest: dict[str, ModelVersion] = {}
    for v in versions:
        if isinstance(v, ModelVersion) and (v.task_id not in latest or v.version > latest[v.task_id].version):
            latest[v.task_id] = v
    failed: dict[str, GovernanceDecision] = {}
    for d in decisions:
        if isinstance(d, GovernanceDecision) and d.policy == ROUND_FAILED:
            failed[d.task_id] = d
    out = []
    for task_id in sorted(known):
        task, version = known[task_id], latest.get(task_id)
        if version is None:
            out.append(TaskStatus(task_id, TaskPhase.WAITING, None, task.rounds))
            continue
        failure = failed.get(task_id)
        if failure is not None and failure.round == version.round + 1:
            out.append(TaskStatus(task_id, TaskPhase.FAILED, version.version, task.rounds, failure.reason))
        elif version.round >= task.rounds:
            out.append(TaskStatus(task_id, TaskPhase.COMPLETE, version.version, task.rounds))
        else:
            out.append(TaskStatus(task_id, TaskPhase.RUNNING, version.version, task.rounds))
    return out
