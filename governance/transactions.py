"""Governance's transactions: one open per owned updates partition, each update decided as it arrives.

A partition's transaction begins with its first update and decides every later one of the partition
the moment the consumer hands it out, so a round's last update never waits for the ones before it to
be decided and committed first (the batch used to be gathered whole, then decided, then committed).
It commits, with the partition's governance-state record and the consumer offsets (exactly once: the
decisions, a version, the dead letters and the offsets become visible together or not at all):

* as soon as it produced a version: the version goes out at once, the next round's updates open the
  next transaction (a version is always committed after the decisions that formed it, in their
  transaction: the fold follows decision order, which is log order, so a replay forms the same bytes);
* when it decided ``MAX_UPDATES`` or its updates carried ``MAX_BYTES`` of tensors;
* when no update of the partition came for ``LINGER_S`` and none of its tasks holds accepted updates
  for a round still open; while one does, at the latest ``MAX_OPEN_S`` after it began. A commit in
  the middle of a round buys nothing (the committed offset cannot pass the round's first accepted
  update, which a restart reads and folds again) and costs a broker round trip during which the
  next update waits: the round's decisions go out with its version.

A round that becomes ready by the clock (a deadline) closes in the open transaction, or in one of its
own. Any failure is the caller's to recover (``abort_all``, then rewind and rebuild from the log).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from governance.closing import RoundCloser
from governance.deciding import Decider
from governance.ownership import PartitionProducers, task_partition
from governance.rounds import TaskState
from governance.service_state import ServiceState
from governance.state_record import STATE_KEY, log_positions, state_record
from meshfl import faults
from meshfl.bus import Envelope, EventConsumer, EventProducer
from meshfl.errors import FencedError
from meshfl.events import ModelUpdate
from meshfl.heap import release_free_memory
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name

log = get_logger("meshfl.governance")

MAX_UPDATES = 256
"""Updates a transaction decides at most: its fixed costs (the state record, the commit's round trips)
are shared by the batch (64 before: 16 transactions a round of 1,000 small updates, ``bench/scale.py``)."""
MAX_BYTES = 64 << 20
"""A transaction stops deciding once its updates carried this many tensor bytes: what they leave
behind (reassembly buffers) is given back to the OS after the commit (``release_free_memory``)."""
LINGER_S = 0.02
"""How long an open transaction with no round gathering waits for the next update before it commits."""
MAX_OPEN_S = 2.0
"""The longest a transaction stays open while a round gathers: bounds what a crash makes governance
decide again and how late a decision shows, far below ``transaction.timeout.ms`` (60 s)."""


def tensor_bytes(env: Envelope) -> int:
    """Bytes of tensor data an update message carries (0 for anything else)."""
    event = env.event
    return sum(len(t.data) for t in event.tensors) if isinstance(event, ModelUpdate) else 0


@dataclass
class OpenTransaction:
    """One partition's open transaction."""

    producer: EventProducer
    tasks: list[TaskState]
    versions: list[int]  # of its tasks when it began: a change means it produced a version
    decided: int = 0
    moved: int = 0
    began: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)

    def deadline(self) -> float:
        """When it commits if nothing else happens (``monotonic`` clock)."""
        if any(s.pending and not s.complete and s.error is None for s in self.tasks):
            return self.began + MAX_OPEN_S  # a round gathers: its decisions go with its version
        return min(self.last + LINGER_S, self.began + MAX_OPEN_S)

    def due(self, now: float) -> bool:
        return (
            self.decided >= MAX_UPDATES
            or self.moved >= MAX_BYTES
            or now >= self.deadline()
            or [s.latest.version for s in self.tasks] != self.versions
        )


class Transactions:
    """The open transactions of the owned partitions, driven by the service loop one update at a time."""

    def __init__(
        self,
        settings: MeshflSettings,
        state: ServiceState,
        decider: Decider,
        closer: RoundCloser,
        partitions: int,
    ) -> None:
        self._settings = settings
        self._state = state
        self._decider = decider
        self._closer = closer
        self._partitions = partitions
        self._open: dict[int, OpenTransaction] = {}
        self.committed: dict[int, int] = {}
        """Owned updates partition -> the offset its last transaction committed (0: none); the
        service sets it from the group's offsets when it rewinds."""

    def poll_timeout(self, idle: float) -> float:
        """How long the next poll may wait: ``idle`` with nothing open, else until the first linger ends."""
        if not self._open:
            return idle
        first = min(txn.deadline() for txn in self._open.values())
        return min(idle, max(0.0, first - time.monotonic()))

    def advance(
        self, producers: PartitionProducers, updates: EventConsumer, incoming: list[Envelope]
    ) -> None:
        """Decide the update in ``incoming`` (if any; taken out, so that nothing else holds its tensors)
        in its partition's transaction, close the rounds the clock made ready, then commit every
        transaction that is due."""
        env = incoming.pop() if incoming else None
        decided = None
        if env is not None and env.partition in producers.partitions:  # else: not owned (yet), re-read
            decided = env.partition
            txn = self._open.get(decided) or self._begin(producers, decided)
            txn.moved += tensor_bytes(env)
            txn.decided += 1
            txn.last = time.monotonic()
            self._decider.handle(txn.producer, env)  # folded, the message's bytes go
            env = None
            faults.kill_point("governance.after-consume")
            self._closer.close_ready(txn.producer, txn.tasks)
        env = None  # one not owned goes too
        wall = datetime.now(UTC)
        for partition in producers.partitions:  # rounds the clock made ready (a deadline passed)
            if partition == decided:
                continue  # closed above if ready, by the clock too
            open_txn = self._open.get(partition)
            if self._closer.any_ready(open_txn.tasks if open_txn else self._tasks(partition), wall):
                open_txn = open_txn or self._begin(producers, partition)
                self._closer.close_ready(open_txn.producer, open_txn.tasks)
                open_txn.versions = []  # due: committed below, whatever the round produced
        now = time.monotonic()
        for partition in [p for p, txn in self._open.items() if txn.due(now)]:
            self._commit(updates, partition)

    def commit_all(self, updates: EventConsumer) -> None:
        """Commit every open transaction (a clean stop: what was decided stays decided)."""
        for partition in list(self._open):
            self._commit(updates, partition)

    def abort_all(self, assigned: Collection[int] | None = None) -> None:
        """Abort every open transaction; the caller rewinds and rebuilds (a retry aborts the rest).

        ``assigned``: the updates partitions the group gives this instance now (after a rebalance).
        The transaction of a partition outside them may have been fenced by its new owner already,
        whose ``init_transactions`` aborted it: that ``FencedError`` is let go, not a reason to stop.
        """
        for partition in list(self._open):
            try:
                self._open[partition].producer.abort_transaction()  # a no-op if the commit aborted it
            except FencedError:
                if assigned is None or partition in assigned:
                    raise
                log.info("transaction of a lost partition aborted by its new owner", partition=partition)
            del self._open[partition]

    @property
    def open(self) -> bool:
        return bool(self._open)

    def _tasks(self, partition: int) -> list[TaskState]:
        return [
            s for s in self._state.tasks.values() if task_partition(s.task.id, self._partitions) == partition
        ]

    def _begin(self, producers: PartitionProducers, partition: int) -> OpenTransaction:
        producer = producers.get(partition)
        tasks = self._tasks(partition)
        producer.begin_transaction()
        txn = self._open[partition] = OpenTransaction(producer, tasks, [s.latest.version for s in tasks])
        return txn

    def _commit(self, updates: EventConsumer, partition: int) -> None:
        txn = self._open[partition]
        self._closer.close_ready(txn.producer, txn.tasks)  # a deadline may have passed meanwhile
        faults.kill_point("governance.before-commit")
        faults.fail_point("governance.commit")
        topic = topic_name(self._settings, Topic.UPDATES)
        holds = {(topic, p): offset for p, offset in self._state.holds().items() if p == partition}
        offsets = [tp for tp in updates.safe_offsets(holds) if tp.partition == partition]
        committed = offsets[0].offset if offsets else self.committed.get(partition, 0)
        self._write_state(txn.producer, partition, txn.tasks, committed)
        txn.producer.commit_transaction(consumer=updates, offsets=offsets)
        del self._open[partition]
        self.committed[partition] = committed
        release_free_memory(txn.moved)  # the updates' chunks (and a version's) leave no heap behind

    def _write_state(
        self, producer: EventProducer, partition: int, tasks: Sequence[TaskState], committed: int
    ) -> None:
        """The partition's governance-state record, last in the transaction it summarises (pruned
        first: ids a copy of which its round now refuses, decisions below the offset committed now)."""
        log_state = self._state.log
        log_state.prune(
            {task_id: s.latest.version for task_id, s in self._state.tasks.items()},
            {**self.committed, partition: committed},
            {task_id: s.task.round_policy.max_staleness for task_id, s in self._state.tasks.items()},
        )
        record = state_record(
            updates_topic=topic_name(self._settings, Topic.UPDATES),
            partition=partition,
            committed_offset=committed,
            log_state=log_state,
            tasks=tasks,
            log_ends=log_positions(self._settings, log_state.log_ends, producer.written_ends()),
        )
        producer.produce(Topic.GOVERNANCE_STATE, record, key=STATE_KEY.format(partition))
