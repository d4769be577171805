"""Governance's split-learning daemon: coordinates every vertical task it was given.

Start-up: the consumers open first (activations and gradients from their end, control from its end),
then the log is read (``recovery``), so nothing written in between is missed; a task not yet on the
tasks topic is published there. Then one thread: consume, step the coordinators, produce, tick the
clocks. All events of a task are keyed by its id (one partition, in order). Runs beside the
horizontal ``GovernanceService`` in one ``meshfl governance run`` (``governance.vertical.run_all``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import torch

from governance.vertical.coordinator import Outgoing, SplitCoordinator
from governance.vertical.recovery import read_recovered
from meshfl.bus import EventConsumer, EventProducer, ensure_topics, read_all
from meshfl.errors import MeshflError
from meshfl.events import Event
from meshfl.identity import Signer
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from meshfl.vertical.events import (
    GOVERNANCE,
    SplitActivations,
    SplitCommand,
    SplitEpoch,
    SplitGradients,
    SplitReport,
    SplitTask,
)

log = get_logger("meshfl.governance.vertical")

_TICK_S = 0.5
_REFUSED = (MeshflError, ValueError, RuntimeError)
"""What one hostile message can make the coordinator raise (bad tensor bytes, torch shape or dtype
errors): the message is refused and logged, the daemon goes on."""


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
    ) -> None:
        self._settings = settings
        self._tasks = list(tasks)
        if signer is None and settings.governance_private_key is not None:
            from meshfl.identity.trust import governance_signer

            signer = governance_signer(settings)  # what it publishes is what its recovery trusts
        self._signer = signer
        self._exit_when_complete = exit_when_complete
        self._threads = threads
        self._poll_timeout = poll_timeout
        self.coordinators: dict[str, SplitCoordinator] = {}

    def run(self, stop: threading.Event) -> int:
        torch.set_num_threads(self._threads)
        ensure_topics(self._settings)
        with (
            EventConsumer(
                self._settings,
                [Topic.SPLIT_ACTIVATIONS, Topic.SPLIT_GRADIENTS],
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
            recovered = read_recovered(self._settings, [task.id for task in self._tasks])
            now = time.monotonic()
            for task in self._tasks:
                coordinator = SplitCoordinator(task, recovered[task.id])
                self.coordinators[task.id] = coordinator
                self._send(producer, coordinator.begin(now))
            producer.flush()
            last_tick = now
            while not stop.is_set():
                env = data.poll(self._poll_timeout)
                while env is not None:
                    self._send(producer, self._on_data(env.event))
                    env = data.poll(0)
                env = control.poll(0)
                while env is not None:
                    self._send(producer, self._on_control(env.event))
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

    def _on_control(self, event: Event) -> list[Outgoing]:
        try:
            return self._control(event)
        except _REFUSED as exc:
            log.warning("split message refused", event_type=type(event).__name__, reason=str(exc))
            return []

    def _on_data(self, event: Event) -> list[Outgoing]:
        try:
            return self._data(event)
        except _REFUSED as exc:
            log.warning("split message refused", event_type=type(event).__name__, reason=str(exc))
            return []

    def _control(self, event: Event) -> list[Outgoing]:
        coordinator = self.coordinators.get(getattr(event, "task_id", ""))
        if coordinator is None:
            return []
        if isinstance(event, SplitEpoch) and event.command == SplitCommand.PREDICT:
            return coordinator.on_predict(event)
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
