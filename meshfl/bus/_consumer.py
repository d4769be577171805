"""``EventConsumer``: decoded events out, bad data to the dead-letter topic, offsets that never skip.

Without a group it ``assign()``s every partition (a reader: no group, no commits); with a group
it ``subscribe()``s and commits only what ``safe_offsets`` allows: the next offset after what was
handed out, held back to the first offset of any incomplete chunk set and to the caller's holds.
It reads ``read_committed`` always, so aborted transactions never surface.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from meshfl.bus._config import bus_error, consumer_config, is_fatal, is_retriable, resolve_codec
from meshfl.bus._dead_letter import DeadLetter, DeadLetterWriter
from meshfl.bus._envelope import Envelope
from meshfl.bus._intake import RecordIntake, RegistryPause
from meshfl.bus._provenance import log_time
from meshfl.errors import BusError, RegistryUnavailableError
from meshfl.events import Event
from meshfl.logs import get_logger
from meshfl.metrics import METRICS
from meshfl.retry import SHUTDOWN, retrying
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, is_compacted, topic_name

if TYPE_CHECKING:
    from meshfl.codec import EventCodec
    from meshfl.identity import TrustRegistry

log = get_logger("meshfl.bus.consumer")

PartitionKey = tuple[str, int]
_REGISTRY_MAX_BACKOFF_S = 5.0


_METADATA_TIMEOUT = 10.0


_QUEUED_AFTER_DEADLINE = 1000
"""Non-event messages (end-of-partition markers, chunks, dead letters) a poll still reads past its
deadline, as long as they are already queued: bounded, so a flood of them cannot hold a caller."""


class EventConsumer:
    """Consumes meshfl events from ``topics``; see the module docstring for the offset rules."""

    def __init__(
        self,
        settings: MeshflSettings,
        topics: Sequence[Topic],
        *,
        codec: EventCodec | None = None,
        group_id: str | None = None,
        from_beginning: bool = True,
        client_id: str | None = None,
        dead_letters: bool = True,
        chunk_timeout: float = 600.0,
        accept: tuple[type[Event], ...] | None = None,
        instance_id: str | None = None,
        session_timeout_ms: int | None = None,
        transactional_dead_letters: bool = False,
        on_tombstone: Callable[[str, str | None], None] | None = None,
        start_offsets: Mapping[int, int] | None = None,
        chunk_signers: TrustRegistry | None = None,
        only_sender: str | None = None,
    ) -> None:
        """``start_offsets`` (readers only): read just these partitions, each from its offset.
        ``chunk_signers``: the registry chunk seals are checked with (``meshfl.bus._chunk_seal``): a
        sealed set spends its signer's budget and takes only its signer's chunks; without one every set
        spends its claim's. ``only_sender`` (readers looking for their own records): a record whose
        ``meshfl-sender`` header names another producer is passed over undecoded, chunks included; one
        without the header (written before every record carried it) is decoded as ever."""
        self._settings = settings
        self._start_offsets = start_offsets
        self._codec = resolve_codec(settings, codec)
        self._names = [topic_name(settings, topic) for topic in topics]
        self._compacted = {topic_name(settings, t) for t in topics if is_compacted(t)}
        self._group_id = group_id
        self._role = client_id or group_id or "reader"
        self._dead_letters = DeadLetterWriter(
            settings, enabled=dead_letters, group_id=group_id, transactional=transactional_dead_letters
        )
        self._registry_failures = 0
        self.assignment_changes = 0
        """Incremented by every assignment or revocation: a caller's cue to rebuild what it owns."""
        self._intake = RecordIntake(
            settings,
            self._codec,
            self._dead_letters,
            chunk_timeout=chunk_timeout,
            compacted=self._compacted,
            accept=accept,
            on_tombstone=on_tombstone,
            chunk_signers=chunk_signers,
            only_sender=only_sender,
        )
        self._reassembler = self._intake.reassembler
        self._assigned: set[PartitionKey] = set()
        self._next: dict[PartitionKey, int] = {}
        self._start: dict[PartitionKey, int] = {}
        self._clock_ms: dict[PartitionKey, int] = {}
        self._seen_high: dict[PartitionKey, int] = {}
        """The last high watermark read per partition: ``at_end`` asks the broker again only once the
        position reaches it (a drain of 1,000 catalog records made 1,000 round trips per partition)."""
        self._create_time_topics: set[str] = set()
        self._fatal: KafkaError | None = None
        config = consumer_config(
            settings,
            group_id=group_id,
            client_id=client_id,
            instance_id=instance_id,
            session_timeout_ms=session_timeout_ms,
        )
        config["error_cb"] = self._on_client_error
        try:
            self._consumer = Consumer(config)
            if group_id is None:
                self._assign_all(from_beginning)
            else:
                self._consumer.subscribe(
                    self._names, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
                )
        except KafkaException as exc:
            action = f"starting a consumer of {', '.join(self._names)}"
            if hasattr(self, "_consumer"):
                self._consumer.poll(0)  # serves error_cb: a refused login explains a metadata timeout
            if self._fatal is not None:
                raise BusError(f"{action} failed: {self._fatal.name()} ({self._fatal.str()})") from exc
            raise bus_error(action, exc) from exc

    # --- consuming ------------------------------------------------------------------------------

    def poll(self, timeout: float = 1.0) -> Envelope | None:
        """The next decoded event, or ``None`` when none arrived within ``timeout`` seconds.

        Past the deadline it still takes what is already queued (up to ``_QUEUED_AFTER_DEADLINE``
        messages, without waiting): an end-of-partition marker or a chunk queued between two events
        must not hide the event right behind it, or a reader that drains with ``poll(0)`` (an agent
        catching up to the newest version) would fall one fetch behind the log each time.
        """
        deadline = time.monotonic() + timeout
        late = 0
        while True:
            if self._fatal is not None:
                raise BusError(f"consumer failed: {self._fatal.name()} ({self._fatal.str()})")
            self._dead_letters.poll()
            message = self._consumer.poll(max(0.0, deadline - time.monotonic()))
            if message is None:
                return None
            envelope = self._handle(message)
            if envelope is not None:
                return envelope
            if time.monotonic() >= deadline:
                late += 1
                if late > _QUEUED_AFTER_DEADLINE:
                    return None

    def at_end(self) -> bool:
        """Whether every assigned partition has been consumed up to its current high watermark."""
        if not self._assigned:
            return False
        for key in self._assigned:
            position = self._next.get(key)
            if position is not None and position < self._seen_high.get(key, -1):
                return False  # behind a watermark seen before (they never go back): no round trip
            low, high = self._watermarks(TopicPartition(*key))
            self._seen_high[key] = high
            if high > low and (position is None or position < high):
                return False
        return True

    def assigned(self) -> list[PartitionKey]:
        """The (topic, partition) pairs this consumer owns now."""
        return sorted(self._assigned)

    # --- offsets --------------------------------------------------------------------------------

    def safe_offsets(self, holds: Mapping[tuple[str, int], int] | None = None) -> list[TopicPartition]:
        """Offsets that are safe to commit: committing them never skips a record not yet handled."""
        pending = self._reassembler.first_offsets()
        result = []
        for key in sorted(self._assigned):
            position = self._next.get(key)
            if position is None:
                continue
            candidates = [position]
            if key in pending:
                candidates.append(pending[key])
            if holds is not None and key in holds:
                candidates.append(holds[key])
            result.append(TopicPartition(key[0], key[1], min(candidates)))
        return result

    def commit(self, holds: Mapping[tuple[str, int], int] | None = None) -> None:
        """Synchronously commit ``safe_offsets(holds)``, after the dead letters are stored."""
        if self._group_id is None:
            raise BusError("a consumer without group_id has no offsets to commit")
        self._flush_dead_letters()
        offsets = self.safe_offsets(holds)
        if not offsets:
            return
        try:
            committed = self._consumer.commit(offsets=offsets, asynchronous=False) or []
        except KafkaException as exc:
            raise bus_error("committing offsets", exc) from exc
        failed = [tp for tp in committed if tp.error is not None]
        if failed:
            raise BusError(
                f"committing offsets failed for {failed[0].topic}[{failed[0].partition}]: {failed[0].error}"
            )
        log.debug("offsets committed", offsets={f"{tp.topic}[{tp.partition}]": tp.offset for tp in offsets})

    def consumer_group_metadata(self) -> Any:
        """The group metadata ``send_offsets_to_transaction`` needs."""
        if self._group_id is None:
            raise BusError("a consumer without group_id has no group metadata")
        try:
            return self._consumer.consumer_group_metadata()
        except KafkaException as exc:
            raise bus_error("reading the consumer group metadata", exc) from exc

    def rewind_to_committed(self) -> dict[PartitionKey, int]:
        """Go back to the committed offsets (or the start), dropping partial chunk sets: after an abort.

        Returns where each assigned partition now resumes (0 when nothing was committed yet)."""
        keys = sorted(self._assigned)
        if self._group_id is None:
            targets = [TopicPartition(t, p, self._start.get((t, p), OFFSET_BEGINNING)) for t, p in keys]
        else:
            try:
                committed = self._consumer.committed(
                    [TopicPartition(t, p) for t, p in keys], _METADATA_TIMEOUT
                )
            except KafkaException as exc:
                raise bus_error("reading committed offsets", exc) from exc
            targets = [
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                for tp in committed
            ]
        for target in targets:
            self._seek(target)
        self._dead_letters.discard()
        self._reassembler.drop()
        self._next.clear()
        log.info("rewound", offsets={f"{tp.topic}[{tp.partition}]": tp.offset for tp in targets})
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in targets}

    def close(self) -> None:
        """Store pending dead letters and leave the group."""
        try:
            self._dead_letters.close()
        finally:
            self._consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def take_dead_letters(self, partitions: set[PartitionKey] | None = None) -> list[DeadLetter]:
        """Dead letters kept for the caller's transaction (``transactional_dead_letters``) from the
        source ``partitions`` (default all): handed out once."""
        return self._dead_letters.take(partitions)

    def _flush_dead_letters(self) -> None:
        """Store pending dead letters: before any commit that moves past them."""
        self._dead_letters.flush()

    def progress(self) -> dict[PartitionKey, int]:
        """Next offset to read per partition, as far as this consumer knows (past transaction markers
        once the partition's end was reached): compare with ``committed_ranges`` to know a snapshot
        is complete."""
        return dict(self._next)

    # --- one record -----------------------------------------------------------------------------

    def _handle(self, message: Message) -> Envelope | None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                key = (message.topic(), message.partition())
                self._next[key] = max(self._next.get(key, 0), message.offset())
                return None
            self._on_broker_error(error)
            return None
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        timestamp_ms = message.timestamp()[1]
        key = (topic, partition)
        broker_ms = self._broker_time(message, topic)
        self._clock_ms[key] = clock = max(self._clock_ms.get(key, broker_ms), broker_ms)
        started = time.perf_counter()
        try:
            envelope = self._intake.take(message, topic, partition, offset, broker_ms, timestamp_ms)
        except RegistryPause as pause:
            self._hold_for_registry(key, pause.offset, pause.error)
            return None
        METRICS.decode_seconds.labels(self._role).observe(time.perf_counter() - started)
        METRICS.chunk_sets_pending.labels(self._role).set(self._reassembler.pending_sets)
        self._registry_failures = 0
        self._next[key] = offset + 1
        self._intake.expired(clock, key)
        return envelope

    def _broker_time(self, message: Message, topic: str) -> int:
        stamp, trusted = log_time(message)
        if not trusted and topic not in self._create_time_topics:
            self._create_time_topics.add(topic)
            log.warning("topic has producer timestamps; chunk expiry clamps them to now", topic=topic)
        return stamp

    def _hold_for_registry(self, key: PartitionKey, offset: int, error: RegistryUnavailableError) -> None:
        """The registry is unreachable (transport, timeout, 5xx): read the record again after a backoff,
        never dead-letter it and never let a commit pass it (the position goes back to it)."""
        pending = self._reassembler.first_offsets().get(key)
        target = offset if pending is None else min(offset, pending)
        self._reassembler.drop([key])
        self._next[key] = target
        self._seek(TopicPartition(key[0], key[1], target))
        self._registry_failures += 1
        delay = min(_REGISTRY_MAX_BACKOFF_S, 0.1 * 2 ** min(self._registry_failures, 6))
        log.warning(
            "schema registry unavailable; the record will be read again",
            topic=key[0],
            partition=key[1],
            offset=target,
            retry_in=round(delay, 2),
            error=str(error),
        )
        SHUTDOWN.wait(delay)

    # --- the client -----------------------------------------------------------------------------

    def _assign_all(self, from_beginning: bool) -> None:
        partitions: list[TopicPartition] = []
        for name in self._names:
            metadata = self._consumer.list_topics(name, timeout=_METADATA_TIMEOUT).topics.get(name)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise BusError(f"topic {name} is not available: {metadata.error if metadata else 'unknown'}")
            for partition in sorted(metadata.partitions):
                if self._start_offsets is not None and partition not in self._start_offsets:
                    continue
                tp = TopicPartition(name, partition)
                low, high = self._watermarks(tp)
                start = low if from_beginning else high
                if self._start_offsets is not None:
                    start = min(max(low, self._start_offsets[partition]), high)
                self._start[(name, partition)] = start
                self._next[(name, partition)] = start
                partitions.append(TopicPartition(name, partition, start))
        self._consumer.assign(partitions)
        self._assigned = {(tp.topic, tp.partition) for tp in partitions}

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        """(low, high) watermarks from the leader, retried while the leader is moving."""
        moving = retrying(
            f"reading the watermarks of {tp.topic}[{tp.partition}]",
            retry_on=lambda exc: isinstance(exc, KafkaException) and is_retriable(exc.args[0]),
            deadline=_METADATA_TIMEOUT,
        )
        try:
            for attempt in moving:
                with attempt:
                    low, high = self._consumer.get_watermark_offsets(
                        tp, timeout=_METADATA_TIMEOUT, cached=False
                    )
        except KafkaException as exc:
            raise bus_error(f"reading the watermarks of {tp.topic}[{tp.partition}]", exc) from exc
        return int(low), int(high)

    def _seek(self, target: TopicPartition) -> None:
        # A partition whose fetcher has not started yet refuses seeks for a moment.
        starting = retrying(
            f"seeking {target.topic}[{target.partition}]",
            retry_on=lambda exc: isinstance(exc, KafkaException),
            deadline=_METADATA_TIMEOUT,
        )
        try:
            for attempt in starting:
                with attempt:
                    self._consumer.seek(target)
        except KafkaException as exc:
            raise bus_error(f"seeking {target.topic}[{target.partition}]", exc) from exc

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        self.assignment_changes += 1
        log.info("partitions assigned", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned -= keys
        self.assignment_changes += 1
        self._reassembler.drop(keys)
        for key in keys:
            self._next.pop(key, None)
            self._clock_ms.pop(key, None)
            self._seen_high.pop(key, None)
        log.info("partitions revoked", partitions=[f"{t}[{p}]" for t, p in sorted(keys)])

    def _on_broker_error(self, error: KafkaError) -> None:
        if is_fatal(error):
            raise BusError(f"consumer failed: {error.name()} ({error.str()})")
        log.warning("broker error, going on", error=error.name(), detail=error.str())

    def _on_client_error(self, error: KafkaError) -> None:
        if is_fatal(error):
            self._fatal = error
            log.error("fatal client error", error=error.name(), detail=error.str())
        else:
            log.warning("client error", error=error.name(), detail=error.str())
