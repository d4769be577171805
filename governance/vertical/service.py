"""Governance's split-learning daemon: coordinates every vertical task it was given.

Start-up: the consumers open first (activations and gradients from their end, control from its end),
then the log is read (``recovery``), so nothing written in between is missed; a task not yet on the
tasks topic is published there. Then one thread: consume, step the coordinators, produce, tick the
clocks. All events of a task are keyed by its id (one partition, in order). Runs beside the
horizontal ``GovernanceService`` in one ``meshfl governance run`` (``governance.vertical.run_all``).

Every report, activation, owner gradient and prediction request is checked before any of its fields
is used (``meshfl.vertical.trust``): signed by the registered key of the party it names (or of the
requester's principal), fresh, never seen; a copy in another party's name is refused and counted, so
the first *verified* copy is the one that counts. Governance signs all it writes (it does not start
without its private key).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import torch

from governance.vertical.coordinator import SplitCoordinator
from governance.vertical.messages import Outgoing
from governance.vertical.recovery import read_recovered
from meshfl.bus import Envelope, EventConsumer, EventProducer, ensure_topics, read_all
from meshfl.errors import stops_the_daemon
from meshfl.events import Event
from meshfl.identity import Signer
from meshfl.identity.trust import governance_signer
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from meshfl.vertical.events import (
    GOVERNANCE,
    SplitActivations,
    SplitCommand,
    SplitEpoch,
    SplitGradients,
    SplitLabelsAt,
    SplitReport,
    SplitTask,
)
from meshfl.vertical.spec import warm_up
from meshfl.vertical.trust import SplitTrust

log = get_logger("meshfl.governance.vertical")

_TICK_S = 0.5


class SplitGovernance:
    """Runs the split tasks until stopped (or, with ``exit_when_complete``, until all are complete)."""

    def __init__(
        self,
        settings: MeshflSettings,
        tasks: Sequence[SplitTask],
        *,
        signer: Signer | None = None,
        exit_when_complete: bool = False,
        threads: int = 1,
        poll_timeout: float = 0.05,
        trust: SplitTrust | None = None,
    ) -> None:
        self._settings = settings
        self._tasks = list(tasks)
        # signed like every governance event (ConfigError without the key): recovery trusts its own only
        self._signer = signer or governance_signer(settings)
        self._trust = trust
        self._exit_when_complete = exit_when_complete
        self._threads = threads
        self._poll_timeout = poll_timeout
        self.coordinators: dict[str, SplitCoordinator] = {}

    @property
    def refused(self) -> dict[str, int]:
        """Events refused before use, by policy (``impersonation``, ``unsigned``, ``bad_signature``...)."""
        return {} if self._trust is None else dict(self._trust.refused)

    def run(self, stop: threading.Event) -> int:
        torch.set_num_threads(self._threads)
        warm_up()
        ensure_topics(self._settings)
        if self._trust is None:
            self._trust = SplitTrust.from_settings(self._settings, reader="split-governance")
        trust = self._trust
        try:
            trust.start()
            return self._run(stop)
        finally:
            trust.close()

    def _run(self, stop: threading.Event) -> int:
        # gradients come to governance only from a label owner: without one, reading that topic would
        # decode governance's own gradients (one a domain a batch) for nothing
        owners = any(task.labels.at == SplitLabelsAt.DOMAIN for task in self._tasks)
        with (
            EventConsumer(
                self._settings,
                [Topic.SPLIT_ACTIVATIONS, *([Topic.SPLIT_GRADIENTS] if owners else [])],
                from_beginning=False,
                client_id="meshfl-split-governance-data",
            ) as data,
            EventConsumer(
                self._settings,
                [Topic.SPLIT_CONTROL],
                from_beginning=False,
                client_id="meshfl-split-governance",
            ) as control,
            EventProducer(
                self._settings, signer=self._signer, client_id="meshfl-split-governance"
            ) as producer,
        ):
            self._publish_missing_tasks(producer)
            assert self._trust is not None
            task_ids = [task.id for task in self._tasks]
            recovered = read_recovered(self._settings, task_ids, self._trust.registry)
            now = time.monotonic()
            for task in self._tasks:
                coordinator = SplitCoordinator(task, recovered[task.id])
                self.coordinators[task.id] = coordinator
                self._send(producer, coordinator.begin(now))
            producer.flush()
            last_tick = now
            while not stop.is_set():
                self._trust.take()
                env = data.poll(self._poll_timeout)
                while env is not None:
                    self._send(producer, self.on_data(env))
                    env = data.poll(0)
                env = control.poll(0)
                while env is not None:
                    self._send(producer, self.on_control(env))
                    env = control.poll(0)
                now = time.monotonic()
                if now - last_tick >= _TICK_S:
                    last_tick = now
                    for coordinator in self.coordinators.values():
                        self._send(producer, coordinator.tick(now))
                if self._exit_when_complete and all(c.complete for c in self.coordinators.values()):
                    producer.flush()
                    log.info("split tasks complete", tasks=sorted(self.coordinators))
                    return 0
        return 0

    def _publish_missing_tasks(self, producer: EventProducer) -> None:
        published = {
            env.event.id for env in read_all(self._settings, Topic.TASKS) if isinstance(env.event, SplitTask)
        }
        for task in self._tasks:
            if task.id not in published:
                producer.produce(Topic.TASKS, task, key=task.id)
                log.info("split task published", task=task.id)
        producer.flush()

    def _send(self, producer: EventProducer, outgoing: list[Outgoing]) -> None:
        for topic, event in outgoing:
            producer.produce(topic, event, key=getattr(event, "task_id", None))

    def _wanted(self, event: Event) -> bool:
        """For one of its tasks and for governance (routing fields only, read before any check)."""
        if getattr(event, "task_id", "") not in self.coordinators:
            return False
        if isinstance(event, SplitEpoch):
            return event.command == SplitCommand.PREDICT
        if isinstance(event, SplitReport):
            return True
        return isinstance(event, SplitActivations | SplitGradients) and event.recipient == GOVERNANCE

    def _trusted(self, env: Envelope) -> bool:
        return self._trust is not None and self._trust.accept(env)

    def on_control(self, env: Envelope) -> list[Outgoing]:
        """One record of split-control: verified, then given to its task's coordinator."""
        if not self._wanted(env.event) or not self._trusted(env):
            return []
        try:
            return self._control(env.event)
        except Exception as exc:  # bad tensor bytes, torch shape or dtype errors, anything one message raises
            return _refused(env, exc)

    def on_data(self, env: Envelope) -> list[Outgoing]:
        """One record of activations or gradients: verified, then given to its task's coordinator."""
        if not self._wanted(env.event) or not self._trusted(env):
            return []
        try:
            return self._data(env.event)
        except Exception as exc:  # bad tensor bytes, torch shape or dtype errors, anything one message raises
            return _refused(env, exc)

    def _control(self, event: Event) -> list[Outgoing]:
        coordinator = self.coordinators.get(getattr(event, "task_id", ""))
        if coordinator is None:
            return []
        if isinstance(event, SplitEpoch) and event.command == SplitCommand.PREDICT:
            return coordinator.predictions.on_request(event)
        if isinstance(event, SplitReport):
            return coordinator.on_report(event, time.monotonic())
        return []

    def _data(self, event: Event) -> list[Outgoing]:
        coordinator = self.coordinators.get(getattr(event, "task_id", ""))
        if coordinator is None or getattr(event, "recipient", None) != GOVERNANCE:
            return []
        if isinstance(event, SplitActivations):
            return coordinator.on_activations(event, time.monotonic())
        if isinstance(event, SplitGradients):
            return coordinator.on_owner_gradient(event, time.monotonic())
        return []


def _refused(env: Envelope, exc: Exception) -> list[Outgoing]:
    """One message's failure is logged and the message refused; the daemon goes on. Only the
    environment's failures (the broker, a stop) stop it."""
    if stops_the_daemon(exc):
        raise exc
    log.warning(
        "split message refused",
        event_type=type(env.event).__name__,
        reason=f"{type(exc).__name__}: {exc}",
    )
    return []
