"""The governance-state record of one updates partition, built from memory and folded back in (pure).

``state_record`` is written by the service as the last event of every transaction of the partition, so
it is exactly as current as the consumer offsets committed with it. It holds what a restart needs and
what reading the tail of the log would not give back cheaply: where each task's latest version (and
the async window before it) lies, the update ids a duplicate must still be refused by, the decisions
on the messages that will be read again (at or above the committed offset), failed rounds, and the
log positions (``log_ends``) below which every record of the partition's tasks is folded in. Anything
written after those positions (at most the rest of the record's own transaction, normally) is read
from the log on restart and folded in again: folding is idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from governance.log_state import LogState, Positions
from governance.rounds import TaskState
from meshfl.events import DecisionOutcome
from meshfl.settings import MeshflSettings
from meshfl.state_events import (
    DecidedUpdate,
    GovernanceState,
    LogPosition,
    OffsetDecision,
    TaskSummary,
    VersionPointer,
)
from meshfl.topics import Topic, topic_name

STATE_KEY = "partition-{}"
"""Key of a partition's record on the compacted governance-state topic."""
TAIL_TOPICS = (Topic.MODEL_VERSIONS, Topic.DECISIONS)
"""What governance writes for a task, and so what a restart reads after the record."""


def _positions(where: Mapping[tuple[str, int], int]) -> list[LogPosition]:
    return [LogPosition(topic=t, partition=p, offset=o) for (t, p), o in sorted(where.items())]


def _from_positions(items: Iterable[LogPosition]) -> Positions:
    return {(item.topic, item.partition): item.offset for item in items}


def log_positions(
    settings: MeshflSettings, log_ends: Positions, written: Mapping[tuple[str, int], int]
) -> Positions:
    """Where the log tail of a partition's tasks starts: the start-up read's ends, moved past every
    record the partition's producer has had acknowledged (``EventProducer.written_ends``, physical
    topic names). Everything it produced before is folded in; what is still in flight lands above."""
    out = dict(log_ends)
    for topic in TAIL_TOPICS:
        name = topic_name(settings, topic)
        for (physical, partition), offset in written.items():
            if physical == name:
                key = (topic.value, partition)
                out[key] = max(out.get(key, 0), offset)
    return out


def state_record(
    *,
    updates_topic: str,
    partition: int,
    committed_offset: int,
    log_state: LogState,
    tasks: Iterable[TaskState],
    log_ends: Positions,
) -> GovernanceState:
    """The record of ``partition``: its ``tasks`` and the decisions on its messages at or above
    ``committed_offset`` (``-1``: nothing committed, every decision of the partition is kept)."""
    summaries = []
    for state in sorted(tasks, key=lambda s: s.task.id):
        task_id = state.task.id
        numbers = [state.latest.version, *sorted(state.recent)]
        pointers = [
            VersionPointer(version=n, search_from=_positions(log_state.version_from[(task_id, n)]))
            for n in numbers
            if (task_id, n) in log_state.version_from
        ]
        decided = [
            DecidedUpdate(update_id=update_id, forget_at=until)
            for update_id, (owner, until) in sorted(log_state.decided_ids.items())
            if owner == task_id
        ]
        summaries.append(
            TaskSummary(
                task_id=task_id,
                versions=pointers,
                decided=decided,
                failed_round=state.open_round if state.error is not None else None,
                failed_reason=state.error,
            )
        )
    open_decisions = [
        OffsetDecision(
            offset=offset,
            update_id=log_state.decided_update.get((p, offset), ""),
            accepted=outcome == DecisionOutcome.ACCEPTED,
            settled=log_state.decided_update.get((p, offset)) in log_state.aggregated,
        )
        for (p, offset), outcome in sorted(log_state.decided_at.items())
        if p == partition and offset >= committed_offset
    ]
    return GovernanceState(
        updates_topic=updates_topic,
        updates_partition=partition,
        committed_offset=committed_offset,
        log_ends=_positions(log_ends),
        tasks=summaries,
        open_decisions=open_decisions,
    )


def fold_record(record: GovernanceState, state: LogState) -> None:
    """Fold a (verified) record into ``state``; the latest versions themselves are read by pointer."""
    partition = record.updates_partition
    for summary in record.tasks:
        for pointer in summary.versions:
            state.version_from[(summary.task_id, pointer.version)] = _from_positions(pointer.search_from)
        for item in summary.decided:
            state.decided_ids[item.update_id] = (summary.task_id, item.forget_at)
        if summary.failed_round is not None:
            state.failed_rounds[summary.task_id] = (summary.failed_round, summary.failed_reason or "")
    for item in record.open_decisions:
        key = (partition, item.offset)
        state.decided_at[key] = DecisionOutcome.ACCEPTED if item.accepted else DecisionOutcome.REJECTED
        state.decided_update[key] = item.update_id
        if item.settled:
            state.aggregated.add(item.update_id)
    for key, offset in _from_positions(record.log_ends).items():
        state.log_ends[key] = min(state.log_ends.get(key, offset), offset)


def latest_pointer(record: GovernanceState, task_id: str) -> VersionPointer | None:
    """The pointer to the task's latest version named in the record (the highest version number)."""
    for summary in record.tasks:
        if summary.task_id == task_id and summary.versions:
            return max(summary.versions, key=lambda p: p.version)
    return None
