"""Start-up in O(open rounds): the latest governance-state record of each owned partition, then the tail.

For every updates partition it owns, the service reads the last record of that partition on the
compacted governance-state topic (a few records from the end: ``_latest_record``), verifies governance's
signature and that the record is this federation's and this partition's, and folds it in. It then reads
each task's latest version (and async window) by the pointers the record holds, and the decisions and
versions written after the record's ``log_ends`` (the tail: normally the rest of the record's own
transaction). A record that is missing, unsigned, forged or names a task the record does not cover
sends the service back to ``read_log_state`` (the whole log), with a log line saying why; so does a
pointer that leads nowhere. The audit replay never reads this topic: it replays the whole log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from governance.log_checks import version_problem
from governance.log_state import (
    LogState,
    apply_decision,
    apply_version,
    read_log_state,
    read_tasks,
    running_tasks,
)
from governance.ownership import task_partition
from governance.state_record import STATE_KEY, fold_record, latest_pointer
from meshfl.bus import Envelope, committed_ranges, read_all
from meshfl.events import ModelVersion, TrainingTask
from meshfl.identity.trust import EnvelopeVerifier
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.state_events import GovernanceState
from meshfl.topics import Topic, topic_name

log = get_logger("meshfl.governance")

_FIRST_WINDOW = 8
"""Records read from the end of a state partition at first; the window grows 4x while none is found."""


class _NoState(Exception):
    """The compacted state cannot be used: read the whole log instead (the message says why)."""


def read_governance_state(
    settings: MeshflSettings,
    configured: Mapping[str, TrainingTask],
    *,
    partitions: Sequence[int],
    partition_count: int,
    committed: Mapping[int, int],
) -> LogState:
    """The state of the owned ``partitions``' tasks, pruned to what can still matter.

    ``committed`` is the group's committed offset per owned partition (0 when none): the consumer
    re-reads from there, so decisions below it are dropped (``LogState.prune``).
    """
    try:
        state = _from_state_topic(settings, configured, partitions, partition_count)
    except _NoState as why:
        log.warning("no usable governance-state record; reading the whole log", reason=str(why))
        state = read_log_state(settings, configured)
    owned = {task_id for task_id in configured if task_partition(task_id, partition_count) in set(partitions)}
    state.prune(
        {task_id: v.version for task_id, v in state.latest.items() if task_id in owned},
        {p: committed.get(p, 0) for p in partitions},
        {task_id: task.round_policy.max_staleness for task_id, task in configured.items()},
    )
    return state


def _from_state_topic(
    settings: MeshflSettings,
    configured: Mapping[str, TrainingTask],
    partitions: Sequence[int],
    partition_count: int,
) -> LogState:
    state = LogState(source="state")
    verifier = EnvelopeVerifier.for_governance_events(settings, reader="governance-state")
    read_tasks(settings, state, verifier)
    state.refused += sum(verifier.refused.values())
    running = running_tasks(state, configured)
    owned = [t for t in configured if task_partition(t, partition_count) in set(partitions)]
    working = sorted({task_partition(t, partition_count) for t in owned})  # partitions with tasks
    records = [_latest_record(settings, partition, state) for partition in working]
    covered = {summary.task_id for record in records for summary in record.tasks}
    missing = [task_id for task_id in owned if task_id not in covered]
    if missing:
        raise _NoState(f"tasks {missing} are not in the state records of partitions {list(partitions)}")
    for record in records:
        fold_record(record, state)
    # The latest version of each task by its pointer, then the tail after log_ends.
    pointers = {
        (summary.task_id, pointer.version)
        for record in records
        for summary in record.tasks
        if summary.task_id in owned and (pointer := latest_pointer(record, summary.task_id)) is not None
    }
    if {task_id for task_id, _v in pointers} != set(owned):
        raise _NoState("a task's record names no latest version")
    found = read_versions(settings, state, pointers, running)
    if set(found) != pointers:
        raise _NoState(f"versions {sorted(pointers - set(found))} are not where their records say")
    pointed = EnvelopeVerifier.for_governance_events(settings, reader="governance-state")
    for env in found.values():
        apply_version(state, env, pointed, running)
    state.refused += sum(pointed.refused.values())
    verifier = EnvelopeVerifier.for_governance_events(settings, reader="governance-state-tail")
    for topic, apply in ((Topic.MODEL_VERSIONS, apply_version), (Topic.DECISIONS, apply_decision)):
        starts = {p: o for (t, p), o in state.log_ends.items() if t == topic.value}
        ends = committed_ranges(settings, topic_name(settings, topic))
        for partition, (_start, end) in ends.items():
            starts.setdefault(partition, 0)  # a partition the record does not name: all of it
            state.log_ends[(topic.value, partition)] = end
        for env in read_all(settings, topic, starts=starts, chunk_signers=verifier.registry):
            state.records_read[topic.value] += 1
            apply(state, env, verifier, running)
    state.refused += sum(verifier.refused.values())
    return state


def _latest_record(settings: MeshflSettings, partition: int, state: LogState) -> GovernanceState:
    """The last record of ``partition`` that governance signed, searched backwards from the end."""
    name = topic_name(settings, Topic.GOVERNANCE_STATE)
    ranges = committed_ranges(settings, name)
    key = STATE_KEY.format(partition)
    home = task_partition(key, len(ranges))
    low, end = ranges[home]
    window = _FIRST_WINDOW
    updates_topic = topic_name(settings, Topic.UPDATES)
    while True:
        start = max(low, end - window)
        verifier = EnvelopeVerifier.for_governance_events(settings, reader="governance-state")
        found: GovernanceState | None = None
        for env in read_all(settings, Topic.GOVERNANCE_STATE, starts={home: start}):
            state.records_read[Topic.GOVERNANCE_STATE.value] += 1
            record = env.event
            if env.offset >= end or not isinstance(record, GovernanceState):
                continue
            if record.updates_partition != partition or record.updates_topic != updates_topic:
                continue
            if not verifier.accept(env):  # logged by the verifier: "event refused"
                log.warning("governance-state record refused", partition=partition, offset=env.offset)
                state.refused += 1
                continue
            found = record
        if found is not None:
            return found
        if start <= low:
            raise _NoState(f"no state record signed by governance for partition {partition}")
        window *= 4


def read_versions(
    settings: MeshflSettings,
    state: LogState,
    wanted: set[tuple[str, int]],
    running: Mapping[str, TrainingTask | None],
) -> dict[tuple[str, int], Envelope]:
    """The versions ``wanted`` ((task, version)), read from where ``state.version_from`` says they lie,
    signed by governance and fitting their task; the read stops once all are in. The first copy wins."""
    starts: dict[int, int] = {}
    for key in wanted:
        for (_topic, p), offset in state.version_from.get(key, {}).items():
            starts[p] = min(starts.get(p, offset), offset)
    found: dict[tuple[str, int], Envelope] = {}
    if not starts:
        return found
    verifier = EnvelopeVerifier.for_governance_events(settings, reader="governance-versions")
    # seals checked as the agents check them: a chunk another writer put into a version's set is passed
    # over there, so it must not make the set corrupt here (governance would lose a version they took)
    for env in read_all(settings, Topic.MODEL_VERSIONS, starts=starts, chunk_signers=verifier.registry):
        state.records_read[Topic.MODEL_VERSIONS.value] += 1
        event = env.event
        if not isinstance(event, ModelVersion) or (event.task_id, event.version) not in wanted:
            continue
        key = (event.task_id, event.version)
        if key in found or not verifier.accept(env):
            continue
        if version_problem(event, running.get(event.task_id)) is None:
            found[key] = env
        if set(found) >= wanted:
            break
    return found
