"""The console's only I/O with Kafka: follow every topic read-only and fold it into a ``ConsoleView``.

One thread consumes the federation's topics from the beginning (no consumer group, no commits: the
console is an auditor and needs only read ACLs) and folds each event into the view under a lock. A
second thread replays each task whose versions changed, on the events already read, so the page shows
a replay verdict per version without a second read of the log. ``changes`` counts folds, so the web
layer can push a new snapshot only when something happened. Only signed events reach the view: keys
from governance-signed key events, everything else signed by its sender (``meshfl.identity``); a
forged heartbeat, descriptor or decision is counted in ``refused`` and never shown as fact (the
replay still lists it as a finding).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from governance.audit import LoggedEvent, replay
from governance.audit.log import AUDITED_TOPICS
from meshfl.bus import Envelope, EventConsumer, committed_ranges
from meshfl.console.view import ConsoleView
from meshfl.errors import BusError, MeshflError
from meshfl.events import KeyEvent, ModelVersion, TrainingTask
from meshfl.identity import TrustRegistry
from meshfl.identity.trust import EnvelopeVerifier, governance_public_key
from meshfl.logs import get_logger
from meshfl.metrics import METRICS
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name

log = get_logger("meshfl.console")

CONSOLE_TOPICS: tuple[Topic, ...] = (*AUDITED_TOPICS, Topic.HEARTBEATS)
_MAX_WAITING = 10_000


class BusFollower:
    """Folds the bus into a view in the background; ``snapshot`` is safe from any thread."""

    def __init__(
        self, settings: MeshflSettings, *, replay_interval: float = 5.0, poll_timeout: float = 0.5
    ) -> None:
        self._settings = settings
        self._pinned = governance_public_key(
            settings
        )  # no pinned key, no console: it shows only signed facts
        self._verifier = EnvelopeVerifier(
            TrustRegistry(self._pinned), window_seconds=settings.signature_window_seconds, reader="console"
        )
        self.refused = 0
        self._waiting: list[Envelope] = []  # signed with a key not (yet) seen on the keys topic
        self._view = ConsoleView()
        self._lock = threading.Lock()
        self._events: list[LoggedEvent] = []
        self._dirty_tasks: set[str] = set()
        self._replay_interval = replay_interval
        self._poll_timeout = poll_timeout
        self._logical = {topic_name(settings, t): t for t in CONSOLE_TOPICS}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.changes = 0
        self.caught_up = threading.Event()
        self.failure: str | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for name, target in (("console-follow", self._follow), ("console-replay", self._replay_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            state = self._view.snapshot()
        state["ready"] = self.caught_up.is_set()
        state["failure"] = self.failure
        return state

    # --- following ---------------------------------------------------------------------------

    def _follow(self) -> None:
        try:
            ends = self._ends_now()
            if ends is None:
                return
            with EventConsumer(
                self._settings, list(CONSOLE_TOPICS), from_beginning=True, dead_letters=False
            ) as consumer:
                while not self._stop.is_set():
                    envelope = consumer.poll(self._poll_timeout)
                    if envelope is not None:
                        self._fold(envelope)
                    if not self.caught_up.is_set():
                        progress = consumer.progress()
                        if all(progress.get(key, 0) >= end for key, end in ends.items()):
                            self.caught_up.set()
                            log.info("console caught up with the log", events=self._view.events_seen)
        except BusError as exc:
            self.failure = f"lost the bus: {exc}"
            log.error("console stopped following the bus", error=str(exc))

    def _ends_now(self) -> dict[tuple[str, int], int] | None:
        """Where each partition's committed log ends now: ready once the follower got that far.

        The console only reads, so it waits for governance to create the topics (``None`` if asked
        to stop meanwhile)."""
        while not self._stop.is_set():
            try:
                ends: dict[tuple[str, int], int] = {}
                for topic in CONSOLE_TOPICS:
                    name = topic_name(self._settings, topic)
                    for partition, (start, end) in committed_ranges(self._settings, name).items():
                        if end > start:
                            ends[(name, partition)] = end
                return ends
            except BusError as exc:
                log.info("waiting for the federation's topics", reason=str(exc))
                self._stop.wait(2.0)
        return None

    def _fold(self, envelope: Envelope) -> None:
        topic = self._logical.get(envelope.topic)
        event = envelope.event
        with self._lock:
            if topic in AUDITED_TOPICS:  # the replay sees everything, and names what is forged
                self._events.append(
                    LoggedEvent(topic, envelope.partition, envelope.offset, envelope.timestamp_ms, event)
                )
            if not self._trusted(envelope):
                return
            self._view.apply(event)
            METRICS.console_events.inc()
            if isinstance(event, ModelVersion):
                self._dirty_tasks.add(event.task_id)
            elif isinstance(event, TrainingTask):
                self._dirty_tasks.add(event.id)
            self.changes += 1

    def _trusted(self, envelope: Envelope) -> bool:
        """Signed by its sender. Topics are read side by side, so a domain's first events may come
        before the key event that registers it: those wait (bounded) and are folded once it arrives."""
        if isinstance(envelope.event, KeyEvent):
            try:
                self._verifier.registry.apply(envelope.event)
            except MeshflError as exc:
                log.warning("key event refused", offset=envelope.offset, reason=str(exc))
                return False
            waiting, self._waiting = self._waiting, []
            for held in waiting:
                if self._trusted(held):
                    self._view.apply(held.event)
            return True
        problem = self._verifier.check(envelope)
        if problem is None:
            return True
        if problem.policy == "unknown_key" and len(self._waiting) < _MAX_WAITING:
            self._waiting.append(envelope)
            return False
        self.refused += 1
        log.warning("event refused", reader="console", policy=problem.policy, reason=problem.reason)
        return False

    # --- replaying ---------------------------------------------------------------------------

    def _replay_loop(self) -> None:
        while not self._stop.wait(self._replay_interval):
            with self._lock:
                dirty, self._dirty_tasks = self._dirty_tasks, set()
                events = list(self._events)
            for task_id in sorted(dirty):
                verdicts = self._replay_task(events, task_id)
                with self._lock:
                    self._view.record_replay(task_id, verdicts)
                    self.changes += 1

    def _replay_task(self, events: list[LoggedEvent], task_id: str) -> dict[int, dict[str, Any]]:
        started = time.perf_counter()
        try:
            result = replay(
                events,
                task_id,
                governance_key=self._pinned,
                window_seconds=self._settings.signature_window_seconds,
                dp_secret=self._settings.dp_key(),
            )
        except MeshflError as exc:
            log.info("console replay not possible", task=task_id, reason=str(exc))
            return {}
        except Exception as exc:  # a hostile log must not stop the console: the page shows it
            log.error("console replay failed", task=task_id, error=repr(exc))
            return {-1: {"reproduced": False, "problems": [f"replay failed: {exc!r}"]}}
        verdicts = {
            check.version: {"reproduced": check.reproduced and check.self_hash_ok, "problems": check.problems}
            for check in result.versions
        }
        log.info(
            "console replay done",
            task=task_id,
            versions=len(verdicts),
            ok=result.ok,
            seconds=round(time.perf_counter() - started, 3),
        )
        return verdicts


__all__ = ["CONSOLE_TOPICS", "BusFollower"]
