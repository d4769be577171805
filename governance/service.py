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

The parts: ``catalog_view`` (which domains serve a task), ``deciding`` (one update's decision),
``closing`` (ready rounds into versions); this module is the transaction loop that drives them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from governance.catalog_view import CatalogView
from governance.closing import RoundCloser, dp_secret
from governance.deciding import Decider
from governance.identity_gate import IdentityGate
from governance.log_checks import decode_version, effective_task
from governance.log_state import read_log_state
from governance.policies import check_dp_config
from governance.rounds import TaskState, initial_version, strategy_params
from governance.service_metrics import count_committed
from governance.service_state import ServiceState
from governance.strategies import Strategy, build_strategy
from governance.strategies.memory import round_memory
from governance.version_window import read_window
from meshfl.bus import Envelope, EventConsumer, EventProducer, ensure_topics
from meshfl.errors import BusError
from meshfl.events import ModelUpdate, TrainingTask
from meshfl.identity.trust import KeyFeed, governance_signer
from meshfl.logs import get_logger
from meshfl.metrics import Health
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, governance_id, topic_name

log = get_logger("meshfl.governance")


def _say_round_memory(task: TrainingTask, strategy: Strategy) -> None:
    """Log what a round will hold in memory (robust rules hold every update: a warning)."""
    from meshfl.modelspec import num_parameters

    parameters = num_parameters(task.model)
    policy = task.round_policy
    domains = max(policy.min_domains, policy.target_domains or 0, 1)
    estimate = round_memory(strategy, domains=domains, model_bytes=4 * parameters, parameters=parameters)
    emit = log.info if estimate.streams else log.warning
    emit("round memory estimate", task=task.id, estimate=estimate.describe(), bytes=estimate.total_bytes)


_MAX_BATCH = 64
_BATCH_LINGER_S = 0.02
_PUBLISHED_VISIBLE_S = 30.0


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
        health: Health | None = None,
    ) -> None:
        self._settings = settings
        self._health = health or Health()
        self._configured = list(tasks)
        self._service_id = service_id
        self._poll_timeout = poll_timeout
        self._exit_when_complete = exit_when_complete
        self._state = ServiceState()

    def _wire(self) -> None:
        """The parts, once the tasks are known good: the identity gate needs the pinned key."""
        self._gate = IdentityGate.from_settings(self._settings)
        self._catalog = CatalogView(self._gate.catalog)
        self._decider = Decider(self._state, self._catalog, self._gate)
        self._closer = RoundCloser(self._settings, self._state, self._catalog)

    # --- lifecycle -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        for task in self._configured:  # a bad task file stops the service here, not at round 1
            strategy = build_strategy(task.strategy.name, strategy_params(task))
            check_dp_config(task)
            _say_round_memory(task, strategy)
            dp_secret(self._settings, task)
        signer = governance_signer(self._settings)  # no key, no service: it never publishes unsigned
        self._wire()
        ensure_topics(self._settings)
        group = governance_id(self._settings, self._service_id)
        producer = EventProducer(
            self._settings,
            transactional_id=group,
            client_id=f"{group}-producer",
            on_committed=count_committed,
            signer=signer,
        )
        keys = KeyFeed(self._settings, self._gate.registry, client_id=f"{group}-keys")
        self._gate.attach(keys)
        catalog = EventConsumer(self._settings, [Topic.CATALOG], client_id=f"{group}-catalog")
        self._catalog.attach(catalog)
        updates: EventConsumer | None = None
        try:
            keys.drain()
            self._catalog.drain()
            self._rebuild()
            self._publish_missing_tasks(producer)
            updates = EventConsumer(
                self._settings,
                [Topic.UPDATES],
                group_id=group,
                client_id=f"{group}-updates",
                accept=(ModelUpdate,),
            )
            self._health.set_ready()
            log.info("governance started", tasks=sorted(self._state.tasks), group=group)
            while not stop.is_set():
                self._gate.take()
                self._catalog.take()
                batch = self._poll_batch(updates)
                self._step(producer, updates, batch)
                if self._exit_when_complete and all(s.complete for s in self._state.tasks.values()):
                    log.info("all tasks complete")
                    break
        finally:
            if updates is not None:
                updates.close()
            catalog.close()
            keys.close()
            producer.close()
        return 0

    def _step(self, producer: EventProducer, updates: EventConsumer, batch: list[Envelope]) -> None:
        """One transaction: decide the batch, close ready rounds, commit offsets with the output."""
        if not batch and not self._closer.any_ready(datetime.now(UTC)):
            return
        producer.begin_transaction()
        try:
            for envelope in batch:
                self._decider.handle(producer, envelope)
                self._closer.close_ready(producer)
            self._closer.close_ready(producer)
            topic = topic_name(self._settings, Topic.UPDATES)
            holds = {(topic, partition): offset for partition, offset in self._state.holds().items()}
            producer.commit_transaction(consumer=updates, offsets=updates.safe_offsets(holds))
        except BusError as exc:
            log.error("transaction failed; aborting and rebuilding from the log", error=str(exc))
            producer.abort_transaction()
            updates.rewind_to_committed()
            self._rebuild()

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

    # --- state from the log --------------------------------------------------------------------

    def _rebuild(self) -> None:
        configured = {task.id: task for task in self._configured}
        log_state = read_log_state(self._settings, configured)
        self._state.log = log_state
        self._gate.reset()
        self._state.tasks.clear()
        for task in self._configured:
            effective = effective_task(task, log_state.tasks.get(task.id))
            latest = log_state.latest.get(task.id)
            if latest is None:
                continue
            decoded = decode_version(latest, effective)
            if isinstance(decoded, str):
                log.error("latest version cannot be decoded; task not run", task=task.id, error=decoded)
                continue
            self._state.tasks[task.id] = TaskState(
                task=effective, latest=latest, latest_weights=decoded[0], server_state=decoded[1]
            )
            if self._state.tasks[task.id].is_async:
                self._state.tasks[task.id].recent = read_window(self._settings, effective, latest)
        log.info(
            "state rebuilt from the log",
            versions={k: v.version for k, v in log_state.latest.items()},
            decisions=len(log_state.decided_ids),
            ignored_versions=log_state.ignored_versions,
            ignored_unsigned=log_state.refused,
        )

    def _publish_missing_tasks(self, producer: EventProducer) -> None:
        missing = [t for t in self._configured if t.id not in self._state.log.latest]
        if not missing:
            return
        producer.begin_transaction()
        for task in missing:
            if task.id not in self._state.log.tasks:
                producer.produce(Topic.TASKS, task, key=task.id)
            effective = effective_task(task, self._state.log.tasks.get(task.id))
            version = initial_version(effective)
            producer.produce(Topic.MODEL_VERSIONS, version, key=task.id, digests={"tensors": version.sha256})
        producer.commit_transaction()
        log.info("tasks published", tasks=[t.id for t in missing])
        # The commit returns before the transaction markers move the last stable offset, so a snapshot
        # read at once may miss the versions just published: read again until they are there.
        deadline = time.monotonic() + _PUBLISHED_VISIBLE_S
        self._rebuild()
        while any(t.id not in self._state.log.latest for t in missing) and time.monotonic() < deadline:
            time.sleep(0.2)
            self._rebuild()
