"""The domain agent daemon: publish the domain's data products, train each round, publish updates.

Data never leaves the domain: the agent reads its local files, and only weights, example counts and
metrics go on the bus. Each update is published by an idempotent producer without a transaction (its
id is deterministic and signed, and governance refuses a second copy), then an ``AgentProgress``
record (compacted topic, key ``domain/task``) in a transaction of the agent's fenced producer. A
restarted agent knows the rounds its progress names; for the next one it first looks for its own
update on the log (``meshfl.domain.published``), so a kill between the update and its progress never
puts a second, different update of the same (task, round) on the bus.

Everything the agent publishes is signed with the domain's key (``<domain dir>/keys/signing.key``);
it takes tasks and versions only when governance signed them (its key pinned in settings), and
progress records only when signed by this domain's own key: a forged task, version or progress
record is logged, counted (``ignored_events``) and never used.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from meshfl import faults
from meshfl.bus import Envelope, EventConsumer, EventProducer, ensure_topics, read_all
from meshfl.domain.admission import admits
from meshfl.domain.config import DomainConfig, load_domain
from meshfl.domain.data import LocalData, prepare_local_data, product_serves
from meshfl.domain.heartbeats import meshfl_version, send_heartbeats
from meshfl.domain.published import own_update, publish_timeout, record_progress, signed_by
from meshfl.domain.training import LocalResult, train_local
from meshfl.errors import (
    BusError,
    DataContractError,
    RegistryUnavailableError,
    TrainingStopped,
)
from meshfl.events import (
    AgentProgress,
    AgentStatus,
    DomainHeartbeat,
    ModelUpdate,
    ModelVersion,
    TrainingTask,
    utcnow,
)
from meshfl.identity.binding import UPDATE_NAMESPACE, update_id_for
from meshfl.identity.trust import EnvelopeVerifier, domain_signer, read_registry
from meshfl.limits import spec_elements
from meshfl.logs import get_logger
from meshfl.metrics import METRICS, Health
from meshfl.modelspec import expected_shapes
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire, to_wire
from meshfl.topics import Topic, agent_transactional_id, client_name

log = get_logger("meshfl.domain")

_UPDATE_NS = UPDATE_NAMESPACE


def round_seed(task: TrainingTask, round_: int, domain: str) -> int:
    return int(uuid.uuid5(_UPDATE_NS, f"seed/{task.id}/{task.seed}/{round_}/{domain}").int & 0x7FFFFFFF)


@dataclass
class _AgentView:
    """What the agent knows from the bus: tasks, the latest version of each, its own progress."""

    tasks: dict[str, TrainingTask] = field(default_factory=dict)
    latest: dict[str, ModelVersion] = field(default_factory=dict)
    latest_at_ms: dict[str, int] = field(default_factory=dict)  # task id -> the latest version's log time
    progress: dict[str, int] = field(default_factory=dict)
    unsure: set[tuple[str, int]] = field(default_factory=set)
    """(task, base version) whose next round may be on the log already: the versions known when the
    agent started (an earlier agent of this domain may have published on them, then died before its
    progress) and those of a failed publish. Their round is looked for on the log before training."""
    refused: set[str] = field(default_factory=set)
    refused_tasks: dict[str, str] = field(default_factory=dict)  # task id -> why this domain refused it
    ignored_events: int = 0  # tasks refused or redefined, counted (never used)


class DomainAgent:
    """One domain's daemon. ``run`` blocks until ``stop`` is set and returns the exit code."""

    def __init__(
        self,
        settings: MeshflSettings,
        domain_dir: Path,
        *,
        heartbeat_interval: float = 5.0,
        threads: int | None = None,
        poll_timeout: float = 0.5,
        simulate_delay: float = 0.0,
        health: Health | None = None,
    ) -> None:
        self._settings = settings
        self._health = health or Health()
        self._config: DomainConfig = load_domain(domain_dir)
        self._domain = self._config.name
        self._agent_id = f"{self._domain}-{uuid.uuid4().hex[:8]}"
        self._heartbeat_interval = heartbeat_interval
        self._threads = threads
        self._poll_timeout = poll_timeout
        self._simulate_delay = simulate_delay
        self._stop = threading.Event()
        self._view = _AgentView()
        self._data_cache: dict[str, tuple[tuple[tuple[str, int], ...], LocalData]] = {}
        self._status = AgentStatus.STARTING
        self._current_round: int | None = None
        self._signer = domain_signer(domain_dir, self._domain)  # no key, no agent: it never runs unsigned
        self._verifier: EnvelopeVerifier | None = None
        self._updates_sender: str | None = None  # what this agent's update records name as sender

    @property
    def domain(self) -> str:
        return self._domain

    def run(self, stop: threading.Event) -> int:
        self._stop = stop
        torch.set_num_threads(self._threads or self._config.training.threads)
        ensure_topics(self._settings)
        registry = read_registry(self._settings)
        registry.pin(self._domain, self._signer.public_key)
        self._verifier = EnvelopeVerifier(
            registry, window_seconds=self._settings.signature_window_seconds, reader=f"agent-{self._domain}"
        )
        # Descriptors and progress go through the fenced transactional producer (a second agent of
        # this domain stops at its next commit); updates through an idempotent one, no transaction.
        producer = EventProducer(
            self._settings,
            transactional_id=agent_transactional_id(self._settings, self._domain),
            client_id=client_name(self._settings, f"agent-{self._domain}"),
            signer=self._signer,
        )
        updates = EventProducer(
            self._settings,
            client_id=client_name(self._settings, f"agent-{self._domain}-updates"),
            signer=self._signer,
        )
        self._updates_sender = updates.sender
        beat_stop = threading.Event()
        beats = threading.Thread(
            target=send_heartbeats,
            args=(
                self._settings,
                self._signer,
                self._beat,
                self._heartbeat_interval,
                beat_stop,
                self._domain,
            ),
            name="heartbeats",
            daemon=True,
        )
        consumer: EventConsumer | None = None
        try:
            self._publish_descriptors(producer)
            self._load_progress()
            beats.start()
            consumer = EventConsumer(
                self._settings,
                [Topic.TASKS, Topic.MODEL_VERSIONS],
                client_id=client_name(self._settings, f"agent-{self._domain}-subscriber"),
                chunk_signers=registry,
            )
            self._drain(consumer)
            self._view.unsure.update((t, v.version) for t, v in self._view.latest.items())
            self._status = AgentStatus.IDLE
            self._health.set_ready()
            log.info(
                "agent started", domain=self._domain, products=[p.id for p in self._config.data_products]
            )
            while not stop.is_set():
                self._catch_up(consumer)
                for task_id in sorted(self._view.tasks):
                    if stop.is_set():
                        break
                    self._maybe_train(producer, updates, task_id)
            self._status = AgentStatus.STOPPING
            log.info("agent stopping", domain=self._domain)
        finally:
            beat_stop.set()
            if beats.is_alive():
                beats.join(timeout=5)
            if consumer is not None:
                consumer.close()
            try:
                updates.close()
            finally:
                producer.close()
        return 0

    # --- bus I/O -------------------------------------------------------------------------------

    def _publish_descriptors(self, producer: EventProducer) -> None:
        descriptors = self._config.descriptors()
        producer.begin_transaction()
        for descriptor in descriptors:
            producer.produce(Topic.CATALOG, descriptor, key=descriptor.id)
        producer.commit_transaction()
        log.info("data products published", domain=self._domain, products=[d.id for d in descriptors])

    def _load_progress(self) -> None:
        for env in read_all(self._settings, Topic.AGENT_PROGRESS):
            record = env.event
            if isinstance(record, AgentProgress) and record.domain == self._domain and self._trusted(env):
                previous = self._view.progress.get(record.task_id, 0)
                self._view.progress[record.task_id] = max(previous, record.last_round)
        if self._view.progress:
            log.info("progress restored", domain=self._domain, progress=self._view.progress)

    def _catch_up(self, consumer: EventConsumer) -> None:
        """Take in every task and version available now, so training starts from the newest."""
        env = consumer.poll(self._poll_timeout)
        while env is not None:
            event = env.event
            if isinstance(event, TrainingTask) and self._trusted(env):
                self._take_task(event)
            elif isinstance(event, ModelVersion) and self._trusted(env):
                self._take_version(event, env.timestamp_ms)
            env = consumer.poll(0.0)

    def _drain(self, consumer: EventConsumer) -> None:
        """Read tasks and versions to the end of the log as it is now (at start: whatever an earlier
        agent of this domain can have trained on is then known, see ``_AgentView.unsure``)."""
        self._catch_up(consumer)
        while not self._stop.is_set() and not consumer.at_end():
            self._catch_up(consumer)

    def _signed_here(self, update: ModelUpdate) -> bool:
        """An update of this domain, signed with this domain's key (what the agent itself publishes)."""
        return self._verifier is not None and signed_by(self._verifier.registry, self._domain)(update)

    def _trusted(self, env: Envelope) -> bool:
        """Signed by whoever must sign it (governance for tasks and versions, this domain for its
        progress) with a trusted key, and fresh; anything else is counted and dropped."""
        if self._verifier is not None and self._verifier.accept(env):
            return True
        self._view.ignored_events += 1
        return False

    def _take_version(self, version: ModelVersion, log_time_ms: int) -> None:
        if version.task_id in self._view.refused_tasks:
            self._view.ignored_events += 1  # a refused task's weights are never held
            return
        current = self._view.latest.get(version.task_id)
        if current is None or version.version > current.version:
            self._view.latest[version.task_id] = version
            self._view.latest_at_ms[version.task_id] = log_time_ms

    def _take_task(self, task: TrainingTask) -> None:
        """Keep a task only if this domain's own configuration admits it; the first definition wins
        (as in governance's log state), so a redefinition on the bus changes nothing here."""
        known = self._view.tasks.get(task.id)
        if known is not None:
            if known != task:
                self._view.ignored_events += 1
                log.warning("task redefined on the bus; ignored", domain=self._domain, task=task.id)
            return
        reason = admits(self._config, task)
        if reason is not None:
            self._view.ignored_events += 1
            if self._view.refused_tasks.get(task.id) != reason:
                log.warning("task refused by this domain", domain=self._domain, task=task.id, reason=reason)
            self._view.refused_tasks[task.id] = reason
            return
        self._view.tasks[task.id] = task

    def _beat(self) -> DomainHeartbeat:
        return DomainHeartbeat(
            domain=self._domain,
            agent_id=self._agent_id,
            status=self._status,
            data_products=[p.id for p in self._config.data_products],
            # copied in one step each (C-level, under the GIL): the agent's thread adds tasks meanwhile,
            # and iterating the live dict here raised "dictionary changed size during iteration"
            tasks=sorted(set(self._view.tasks) - set(self._view.refused)),
            current_round=self._current_round,
            meshfl_version=meshfl_version(),
            sent_at=utcnow(),
        )

    # --- training ------------------------------------------------------------------------------

    def _local_data(self, task: TrainingTask) -> LocalData:
        """The task's rows and holdout, read and contract-checked once per version of the files."""
        key = _files_key(self._config)
        cached = self._data_cache.get(task.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        data = prepare_local_data(self._config, task)
        self._data_cache[task.id] = (key, data)
        return data

    def _published_before(self, producer: EventProducer, task_id: str, version: ModelVersion) -> bool:
        """Whether this domain's update on ``version`` (round ``version.round + 1``) is on the log
        already; if so its progress is recorded now. True also when the log cannot be read (the round
        is tried again next loop, never trained blind)."""
        round_ = version.round + 1
        update_id = update_id_for(task_id, round_, self._domain)
        try:
            found = own_update(
                self._settings,
                task_id=task_id,
                update_id=update_id,
                since_ms=self._view.latest_at_ms.get(task_id, 0),
                trusted=self._signed_here,
                sender=self._updates_sender,
                chunk_signers=None if self._verifier is None else self._verifier.registry,
            )
        except (BusError, RegistryUnavailableError) as exc:
            log.error("cannot read back the updates; will retry", task=task_id, round=round_, error=str(exc))
            self._stop.wait(1.0)
            return True
        self._view.unsure.discard((task_id, version.version))
        if found is None:
            return False
        self._view.progress[task_id] = round_
        record_progress(producer, self._domain, task_id, round_, update_id)
        return True

    def _maybe_train(self, producer: EventProducer, updates: EventProducer, task_id: str) -> None:
        task = self._view.tasks[task_id]
        version = self._view.latest.get(task_id)
        if version is None or task_id in self._view.refused or version.round >= task.rounds:
            return
        round_ = version.round + 1
        if self._view.progress.get(task_id, 0) >= round_:
            return
        reasons = [product_serves(p, task) for p in self._config.data_products]
        if all(reason is not None for reason in reasons):
            self._view.refused.add(task_id)
            log.info("task not served by this domain", domain=self._domain, task=task_id, reasons=reasons)
            return
        if (task_id, version.version) in self._view.unsure and self._published_before(
            producer, task_id, version
        ):
            return
        try:
            data = self._local_data(task)
        except DataContractError as exc:
            self._view.refused.add(task_id)
            log.error("local data violates its contract; task refused", task=task_id, error=str(exc))
            return
        self._status, self._current_round = AgentStatus.TRAINING, round_
        log.info("training", domain=self._domain, task=task_id, round=round_, base_version=version.version)
        started = time.perf_counter()
        result = self._train_guarded(task, version, data, round_)
        if result is None:
            return
        METRICS.rounds_trained.labels(self._domain, task_id).inc()
        METRICS.training_seconds.labels(self._domain, task_id).observe(time.perf_counter() - started)
        if self._simulate_delay > 0 and self._stop.wait(self._simulate_delay):
            self._status = AgentStatus.STOPPING  # a straggler on purpose, asked to stop: publish nothing
            return
        update = ModelUpdate(
            update_id=update_id_for(task_id, round_, self._domain),
            task_id=task_id,
            round=round_,
            base_version=version.version,
            domain=self._domain,
            data_products=data.refs,
            num_examples=result.num_examples,
            metrics={**result.metrics, "train_seconds": time.perf_counter() - started},
            tensors=to_wire(result.state, copy=False),  # a state of its own, encoded below
            created_at=utcnow(),
        )
        self._status = AgentStatus.IDLE
        try:
            updates.produce(Topic.UPDATES, update, key=task_id)
            # Past librdkafka's delivery timeout: every record is then reported, none left in flight
            # to land after the log is read back.
            updates.flush(timeout=publish_timeout(self._settings))
        except (BusError, RegistryUnavailableError) as exc:
            # Part or all of it may be on the log (a lost acknowledgement): looked for before retraining.
            self._view.unsure.add((task_id, version.version))
            log.error("update not published; will retry", domain=self._domain, round=round_, error=str(exc))
            self._stop.wait(1.0)
            return
        METRICS.updates_published.labels(self._domain, task_id).inc()
        self._view.progress[task_id] = round_
        log.info(
            "update published",
            domain=self._domain,
            task=task_id,
            round=round_,
            base_version=version.version,
            examples=result.num_examples,
            **{k: round(v, 4) for k, v in result.metrics.items()},
        )
        faults.kill_point("agent.before-progress")
        record_progress(producer, self._domain, task_id, round_, update.update_id)

    def _train_guarded(
        self, task: TrainingTask, version: ModelVersion, data: LocalData, round_: int
    ) -> LocalResult | None:
        """Decode one version and train on it; whatever that raises, the agent stays up.

        A version that cannot be decoded within the task's model size, or that torch, numpy or the
        optimizer fails on, is skipped with a log line naming the error (its round is not published);
        a stop request ends training within one minibatch and publishes nothing.
        """
        try:
            # read only: training loads a copy into its model
            start = from_wire(
                version.tensors, max_elements=spec_elements(expected_shapes(task.model)), copy=False
            )
            return train_local(
                task,
                start,
                data.x_train,
                data.y_train,
                seed=round_seed(task, round_, self._domain),
                proximal_mu=float(task.strategy.params.get("proximal_mu", 0.0)),
                holdout=data.holdout,
                stop=self._stop,
                round_=round_,
            )
        except TrainingStopped:
            self._status = AgentStatus.STOPPING
            log.info("training stopped on request", domain=self._domain, task=task.id, round=round_)
            return None
        except Exception as exc:  # one version must not kill the daemon, whatever it makes torch raise
            self._view.progress[task.id] = round_
            self._status = AgentStatus.IDLE
            log.error(
                "cannot train from this version; skipped",
                task=task.id,
                version=version.version,
                error=f"{type(exc).__name__}: {exc}"[:2000],
            )
            return None


def _files_key(config: DomainConfig) -> tuple[tuple[str, int], ...]:
    """Identifies the local data as it is now: a changed file means reading (and checking) it again."""
    out = []
    for product in config.data_products:
        path = config.product_path(product)
        out.append((str(path), path.stat().st_mtime_ns if path.exists() else -1))
    return tuple(out)
