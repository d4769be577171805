"""What the log says the governance service has done: read on start and after an aborted transaction.

This is the whole of the service's durable state. Nothing is kept elsewhere: the latest version of each
task, which updates a version consumed, and which update messages (by partition and offset) already
have a decision. Only what governance signed counts: a task, version or decision on the bus without
governance's signature is ignored (logged and counted by the verifier), so forging an ACCEPTED
decision, a higher version or a task under a running id changes nothing here. Rejections for identity
reasons (``IDENTITY_POLICIES``) do not settle an update id: the forger's attempt under another domain's
id leaves the owner's own update free to be decided.

``read_log_state`` reads the whole log (the fallback, and what the first start after an upgrade does);
``governance.state_topic`` reads the latest governance-state record and only the log after it. Both
fold events in with ``apply_version`` and ``apply_decision``, and ``LogState.prune`` bounds what is
kept (``governance.id_window``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from governance.id_window import forget_at, prune_decided, prune_offsets
from governance.identity_gate import IDENTITY_POLICIES
from governance.log_checks import effective_task, version_problem
from meshfl.bus import Envelope, committed_ranges, read_all
from meshfl.events import DecisionOutcome, GovernanceDecision, ModelVersion, TrainingTask
from meshfl.identity.trust import EnvelopeVerifier
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name

WITHDRAWN = "buffer_staleness"
"""Policy of the decision that withdraws an accepted update from the async buffer: it is settled."""
FORM_REFUSED = "policy_form"
"""Policy of the decision that withdraws an accepted update whose transforming policies (norm bound,
DP clip) refuse it against the version it would go into: settled, never aggregated raw."""
ROUND_FAILED = "aggregation_error"
"""Policy of the decision that says a round failed (the strategy raised): the task stops there."""
SETTLED_POLICIES = frozenset({WITHDRAWN, FORM_REFUSED})

Positions = dict[tuple[str, int], int]
"""(logical topic, partition) -> offset."""

log = get_logger("meshfl.governance")


@dataclass
class LogState:
    tasks: dict[str, TrainingTask] = field(default_factory=dict)
    latest: dict[str, ModelVersion] = field(default_factory=dict)
    aggregated: set[str] = field(default_factory=set)  # update ids consumed by a version or withdrawn
    decided_ids: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (task, forget_at)
    decided_at: dict[tuple[int, int], DecisionOutcome] = field(default_factory=dict)  # (partition, offset)
    decided_update: dict[tuple[int, int], str] = field(default_factory=dict)  # (partition, offset) -> id
    ignored_versions: int = 0  # versions skipped because they do not fit their task's model
    refused: int = 0  # events on these topics that governance did not sign: ignored
    failed_rounds: dict[str, tuple[int, str]] = field(default_factory=dict)  # task -> (round, reason)
    # where each kept version lies on model-versions: (task, version) -> search-from positions
    version_from: dict[tuple[str, int], Positions] = field(default_factory=dict)
    log_ends: Positions = field(default_factory=dict)  # every record below is folded in
    records_read: Counter[str] = field(default_factory=Counter)  # by logical topic, for the start-up log
    source: str = "log"  # "log" (the whole log) or "state" (a state record and the tail after it)

    def record_decision(
        self, decision: GovernanceDecision, task: TrainingTask | None, base_version: int | None
    ) -> None:
        """Remember one decision (taken now or read back). Only a decision on an update message settles
        its id: a round's own decisions (stragglers, withdrawals) are about updates decided before."""
        on_message = decision.source_partition is not None and decision.source_offset is not None
        if on_message and decision.policy not in IDENTITY_POLICIES and task is not None:
            until = forget_at(task, round_=decision.round, base_version=base_version)
            known = self.decided_ids.get(decision.update_id)
            self.decided_ids[decision.update_id] = (task.id, max(until, known[1] if known else until))
        if decision.policy in SETTLED_POLICIES:
            self.aggregated.add(decision.update_id)
        if decision.policy == ROUND_FAILED:
            self.failed_rounds[decision.task_id] = (decision.round, decision.reason)
        if on_message:
            key = (decision.source_partition, decision.source_offset)
            self.decided_at.setdefault(key, decision.outcome)
            self.decided_update.setdefault(key, decision.update_id)

    def prune(
        self,
        latest_versions: Mapping[str, int],
        committed: Mapping[int, int],
        staleness: Mapping[str, int] | None = None,
    ) -> None:
        """Forget what can no longer matter (``governance.id_window``): ids whose round or staleness
        check now refuses a copy, decisions below the committed offsets (``committed``: every partition
        this instance reads), versions out of the async window (``staleness``: max_staleness a task)."""
        self.decided_ids = prune_decided(self.decided_ids, latest_versions)
        self.decided_at, self.decided_update, self.aggregated = prune_offsets(
            self.decided_at, self.decided_update, self.aggregated, committed
        )
        self.latest = {task_id: v for task_id, v in self.latest.items() if task_id in latest_versions}
        windows = staleness or {}
        self.version_from = {
            (task_id, number): where
            for (task_id, number), where in self.version_from.items()
            if task_id in latest_versions
            and number >= latest_versions[task_id] - max(windows.get(task_id, 0), 0)
        }


def apply_version(
    state: LogState, env: Envelope, verifier: EnvelopeVerifier, running: Mapping[str, TrainingTask | None]
) -> None:
    """Fold one record of the model-versions topic in (unsigned or ill-fitting versions are ignored)."""
    if not isinstance(env.event, ModelVersion) or not verifier.accept(env):
        return
    version = env.event
    problem = version_problem(version, running.get(version.task_id))
    if problem is not None:
        state.ignored_versions += 1
        log.error(
            "version does not fit its task; ignored",
            task=version.task_id,
            version=version.version,
            offset=env.offset,
            problem=problem[:500],
        )
        return
    state.aggregated.update(version.contributing_updates)
    state.version_from.setdefault(
        (version.task_id, version.version), {(Topic.MODEL_VERSIONS.value, env.partition): env.first_offset}
    )
    current = state.latest.get(version.task_id)
    if current is None or version.version > current.version:
        state.latest[version.task_id] = version


def apply_decision(
    state: LogState, env: Envelope, verifier: EnvelopeVerifier, running: Mapping[str, TrainingTask | None]
) -> None:
    """Fold one record of the decisions topic in (unsigned ones are ignored)."""
    decision = env.event
    if isinstance(decision, GovernanceDecision) and verifier.accept(env):
        state.record_decision(decision, running.get(decision.task_id), decision.base_version)


def read_tasks(settings: MeshflSettings, state: LogState, verifier: EnvelopeVerifier) -> None:
    for env in read_all(settings, Topic.TASKS):
        state.records_read[Topic.TASKS.value] += 1
        if isinstance(env.event, TrainingTask) and verifier.accept(env):
            state.tasks.setdefault(env.event.id, env.event)


def running_tasks(
    state: LogState, configured: Mapping[str, TrainingTask] | None
) -> dict[str, TrainingTask | None]:
    """The tasks as they run: ``configured`` merged with the bus (``effective_task``)."""
    known = state.tasks
    return {task_id: effective_task(task, known.get(task_id)) for task_id, task in (configured or {}).items()}


def read_log_state(
    settings: MeshflSettings, configured: Mapping[str, TrainingTask] | None = None
) -> LogState:
    """Snapshot-read tasks, every version and every decision (read_committed: aborted work is invisible).

    A version that does not fit its task's model (``governance.log_checks.version_problem``, judged
    against the task that runs: ``configured`` merged with the bus) never becomes a latest version.
    ``log_ends`` is where the snapshot ended: everything below it is folded in.
    """
    state = LogState()
    verifier = EnvelopeVerifier.for_governance_events(settings, reader="governance-log-state")
    read_tasks(settings, state, verifier)
    running = running_tasks(state, configured)
    for topic, apply in ((Topic.MODEL_VERSIONS, apply_version), (Topic.DECISIONS, apply_decision)):
        # Nothing of this instance's tasks is written past these ends meanwhile: it fenced them first.
        for partition, (_start, end) in committed_ranges(settings, topic_name(settings, topic)).items():
            state.log_ends[(topic.value, partition)] = end
        for env in read_all(settings, topic, chunk_signers=verifier.registry):  # sealed sets as agents read
            state.records_read[topic.value] += 1
            apply(state, env, verifier, running)
    state.refused = sum(verifier.refused.values())
    return state
