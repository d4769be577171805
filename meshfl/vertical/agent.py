"""The domain's split-learning daemon: moves the events of every split task that names this domain.

It reads the tasks, control and alignment topics from the beginning (the log is the state), acting only
once it has caught up, and the activations and gradients topics from where they ended when it started
(what came before belongs to attempts that are over). Every event it writes is keyed by the task id, so
a task's events keep their order on one partition. One thread: consume, step, produce.

Nothing is trusted before its signature (``meshfl.vertical.trust``): tasks, commands, gradients and top
outputs must be governance's (its pinned key), alignment messages their sending domain's or
requester's; then a task joins only if the domain's own configuration admits it
(``meshfl.vertical.admission``). The agent signs everything it writes with the domain's key and does
not start without it or without governance's pinned key. ``refused`` counts what it turned away.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import torch

from meshfl.bus import Envelope, EventConsumer, EventProducer, ensure_topics
from meshfl.domain.config import load_domain
from meshfl.errors import MeshflError, stops_the_daemon
from meshfl.events import Event
from meshfl.identity import Signer
from meshfl.identity.trust import domain_signer, governance_public_key
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from meshfl.vertical.admission import split_admits
from meshfl.vertical.events import (
    GOVERNANCE,
    SplitActivations,
    SplitAlignment,
    SplitEpoch,
    SplitGradients,
    SplitReport,
    SplitTask,
)
from meshfl.vertical.runtime import Outgoing, TaskRuntime
from meshfl.vertical.spec import warm_up
from meshfl.vertical.trust import SplitTrust

log = get_logger("meshfl.vertical.agent")

_CATCH_UP_TIMEOUT_S = 120.0


class SplitAgent:
    """Runs this domain's part of every split task on the bus until stopped."""

    def __init__(
        self,
        settings: MeshflSettings,
        domain_dir: Path,
        *,
        signer: Signer | None = None,
        threads: int = 1,
        poll_timeout: float = 0.05,
        step_delay: float = 0.0,
        trust: SplitTrust | None = None,
    ) -> None:
        self._settings = settings
        self._config = load_domain(domain_dir)
        # no key, no agent: split learning never runs unsigned (ConfigError without one)
        self._signer = signer or domain_signer(domain_dir, self._config.name)
        governance_public_key(settings)  # and none without governance's pinned key
        self._threads = threads
        self._poll_timeout = poll_timeout
        self._step_delay = step_delay
        self._tasks: dict[str, TaskRuntime] = {}
        self._not_admitted: dict[str, str] = {}
        self._trust = trust
        self._max_elements = max(1, settings.max_payload_bytes // 32)

    @property
    def domain(self) -> str:
        return self._config.name

    @property
    def refused(self) -> Counter[str]:
        """Events turned away, by reason: the verifier's policies, and ``not_admitted`` tasks."""
        counts = Counter(self._trust.refused) if self._trust is not None else Counter()
        counts["not_admitted"] += len(self._not_admitted)
        return +counts

    def run(self, stop: threading.Event) -> int:
        torch.set_num_threads(self._threads)
        warm_up()
        ensure_topics(self._settings)
        client = f"meshfl-split-{self.domain}"
        if self._trust is None:
            self._trust = SplitTrust.from_settings(self._settings, reader=client, own=self._signer)
        trust = self._trust
        try:
            trust.start()
            return self._run(stop, client)
        finally:
            trust.close()

    def _run(self, stop: threading.Event, client: str) -> int:
        with (
            EventConsumer(
                self._settings,
                [Topic.SPLIT_GRADIENTS, Topic.SPLIT_ACTIVATIONS],
                from_beginning=False,
                client_id=f"{client}-data",
            ) as data,
            EventConsumer(
                self._settings, [Topic.TASKS, Topic.SPLIT_CONTROL, Topic.SPLIT_ALIGNMENT], client_id=client
            ) as control,
            EventProducer(self._settings, signer=self._signer, client_id=client) as producer,
        ):
            self._catch_up(control, stop)
            for runtime in self._tasks.values():
                self._send(producer, runtime.resume())
            log.info("split agent running", domain=self.domain, tasks=sorted(self._tasks))
            while not stop.is_set():
                self._trusted_keys()
                env = data.poll(self._poll_timeout)
                while env is not None:
                    self._send(producer, self.on_data(env))
                    env = data.poll(0)
                env = control.poll(0)
                while env is not None:
                    self._send(producer, self.on_control(env))
                    env = control.poll(0)
        return 0

    def on_control(self, env: Envelope, *, live: bool = True) -> list[Outgoing]:
        """One record of the tasks, control or alignment topics: checked, then acted on (``live``) or
        noted (catching up)."""
        if not self._wanted(env.event) or not self._trusted(env):
            return []
        return self._on_control(env.event, live=live)

    def on_data(self, env: Envelope) -> list[Outgoing]:
        """One record of the gradients or activations topics: checked, then acted on."""
        if not self._wanted(env.event) or not self._trusted(env):
            return []
        return self._on_data(env.event)

    def _trusted_keys(self) -> None:
        if self._trust is not None:
            self._trust.take()

    def _trusted(self, env: Envelope) -> bool:
        """Signed by whoever must sign it (governance, the sending domain, the requester's principal)."""
        return self._trust is not None and self._trust.accept(env)

    def _wanted(self, event: Event) -> bool:
        """Whether ``event`` is for this domain at all (read from routing fields, before any check:
        a message for someone else is not worth a signature check)."""
        if isinstance(event, SplitTask):
            named = any(spec.domain == self.domain for spec in event.domains)
            return named and event.id not in self._tasks and event.id not in self._not_admitted
        if getattr(event, "task_id", "") not in self._tasks:
            return False
        if isinstance(event, SplitEpoch):
            return True
        if isinstance(event, SplitAlignment):
            return event.recipient == self.domain or event.sender == self.domain
        if isinstance(event, SplitReport):
            return event.party == self.domain
        if isinstance(event, SplitActivations | SplitGradients):
            return event.recipient == self.domain and event.sender == GOVERNANCE
        return False

    def _catch_up(self, control: EventConsumer, stop: threading.Event) -> None:
        deadline = time.monotonic() + _CATCH_UP_TIMEOUT_S
        while not stop.is_set() and not control.at_end():
            env: Envelope | None = control.poll(0.2)
            if env is not None:
                self.on_control(env, live=False)
            if time.monotonic() > deadline:
                raise MeshflError("the split control topics did not come to an end within the timeout")

    def _send(self, producer: EventProducer, outgoing: list[Outgoing]) -> None:
        for topic, event in outgoing:
            producer.produce(topic, event, key=getattr(event, "task_id", None))

    def _on_control(self, event: Event, *, live: bool) -> list[Outgoing]:
        if isinstance(event, SplitTask):
            return self._on_task(event)
        runtime = self._tasks.get(getattr(event, "task_id", ""))
        if runtime is None:
            return []
        if not live:
            runtime.record(event)
            return []
        try:
            if isinstance(event, SplitEpoch):
                return runtime.on_command(event)
            if isinstance(event, SplitAlignment):
                return runtime.on_alignment(event)
        except Exception as exc:  # one message never stops the daemon; the broker failing does
            if stops_the_daemon(exc):
                raise
            log.error(
                "split command failed",
                task=runtime.task.id,
                domain=self.domain,
                error=f"{type(exc).__name__}: {exc}",
            )
        return []

    def _on_task(self, task: SplitTask) -> list[Outgoing]:
        """Join a governance-signed task this domain's configuration admits; the first wins."""
        if all(spec.domain != self.domain for spec in task.domains) or task.id in self._tasks:
            return []
        reason = split_admits(self._config, task)
        if reason is not None:
            self._not_admitted[task.id] = reason
            log.warning("split task refused by this domain", task=task.id, domain=self.domain, reason=reason)
            return []
        self._tasks[task.id] = TaskRuntime(self._config, task, max_elements=self._max_elements)
        log.info("split task joined", task=task.id, domain=self.domain)
        return []

    def _on_data(self, event: Event) -> list[Outgoing]:
        try:
            return self._data(event)
        except Exception as exc:  # bad tensor bytes, torch shape errors, anything else one message raises
            if stops_the_daemon(exc):
                raise
            log.warning("split message refused", domain=self.domain, reason=f"{type(exc).__name__}: {exc}")
            return []

    def _data(self, event: Event) -> list[Outgoing]:
        runtime = self._tasks.get(getattr(event, "task_id", ""))
        if runtime is None or getattr(event, "recipient", None) != self.domain:
            return []
        if isinstance(event, SplitGradients):
            if self._step_delay > 0:
                time.sleep(self._step_delay)  # a slow domain, to try stragglers and faults
            return runtime.on_gradient(event)
        if isinstance(event, SplitActivations) and event.sender == GOVERNANCE:
            return runtime.on_top_output(event)
        return []
