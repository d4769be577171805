"""What the log says the governance service has done: read on start and after an aborted transaction.

This is the whole of the service's durable state. Nothing is kept elsewhere: the latest version of each
task, which updates a version consumed, and which update messages (by partition and offset) already
have a decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshfl.bus import read_all
from meshfl.events import DecisionOutcome, GovernanceDecision, ModelVersion, TrainingTask
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

WITHDRAWN = "buffer_staleness"
"""Policy of the decision that withdraws an accepted update from the async buffer: it is settled."""


@dataclass
class LogState:
    tasks: dict[str, TrainingTask] = field(default_factory=dict)
    latest: dict[str, ModelVersion] = field(default_factory=dict)
    aggregated: set[str] = field(default_factory=set)  # update ids consumed by a version or withdrawn
    decided_ids: set[str] = field(default_factory=set)
    decided_at: dict[tuple[int, int], DecisionOutcome] = field(default_factory=dict)  # (partition, offset)


def read_log_state(settings: MeshflSettings) -> LogState:
    """Snapshot-read tasks, versions and decisions (read_committed: aborted work is invisible)."""
    state = LogState()
    for env in read_all(settings, Topic.TASKS):
        if isinstance(env.event, TrainingTask):
            state.tasks.setdefault(env.event.id, env.event)
    for env in read_all(settings, Topic.MODEL_VERSIONS):
        if isinstance(env.event, ModelVersion):
            version = env.event
            state.aggregated.update(version.contributing_updates)
            current = state.latest.get(version.task_id)
            if current is None or version.version > current.version:
                state.latest[version.task_id] = version
    for env in read_all(settings, Topic.DECISIONS):
        decision = env.event
        if isinstance(decision, GovernanceDecision):
            state.decided_ids.add(decision.update_id)
            if decision.policy == WITHDRAWN:
                state.aggregated.add(decision.update_id)
            if decision.source_partition is not None and decision.source_offset is not None:
                key = (decision.source_partition, decision.source_offset)
                state.decided_at.setdefault(key, decision.outcome)
    return state
