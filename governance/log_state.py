"""What the log says the governance service has done: read on start and after an aborted transaction.

This is the whole of the service's durable state. Nothing is kept elsewhere: the latest version of each
task, which updates a version consumed, and which update messages (by partition and offset) already
have a decision. Only what governance signed counts: a task, version or decision on the bus without
governance's signature is ignored (logged and counted by the verifier), so forging an ACCEPTED
decision, a higher version or a task under a running id changes nothing here. Rejections for identity
reasons (``IDENTITY_POLICIES``) do not settle an update id: the forger's attempt under another domain's
id leaves the owner's own update free to be decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from governance.identity_gate import IDENTITY_POLICIES
from governance.log_checks import effective_task, version_problem
from meshfl.bus import read_all
from meshfl.events import DecisionOutcome, GovernanceDecision, ModelVersion, TrainingTask
from meshfl.identity.trust import EnvelopeVerifier
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

WITHDRAWN = "buffer_staleness"
"""Policy of the decision that withdraws an accepted update from the async buffer: it is settled."""
FORM_REFUSED = "policy_form"
"""Policy of the decision that withdraws an accepted update whose transforming policies (norm bound,
DP clip) refuse it against the version it would go into: settled, never aggregated raw."""
ROUND_FAILED = "aggregation_error"
"""Policy of the decision that says a round failed (the strategy raised): the task stops there."""
SETTLED_POLICIES = frozenset({WITHDRAWN, FORM_REFUSED})

log = get_logger("meshfl.governance")


@dataclass
class LogState:
    tasks: dict[str, TrainingTask] = field(default_factory=dict)
    latest: dict[str, ModelVersion] = field(default_factory=dict)
    aggregated: set[str] = field(default_factory=set)  # update ids consumed by a version or withdrawn
    decided_ids: set[str] = field(default_factory=set)
    decided_at: dict[tuple[int, int], DecisionOutcome] = field(default_factory=dict)  # (partition, offset)
    ignored_versions: int = 0  # versions skipped because they do not fit their task's model
    refused: int = 0  # events on these topics that governance did not sign: ignored
    failed_rounds: dict[str, tuple[int, str]] = field(default_factory=dict)  # task -> (round, reason)


def read_log_state(
    settings: MeshflSettings, configured: Mapping[str, TrainingTask] | None = None
) -> LogState:
    """Snapshot-read tasks, versions and decisions (read_committed: aborted work is invisible).

    A version that does not fit its task's model (``governance.log_checks.version_problem``, judged
    against the task that runs: ``configured`` merged with the bus) never becomes a latest version.
    """
    state = LogState()
    verifier = EnvelopeVerifier.for_governance_events(settings, reader="governance-log-state")
    for env in read_all(settings, Topic.TASKS):
        if isinstance(env.event, TrainingTask) and verifier.accept(env):
            state.tasks.setdefault(env.event.id, env.event)
    running = {
        task_id: effective_task(task, state.tasks.get(task_id))
        for task_id, task in (configured or {}).items()
    }
    for env in read_all(settings, Topic.MODEL_VERSIONS):
        if isinstance(env.event, ModelVersion) and verifier.accept(env):
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
                continue
            state.aggregated.update(version.contributing_updates)
            current = state.latest.get(version.task_id)
            if current is None or version.version > current.version:
                state.latest[version.task_id] = version
    for env in read_all(settings, Topic.DECISIONS):
        decision = env.event
        if isinstance(decision, GovernanceDecision) and verifier.accept(env):
            if decision.policy not in IDENTITY_POLICIES:
                state.decided_ids.add(decision.update_id)
            if decision.policy in SETTLED_POLICIES:
                state.aggregated.add(decision.update_id)
            if decision.policy == ROUND_FAILED:
                state.failed_rounds[decision.task_id] = (decision.round, decision.reason)
            if decision.source_partition is not None and decision.source_offset is not None:
                key = (decision.source_partition, decision.source_offset)
                state.decided_at.setdefault(key, decision.outcome)
    state.refused = sum(verifier.refused.values())
    return state
