"""The governance daemon: consume updates, decide, aggregate, broadcast versions — exactly once.

Exactly-once argument (the log is the state):

* Every batch of work is one Kafka transaction: the decisions it makes, any version it publishes and
  the consumer offsets it commits become visible together or not at all. A crash mid-batch leaves an
  aborted transaction, which the restarted service fences (same ``transactional.id``) and redoes.
* The committed offset never passes an accepted update that is still waiting for its round (the
  ``holds``), so after a restart the service re-reads exactly the updates of the open rounds.
* On start it rebuilds its state from the log: the latest version of each task (model versions
  topic), and the decisions already taken (decisions topic, keyed by the source offset). A re-read
  update that already has a decision is not decided again: if it was accepted and no published version
  consumed it, it goes back into its round; otherwise it is skipped.
* Aggregation sorts updates by (domain, update id), so the version bytes do not depend on arrival
  order, and a crash between the last update and the version gives the same bytes as no crash.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from governance.log_state import WITHDRAWN, LogState, read_log_state
from governance.policies import (
    Candidate,
    PolicyContext,
    Verdict,
    buffer_ready,
    buffer_size,
    evaluate_update,
    round_ready,
)
from governance.rounds import PendingUpdate, TaskState, aggregate_version, initial_version, strategy_params
from governance.strategies import ClientUpdate, build_strategy
from meshfl.bus import Envelope, EventConsumer, EventProducer, ensure_topics
from meshfl.domain.data import serves
from meshfl.errors import BusError, ConfigError, TensorCodecError
from meshfl.events import (
    DataProductDescriptor,
    DecisionOutcome,
    GovernanceDecision,
    ModelUpdate,
    TrainingTask,
    utcnow,
)
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire
from meshfl.topics import Topic, topic_name

log = get_logger("meshfl.governance")

_DECISION_NS = uuid.UUID("6f1c1d4e-3b51-4d38-9a59-2f0c3c1f8e11")
_MAX_BATCH = 64
_BATCH_LINGER_S = 0.02
_CATALOG_POLICIES = frozenset({"known_domain", "data_contract", "admission"})


class GovernanceService:
    """Runs the tasks of a task file until stopped; ``run`` returns the process exit code."""

    def __init__(
        self,
        settings: MeshflSettings,
        tasks: Sequence[TrainingTask],
        *,
        service_id: str = "governance",
        poll_timeout: float = 0.2,
        exit_when_complete: bool = False,
    ) -> None:
        self._settings = settings
        self._configured = list(tasks)
        self._service_id = service_id
        self._poll_timeout = poll_timeout
        self._exit_when_complete = exit_when_complete
        self._states: dict[str, TaskState] = {}
        self._log_state = LogState()
        self._catalog: dict[str, dict[str, DataProductDescriptor]] = {}
        self._catalog_consumer: EventConsumer | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        for task in self._configured:  # a bad task file stops the service here, not at round 1
            build_strategy(task.strategy.name, strategy_params(task))
            self._dp_secret(task)
        ensure_topics(self._settings)
        group = f"meshfl-governance-{self._service_id}"
        producer = EventProducer(self._settings, transactional_id=group, client_id=f"{group}-producer")
        catalog = EventConsumer(self._settings, [Topic.CATALOG], client_id=f"{group}-catalog")
        self._catalog_consumer = catalog
        updates: EventConsumer | None = None
        try:
            self._drain_catalog(catalog)
            self._rebuild()
            self._publish_missing_tasks(producer)
            updates = EventConsumer(
                self._settings, [Topic.UPDATES], group_id=group, client_id=f"{group}-updates"
            )
            log.info("governance started", tasks=sorted(self._states), group=group)
            while not stop.is_set():
                self._take_catalog(catalog)
                batch = self._poll_batch(updates)
                self._step(producer, updates, batch)
                if self._exit_when_complete and all(s.complete for s in self._states.values()):
                    log.info("all tasks complete")
                    break
        finally:
            if updates is not None:
                updates.close()
            catalog.close()
            producer.close()
        return 0

    def _step(self, producer: EventProducer, updates: EventConsumer, batch: list[Envelope]) -> None:
        """One transaction: decide the batch, close ready rounds, commit offsets with the output."""
        now = datetime.now(UTC)
        ready = [s for s in self._states.values() if self._ready(s, now, closing=False)]
        if not batch and not ready:
            return
        producer.begin_transaction()
        try:
            for envelope in batch:
                self._handle(producer, envelope)
                self._close_ready(producer)
            self._close_ready(producer)
            holds = {
                (topic_name(self._settings, Topic.UPDATES), partition): offset
                for state in self._states.values()
                for partition, offset in state.holds().items()
            }
            producer.commit_transaction(consumer=updates, offsets=updates.safe_offsets(holds))
        except BusError as exc:
            log.error("transaction failed; aborting and rebuilding from the log", error=str(exc))
            producer.abort_transaction()
            updates.rewind_to_committed()
            self._rebuild()

    # --- state from the log --------------------------------------------------------------------

    def _rebuild(self) -> None:
        state = read_log_state(self._settings)
        self._log_state = state
        self._states = {}
        for task in self._configured:
            on_bus = state.tasks.get(task.id)
            if on_bus is not None and on_bus.model_dump(exclude={"created_at"}) != task.model_dump(
                exclude={"created_at"}
            ):
                log.warning("task file differs from the task on the bus; the bus wins", task=task.id)
            effective = on_bus or task
            latest = state.latest.get(task.id)
            if latest is None:
                continue
            self._states[task.id] = TaskState(
                task=effective,
                latest=latest,
                latest_weights=from_wire(latest.tensors),
                server_state=from_wire(latest.server_state),
            )
        log.info(
            "state rebuilt from the log",
            versions={k: v.version for k, v in state.latest.items()},
            decisions=len(state.decided_ids),
        )

    def _publish_missing_tasks(self, producer: EventProducer) -> None:
        missing = [t for t in self._configured if t.id not in self._states]
        if not missing:
            return
        producer.begin_transaction()
        for task in missing:
            if task.id not in self._log_state.tasks:
                producer.produce(Topic.TASKS, task, key=task.id)
            producer.produce(
                Topic.MODEL_VERSIONS, initial_version(self._log_state.tasks.get(task.id, task)), key=task.id
            )
        producer.commit_transaction()
        log.info("tasks published", tasks=[t.id for t in missing])
        self._rebuild()

    def _take_catalog(self, consumer: EventConsumer) -> None:
        """Take in whatever catalog records are already fetched, without a broker round trip."""
        env = consumer.poll(0.0)
        while env is not None:
            self._record_product(env)
            env = consumer.poll(0.0)

    def _record_product(self, env: Envelope) -> None:
        if isinstance(env.event, DataProductDescriptor):
            product = env.event
            self._catalog.setdefault(product.domain, {})[product.id] = product

    def _drain_catalog(self, consumer: EventConsumer) -> None:
        """Read the catalog up to its end (asks the broker where the end is: for startup and doubts)."""
        while True:
            env = consumer.poll(0.0 if consumer.at_end() else 0.5)
            if env is None:
                if consumer.at_end():
                    return
                continue
            self._record_product(env)

    def _poll_batch(self, consumer: EventConsumer) -> list[Envelope]:
        first = consumer.poll(self._poll_timeout)
        if first is None:
            return []
        batch = [first]
        while len(batch) < _MAX_BATCH:
            # A short linger gathers the updates of a round into one transaction.
            more = consumer.poll(_BATCH_LINGER_S)
            if more is None:
                break
            batch.append(more)
        return batch

    # --- deciding ------------------------------------------------------------------------------

    def _handle(self, producer: EventProducer, env: Envelope) -> None:
        update = env.event
        if not isinstance(update, ModelUpdate):
            log.warning("not a model update on the updates topic; skipped", type=type(update).__name__)
            return
        previous = self._log_state.decided_at.get((env.partition, env.offset))
        state = self._states.get(update.task_id)
        if previous is not None:
            if (
                previous == DecisionOutcome.ACCEPTED
                and state is not None
                and update.update_id not in self._log_state.aggregated
            ):
                self._restore(update, env, state)
            return
        verdict, weights = self._evaluate(update, state)
        catalog = self._catalog_consumer
        if not verdict.accepted and verdict.policy in _CATALOG_POLICIES and catalog is not None:
            # The domain may have registered a moment ago: read the catalog to its end and look again.
            self._drain_catalog(catalog)
            verdict, weights = self._evaluate(update, state)
        if verdict.accepted and state is not None:
            state.pending.append(self._pending(update, env, weights))
        self._decide(producer, update, env, verdict)

    def _restore(self, update: ModelUpdate, env: Envelope, state: TaskState) -> None:
        """Put an update accepted before a restart back into its round, with the same transformation
        (clipping) its checks applied then: the policies are pure, so evaluating again reproduces it."""
        verdict, weights = self._evaluate(update, state, restoring=True)
        if not verdict.accepted:
            log.warning(
                "accepted update fails its checks on restore; using it as recorded",
                update=update.update_id,
                policy=verdict.policy,
                reason=verdict.reason,
            )
            weights = from_wire(update.tensors)
        state.pending.append(self._pending(update, env, weights))
        log.info("accepted update restored into its round", update=update.update_id)

    def _evaluate(
        self, update: ModelUpdate, state: TaskState | None, *, restoring: bool = False
    ) -> tuple[Verdict, dict]:
        if state is None:
            return Verdict(False, "known_task", f"task {update.task_id!r} is not run by this service"), {}
        if state.complete:
            budget = state.budget()
            if not budget.accepted:
                return Verdict(False, budget.policy, budget.reason), {}
            return Verdict(False, "task_complete", f"task finished after round {state.latest.round}"), {}
        try:
            weights = from_wire(update.tensors)
        except TensorCodecError as exc:
            return Verdict(False, "tensor_layout", str(exc)), {}
        context = PolicyContext(
            task=state.task,
            open_round=state.open_round,
            latest_version=state.latest.version,
            global_weights=state.latest_weights,
            expected=state.expected(),
            catalog={domain: list(products.values()) for domain, products in self._catalog.items()},
            # No copy of the (ever-growing) decided set per update, except to restore one update.
            decided_update_ids=(
                self._log_state.decided_ids - {update.update_id} if restoring else self._log_state.decided_ids
            ),
            accepted_domains_this_round=frozenset(state.accepted_domains()),
        )
        verdict, final = evaluate_update(Candidate(update=update, weights=weights), context)
        return verdict, dict(final)

    def _pending(self, update: ModelUpdate, env: Envelope, weights: dict) -> PendingUpdate:
        return PendingUpdate(
            update_id=update.update_id,
            domain=update.domain,
            num_examples=update.num_examples,
            base_version=update.base_version,
            weights=weights,
            partition=env.partition,
            first_offset=env.first_offset,
        )

    def _decide(self, producer: EventProducer, update: ModelUpdate, env: Envelope, verdict: Verdict) -> None:
        outcome = DecisionOutcome.ACCEPTED if verdict.accepted else DecisionOutcome.REJECTED
        decision = GovernanceDecision(
            decision_id=str(uuid.uuid5(_DECISION_NS, f"{env.partition}/{env.offset}")),
            task_id=update.task_id,
            update_id=update.update_id,
            domain=update.domain,
            round=update.round,
            outcome=outcome,
            policy=verdict.policy,
            reason=verdict.reason,
            source_partition=env.partition,
            source_offset=env.offset,
            created_at=utcnow(),
        )
        producer.produce(Topic.DECISIONS, decision, key=update.task_id)
        self._log_state.decided_ids.add(update.update_id)
        self._log_state.decided_at[(env.partition, env.offset)] = outcome
        log.info(
            "decision",
            task=update.task_id,
            update=update.update_id,
            domain=update.domain,
            round=update.round,
            outcome=outcome.value,
            policy=verdict.policy,
            reason=verdict.reason,
        )

    # --- rounds --------------------------------------------------------------------------------

    def _serving_domains(self, task: TrainingTask) -> list[str]:
        return sorted(
            domain
            for domain, products in self._catalog.items()
            if any(serves(product, task) is None for product in products.values())
            and domain not in task.admission.suspended_domains
        )

    def _ready(self, state: TaskState, now: datetime, *, closing: bool) -> bool:
        if state.complete or not state.pending or len(state.pending) == state.failed_with:
            return False
        policy = state.task.round_policy
        if state.is_async:
            return buffer_ready(policy, len(state.pending)).ready
        accepted = state.accepted_domains()
        serving = self._serving_domains(state.task)
        readiness = round_ready(
            policy,
            accepted=len(accepted),
            opened_at=state.opened_at,
            now=now,
            expected_domains=len(serving) or None,
            pending_domains=[d for d in serving if d not in accepted],
        )
        if closing and readiness.ready:
            log.info("round ready", task=state.task.id, round=state.open_round, reason=readiness.reason)
        return readiness.ready

    def _close_ready(self, producer: EventProducer) -> None:
        """Publish a version for every task whose round (or async buffer) is ready, as often as it is."""
        for state in self._states.values():
            while self._ready(state, datetime.now(UTC), closing=True):
                self._close_round(producer, state)

    def _drop_too_stale(self, producer: EventProducer, state: TaskState) -> None:
        """Buffered updates that aged past max_staleness while waiting are withdrawn, with a decision."""
        limit = state.task.round_policy.max_staleness
        for item in [p for p in state.pending if state.latest.version - p.base_version > limit]:
            state.pending.remove(item)
            self._round_decision(
                producer,
                state,
                update_id=item.update_id,
                domain=item.domain,
                policy=WITHDRAWN,
                reason=f"withdrawn from the buffer: staleness {state.latest.version - item.base_version} "
                f"> max_staleness {limit} by version {state.latest.version + 1}",
                marker=f"withdrawn/{item.update_id}",
            )
            self._log_state.aggregated.add(item.update_id)  # settled: never restored into a buffer

    def _close_round(self, producer: EventProducer, state: TaskState) -> None:
        chosen = state.pending
        if state.is_async:
            self._drop_too_stale(producer, state)
            # FedBuff: the K oldest accepted updates in log order (the same after a restart).
            chosen = sorted(state.pending, key=lambda p: (p.partition, p.first_offset))[
                : buffer_size(state.task.round_policy)
            ]
        updates = [
            ClientUpdate(
                update_id=item.update_id,
                domain=item.domain,
                weights=item.weights,
                num_examples=item.num_examples,
                staleness=state.latest.version - item.base_version,
            )
            for item in chosen
        ]
        try:
            version = aggregate_version(
                state.task,
                state.latest,
                state.latest_weights,
                state.server_state,
                updates,
                created_at=utcnow(),
                dp_secret=self._dp_secret(state.task),
            )
        except ValueError as exc:
            # e.g. Bulyan with fewer than 4f+3 updates: wait for more rather than publish a weak version.
            state.failed_with = len(state.pending)
            log.error(
                "strategy cannot aggregate these updates; waiting for more",
                task=state.task.id,
                round=state.open_round,
                updates=len(updates),
                error=str(exc),
            )
            return
        self._report_stragglers(producer, state, version.contributing_domains)
        producer.produce(Topic.MODEL_VERSIONS, version, key=state.task.id)
        self._log_state.aggregated.update(version.contributing_updates)
        state.advance(version)
        log.info(
            "model version published",
            task=version.task_id,
            version=version.version,
            domains=version.contributing_domains,
            sha256=version.sha256,
        )

    def _dp_secret(self, task: TrainingTask) -> bytes:
        if task.privacy is None:
            return b""
        secret = self._settings.dp_key()
        if not secret:
            raise ConfigError(f"task {task.id} uses differential privacy: set MESHFL_DP_SECRET")
        return secret

    def _round_decision(
        self,
        producer: EventProducer,
        state: TaskState,
        *,
        update_id: str,
        domain: str,
        policy: str,
        reason: str,
        marker: str | None = None,
    ) -> None:
        """A rejection the round itself decides (no update message behind it): stragglers, withdrawals."""
        decision = GovernanceDecision(
            decision_id=str(uuid.uuid5(_DECISION_NS, marker or update_id)),
            task_id=state.task.id,
            update_id=update_id,
            domain=domain,
            round=state.open_round,
            outcome=DecisionOutcome.REJECTED,
            policy=policy,
            reason=reason,
            created_at=utcnow(),
        )
        producer.produce(Topic.DECISIONS, decision, key=state.task.id)

    def _report_stragglers(
        self, producer: EventProducer, state: TaskState, contributing: Iterable[str]
    ) -> None:
        """A round closed without some serving domains: say so in the audit trail."""
        if state.is_async:
            return
        missing = [d for d in self._serving_domains(state.task) if d not in set(contributing)]
        for domain in missing:
            self._round_decision(
                producer,
                state,
                update_id=f"missing/{state.task.id}/{state.open_round}/{domain}",
                domain=domain,
                policy="round_deadline",
                reason=f"straggler: no update from {domain} when round {state.open_round} closed",
            )
