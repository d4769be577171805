"""A task's slice of the log, as the auditor sees it: events with the coordinates they were read at.

Replay, lineage and the report are pure functions over ``LoggedEvent``s, so the same code runs on a
snapshot of the live bus (``events_from_bus``) and on an exported Avro file
(``governance.audit.export.events_from_file``). ``TaskLog`` indexes one task's events the way an
auditor asks about them: the task, its versions, its decisions, and updates by coordinates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from meshfl.bus import read_all
from meshfl.errors import ConfigError, ReplayError
from meshfl.events import (
    DataProductDescriptor,
    DecisionOutcome,
    Event,
    GovernanceDecision,
    KeyEvent,
    ModelUpdate,
    ModelVersion,
    TrainingTask,
)
from meshfl.identity import TrustRegistry
from meshfl.identity.trust import read_registry
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

log = get_logger("meshfl.audit.log")

AUDITED_TOPICS: tuple[Topic, ...] = (
    Topic.TASKS,
    Topic.UPDATES,
    Topic.DECISIONS,
    Topic.MODEL_VERSIONS,
    Topic.CATALOG,
    Topic.KEYS,
)
"""What an audit reads: the federation's own topics, the catalog (data products in lineage) and the
keys governance registered (who may have signed what)."""


@dataclass(frozen=True)
class LoggedEvent:
    """One event and where it sits in the log: logical topic, partition, offset, broker timestamp.

    ``offset`` is the offset that completed the event (the last chunk of a chunked one), the same
    coordinate the governance service writes into a decision's ``source_offset``.
    """

    topic: Topic
    partition: int
    offset: int
    timestamp_ms: int
    event: Event

    @property
    def coordinates(self) -> tuple[int, int]:
        return (self.partition, self.offset)


def belongs_to(event: Event, task_id: str) -> bool:
    """Whether ``event`` is part of ``task_id``'s federation (descriptors and keys belong to every task)."""
    if isinstance(event, TrainingTask):
        return event.id == task_id
    if isinstance(event, ModelUpdate | ModelVersion | GovernanceDecision):
        return event.task_id == task_id
    return isinstance(event, DataProductDescriptor | KeyEvent)


def _read_topic(
    settings: MeshflSettings, topic: Topic, task_id: str, timeout: float, signers: TrustRegistry | None
) -> list[LoggedEvent]:
    return [
        LoggedEvent(topic, env.partition, env.offset, env.timestamp_ms, env.event)
        for env in read_all(settings, topic, timeout=timeout, chunk_signers=signers)
        if belongs_to(env.event, task_id)
    ]


def _chunk_signers(settings: MeshflSettings, timeout: float) -> TrustRegistry | None:
    """The registry chunk seals are checked with, as governance and the agents check them: a chunk
    another writer put into a sealed set is passed over there, so it must be here too, else a set they
    reassembled is corrupt to the audit and an honest decision looks like one on a missing update.
    None (every set judged by its digest) where governance's public key is not configured."""
    try:
        return read_registry(settings, timeout=timeout)
    except ConfigError as exc:
        log.warning("chunk seals not checked: no governance public key", error=str(exc))
        return None


def events_from_bus(settings: MeshflSettings, task_id: str, *, timeout: float = 10.0) -> list[LoggedEvent]:
    """A snapshot of ``task_id``'s events on the bus, read from the beginning of each topic.

    The topics are read side by side (one snapshot consumer each: the cost of a replay is mostly
    consumer start-up and fetching, not arithmetic). ``read_all`` raises rather than return a partial
    snapshot, so an audit never silently verifies half a log. Chunk sets are reassembled as the
    live readers did (``_chunk_signers``).
    """
    signers = _chunk_signers(settings, timeout)
    with ThreadPoolExecutor(max_workers=len(AUDITED_TOPICS)) as pool:
        parts = list(pool.map(lambda t: _read_topic(settings, t, task_id, timeout, signers), AUDITED_TOPICS))
    events = [event for part in parts for event in part]
    log.info("task log read from the bus", task=task_id, events=len(events))
    return events


@dataclass
class TaskLog:
    """One task's events indexed for auditing; built once by ``TaskLog.of``."""

    task_id: str
    task: TrainingTask
    versions: dict[int, list[LoggedEvent]] = field(default_factory=dict)
    updates_at: dict[tuple[int, int], LoggedEvent] = field(default_factory=dict)
    updates_by_id: dict[str, list[LoggedEvent]] = field(default_factory=lambda: defaultdict(list))
    decisions: list[LoggedEvent] = field(default_factory=list)
    products: dict[tuple[str, str], DataProductDescriptor] = field(default_factory=dict)
    events_read: int = 0

    @classmethod
    def of(cls, events: Iterable[LoggedEvent], task_id: str) -> TaskLog:
        """Index ``events`` (any order; each topic partition is sorted by offset here)."""
        mine = sorted(
            (e for e in events if belongs_to(e.event, task_id)),
            key=lambda e: (AUDITED_TOPICS.index(e.topic), e.partition, e.offset),
        )
        tasks = [e.event for e in mine if isinstance(e.event, TrainingTask)]
        if not tasks:
            raise ReplayError(f"task {task_id!r} is not on the log (no TrainingTask with that id)")
        index = cls(task_id=task_id, task=tasks[0], events_read=len(mine))
        versions: dict[int, list[LoggedEvent]] = defaultdict(list)
        for item in mine:
            event = item.event
            if isinstance(event, ModelVersion):
                versions[event.version].append(item)
            elif isinstance(event, ModelUpdate):
                index.updates_at[item.coordinates] = item
                index.updates_by_id[event.update_id].append(item)
            elif isinstance(event, GovernanceDecision):
                index.decisions.append(item)
            elif isinstance(event, DataProductDescriptor):
                index.products[(event.id, event.version)] = event
        index.versions = dict(sorted(versions.items()))
        return index

    def version(self, number: int) -> ModelVersion | None:
        """The first published event of version ``number`` (later copies are findings of replay)."""
        found = self.versions.get(number)
        return found[0].event if found else None  # type: ignore[return-value]

    def accepting(self, update_id: str) -> list[GovernanceDecision]:
        """The decisions that accepted ``update_id``, in log order."""
        return [
            d.event
            for d in self.decisions
            if isinstance(d.event, GovernanceDecision)
            and d.event.update_id == update_id
            and d.event.outcome == DecisionOutcome.ACCEPTED
        ]

    def rejections(self) -> list[GovernanceDecision]:
        return [
            d.event
            for d in self.decisions
            if isinstance(d.event, GovernanceDecision) and d.event.outcome == DecisionOutcome.REJECTED
        ]

    def accepted_update(self, update_id: str) -> tuple[LoggedEvent | None, list[str]]:
        """The update message an accepting decision points at, and any problem on the way there."""
        problems: list[str] = []
        chosen: LoggedEvent | None = None
        for decision in self.accepting(update_id):
            if decision.source_partition is None or decision.source_offset is None:
                problems.append(f"decision {decision.decision_id} has no source coordinates")
                continue
            found = self.updates_at.get((decision.source_partition, decision.source_offset))
            if found is None or not isinstance(found.event, ModelUpdate):
                problems.append(
                    f"decision {decision.decision_id} points at partition {decision.source_partition} "
                    f"offset {decision.source_offset}, where there is no update of this task"
                )
                continue
            if found.event.update_id != update_id:
                problems.append(
                    f"decision {decision.decision_id} points at offset {decision.source_offset}, "
                    f"which holds update {found.event.update_id}"
                )
                continue
            if chosen is None:
                chosen = found
            elif chosen.coordinates != found.coordinates:
                problems.append(
                    f"update {update_id} accepted twice, at offsets {chosen.offset} and {found.offset}"
                )
        if chosen is None and not problems:
            problems.append(f"update {update_id} has no accepting decision")
        return chosen, problems
