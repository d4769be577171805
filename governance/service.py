"""The governance daemon: consume updates, decide, aggregate, broadcast versions — exactly once.

Exactly-once argument (the log is the state):

* Work is done in Kafka transactions, one open per updates partition at a time, each update decided
  in it as it arrives (``governance.transactions``): the decisions it makes, any version it
  publishes, its dead letters, the partition's state record and the consumer offsets it commits
  become visible together or not at all. A crash leaves an open transaction, which the next owner of
  the partition fences (``init_transactions`` on the partition's transactional id) before it reads
  the log; a failed one is aborted (a client in a fatal state is renewed, ``EventProducer``) and the
  state rebuilt from the log.
* One active governance per task: a task's updates share a partition (keyed by task id), the group
  gives that partition to one member, and the partition's transactional id fences any other instance
  (``governance.ownership``). State is rebuilt after fencing and after every assignment change.
* The committed offset never passes an accepted update that is still waiting for its round (the
  ``holds``, the minimum over the tasks of a partition), so after a restart the service re-reads
  exactly the updates of the open rounds.
* On (re)assignment it rebuilds its state from the log: the latest version of each owned task, and the
  decisions already taken (keyed by the source offset). A re-read update that already has a decision
  is not decided again: if it was accepted and no published version consumed it, it goes back into its
  round, in the form its policies passed (``governance.deciding``); otherwise it is skipped.
* A FedAvg-family round is folded in decision order, which is the log order of the task's partition
  (``governance.round_fold``): a restart re-reads and re-folds the open round's updates in the same
  order, so a crash between the last update and the version gives the same bytes as no crash. Rules
  that need every update sort them by (domain, update id).
* Static group membership (``group.instance.id``): a restarted instance gets its partitions back at
  once; a standby takes over when the dead member's session (``session_timeout_ms``) expires.

The parts: ``catalog_view`` (which domains serve a task), ``deciding`` (one update's decision),
``closing`` (ready rounds into versions), ``ownership`` (partitions, fencing), ``transactions`` (when
a transaction begins and commits); this module is the loop that drives them and recovers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from tenacity import Retrying

from governance.catalog_view import CatalogView
from governance.closing import RoundCloser, dp_secret
from governance.deciding import Decider
from governance.identity_gate import IdentityGate
from governance.log_checks import decode_version, effective_task
from governance.ownership import PartitionProducers, owned_tasks, task_partition
from governance.policies import check_dp_config
from governance.rounds import TaskState, initial_version, strategy_params
from governance.service_metrics import count_committed
from governance.service_state import ServiceState
from governance.state_topic import read_governance_state
from governance.strategies import Strategy, build_strategy
from governance.strategies.memory import round_memory
from governance.transactions import Transactions
from governance.version_window import read_window
from meshfl import faults
from meshfl.bus import Envelope, EventConsumer, EventProducer, ensure_topics, partition_count
from meshfl.errors import BusError, FencedError, RegistryUnavailableError
from meshfl.events import ModelUpdate, TrainingTask
from meshfl.heap import release_free_memory
from meshfl.identity.trust import KeyFeed, governance_signer
from meshfl.logs import get_logger
from meshfl.metrics import Health
from meshfl.retry import retrying
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, governance_id

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


_RECOVERY_DEADLINE_S = 600.0
_PUBLISHED_VISIBLE_S = 30.0
SESSION_TIMEOUT_MS = 6000
"""The broker's smallest allowed session (``group.min.session.timeout.ms``): a standby takes over
about this long after the active instance dies."""


class GovernanceService:
    """Runs the tasks of a task file until stopped; ``run`` returns the process exit code.

    ``service_id`` names the consumer group; ``instance_id`` (default: the service id) names this
    member within it (static membership): instances of one service with different instance ids share
    the tasks by partition; a restart with the same instance id resumes at once.
    """

    def __init__(
        self,
        settings: MeshflSettings,
        tasks: Sequence[TrainingTask],
        *,
        service_id: str = "governance",
        instance_id: str | None = None,
        poll_timeout: float = 0.2,
        exit_when_complete: bool = False,
        health: Health | None = None,
        session_timeout_ms: int = SESSION_TIMEOUT_MS,
        threads: int = 1,
    ) -> None:
        """``threads``: torch intra-op threads. One by default: the per-update checks and the fold are
        memory-bound, and on a shared or small machine torch's thread pool spinning against other
        processes made a 1M-element sum 35x slower (bench/round.py, README); raise it for large models
        on a dedicated host."""
        self._settings = settings
        self._threads = threads
        self._health = health or Health()
        self._configured = list(tasks)
        self._service_id = service_id
        self._instance_id = instance_id or service_id
        self._poll_timeout = poll_timeout
        self._exit_when_complete = exit_when_complete
        self._session_timeout_ms = session_timeout_ms
        self._partitions = 1
        self._state = ServiceState()

    def _wire(self) -> None:
        """The parts, once the tasks are known good: the identity gate needs the pinned key."""
        self._gate = IdentityGate.from_settings(self._settings)
        self._catalog = CatalogView(self._gate.catalog)
        self._decider = Decider(self._state, self._catalog, self._gate)
        self._closer = RoundCloser(self._settings, self._state, self._catalog)

    # --- lifecycle -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        import torch

        torch.set_num_threads(self._threads)
        for task in self._configured:  # a bad task file stops the service here, not at round 1
            strategy = build_strategy(task.strategy.name, strategy_params(task))
            check_dp_config(task)
            _say_round_memory(task, strategy)
            dp_secret(self._settings, task)
        signer = governance_signer(self._settings)  # no key, no service: it never publishes unsigned
        self._wire()
        ensure_topics(self._settings)
        self._partitions = partition_count(self._settings, Topic.UPDATES)
        self._txns = Transactions(self._settings, self._state, self._decider, self._closer, self._partitions)
        group = governance_id(self._settings, self._service_id)
        member = f"{group}-{self._instance_id}"
        producers = PartitionProducers(
            self._settings, client_prefix=member, on_committed=count_committed, signer=signer
        )
        keys = KeyFeed(self._settings, self._gate.registry, client_id=f"{member}-keys")
        self._gate.attach(keys)
        catalog = EventConsumer(
            self._settings, [Topic.CATALOG], client_id=f"{member}-catalog", on_tombstone=self._catalog.forget
        )
        self._catalog.attach(catalog)
        updates: EventConsumer | None = None
        try:
            keys.drain()
            self._catalog.drain()
            updates = EventConsumer(
                self._settings,
                [Topic.UPDATES],
                group_id=group,
                client_id=f"{member}-updates",
                accept=(ModelUpdate,),
                instance_id=member,
                session_timeout_ms=self._session_timeout_ms,
                transactional_dead_letters=True,
                chunk_signers=self._gate.registry,
            )
            self._health.set_ready()
            log.info("governance started", tasks=[t.id for t in self._configured], group=group, member=member)
            seen_changes = 0
            while not stop.is_set():
                self._gate.take()
                self._catalog.take()
                env = updates.poll(self._txns.poll_timeout(self._poll_timeout))
                if updates.assignment_changes != seen_changes:
                    seen_changes = updates.assignment_changes
                    # Read before this instance fenced and rebuilt: the rewind re-reads it, and what the
                    # open transactions decided is decided again by whoever owns the partitions now.
                    del env
                    for attempt in self._recovering("taking over the assigned partitions"):
                        with attempt:
                            self._txns.abort_all(assigned={p for _topic, p in updates.assigned()})
                            self._take_over(producers, updates)
                    continue
                incoming = [] if env is None else [env]
                del env  # decided and folded in ``advance``: its message goes then, not at the next poll
                self._advance(producers, updates, incoming)
                if self._exit_when_complete and not self._txns.open and self._all_complete():
                    log.info("all tasks complete")
                    break
            self._advance(producers, updates, [], finish=True)
        except FencedError as exc:
            log.error("fenced: another governance instance now runs these tasks; stopping", error=str(exc))
            raise
        finally:
            if updates is not None:
                updates.close()
            catalog.close()
            keys.close()
            producers.close()
        return 0

    def _all_complete(self) -> bool:
        owned = self._state.tasks
        return len(owned) == len(self._configured) and all(s.complete for s in owned.values())

    def _take_over(self, producers: PartitionProducers, updates: EventConsumer) -> None:
        """After an assignment change: fence the owned partitions first, then rebuild their tasks."""
        owned = [partition for _topic, partition in updates.assigned()]
        producers.own(owned)
        self._rewind(updates)
        self._rebuild(owned)
        self._publish_missing_tasks(producers)
        log.info("owning", partitions=owned, tasks=sorted(self._state.tasks))

    def _advance(
        self,
        producers: PartitionProducers,
        updates: EventConsumer,
        incoming: list[Envelope],
        *,
        finish: bool = False,
    ) -> None:
        """The update in ``incoming`` (taken out of it) into its partition's transaction
        (``governance.transactions``), or at ``finish`` every open one committed; on a failure, abort
        them all, rewind and rebuild from the log."""
        try:
            if finish:
                self._txns.commit_all(updates)
            else:
                self._txns.advance(producers, updates, incoming)
        except FencedError:
            raise
        except (BusError, RegistryUnavailableError) as exc:
            incoming.clear()
            log.error("transaction failed; aborting and rebuilding from the log", error=str(exc))
            faults.kill_point("governance.during-abort")
            # The broker may be away (that may be why it failed): retry the recovery, not the daemon.
            for attempt in self._recovering("aborting, rewinding and rebuilding"):
                with attempt:
                    self._txns.abort_all()
                    self._rewind(updates)
                    self._rebuild(producers.partitions)

    def _rewind(self, updates: EventConsumer) -> None:
        resumed = updates.rewind_to_committed()
        self._txns.committed = {partition: offset for (_topic, partition), offset in resumed.items()}

    @staticmethod
    def _recovering(what: str) -> Retrying:
        """Retries of a recovery step while the broker is away (fenced: no retry, another owns it)."""
        return retrying(
            what,
            retry_on=lambda e: isinstance(e, BusError) and not isinstance(e, FencedError),
            deadline=_RECOVERY_DEADLINE_S,
            max_wait=5.0,
        )

    def _partition_of(self, task_id: str) -> int:
        return task_partition(task_id, self._partitions)

    # --- state from the log --------------------------------------------------------------------

    def _rebuild(self, partitions: Sequence[int]) -> None:
        configured = {task.id: task for task in self._configured}
        log_state = read_governance_state(
            self._settings,
            configured,
            partitions=partitions,
            partition_count=self._partitions,
            committed=self._txns.committed,
        )
        self._state.log = log_state
        self._gate.reset()
        self._state.tasks.clear()
        for task in owned_tasks(self._configured, partitions, self._partitions):
            effective = effective_task(task, log_state.tasks.get(task.id))
            latest = log_state.latest.get(task.id)
            if latest is None:
                continue
            # views of the version's bytes, which the task state holds anyway (as ``TaskState.advance``)
            decoded = decode_version(latest, effective, copy=False)
            if isinstance(decoded, str):
                log.error("latest version cannot be decoded; task not run", task=task.id, error=decoded)
                continue
            failed = log_state.failed_rounds.get(task.id)
            self._state.tasks[task.id] = TaskState(
                task=effective,
                latest=latest,
                latest_weights=decoded[0],
                server_state=decoded[1],
                error=failed[1] if failed is not None and failed[0] == latest.round + 1 else None,
            )
            if self._state.tasks[task.id].is_async:
                self._state.tasks[task.id].recent = read_window(self._settings, effective, latest, log_state)
        log.info(
            "state rebuilt from the log",
            source=log_state.source,
            records_read=dict(log_state.records_read),
            versions={k: v.version for k, v in log_state.latest.items()},
            decided_ids=len(log_state.decided_ids),
            open_decisions=len(log_state.decided_at),
            ignored_versions=log_state.ignored_versions,
            ignored_unsigned=log_state.refused,
        )

    def _publish_missing_tasks(self, producers: PartitionProducers) -> None:
        owned = owned_tasks(self._configured, producers.partitions, self._partitions)
        missing = [t for t in owned if t.id not in self._state.log.latest]
        if not missing:
            return
        for task in missing:
            producer: EventProducer = producers.get(self._partition_of(task.id))
            producer.begin_transaction()
            if task.id not in self._state.log.tasks:
                producer.produce(Topic.TASKS, task, key=task.id)
            effective = effective_task(task, self._state.log.tasks.get(task.id))
            version = initial_version(effective)
            producer.produce(Topic.MODEL_VERSIONS, version, key=task.id)  # signed by BLAKE3, not its sha256
            producer.commit_transaction()
            size = sum(memoryview(t.data).nbytes for t in version.tensors)
            del version  # the rebuild below reads it back from the log: never held twice
            release_free_memory(size)
        log.info("tasks published", tasks=[t.id for t in missing])
        # The commit returns before the transaction markers move the last stable offset, so a snapshot
        # read at once may miss the versions just published: read again until they are there.
        deadline = time.monotonic() + _PUBLISHED_VISIBLE_S
        self._rebuild(producers.partitions)
        while any(t.id not in self._state.log.latest for t in missing) and time.monotonic() < deadline:
            time.sleep(0.2)
            self._rebuild(producers.partitions)
