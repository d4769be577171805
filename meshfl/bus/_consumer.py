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
from pydantic import ValidationError

from meshfl.bus._chunk_seal import CLAIM_SPILL_FILES, REASON_FOREIGN, SEAL_HEADER, SealCheck, signer_of
from meshfl.bus._config import bus_error, consumer_config, is_fatal, is_retriable, resolve_codec
from meshfl.bus._dead_letter import (
    FIRST_OFFSET_HEADER,
    LAST_OFFSET_HEADER,
    MESSAGE_ID_HEADER,
    REASON_EMPTY,
    REASON_UNDECODABLE,
    REASON_UNEXPECTED,
    REASON_UNKNOWN_SCHEMA,
    DeadLetter,
    DeadLetterWriter,
)
from meshfl.bus._envelope import CHUNK_HEADER, SENDER_HEADER, Envelope, decode_key, headers_to_dict
from meshfl.bus._provenance import chunk_sender, log_time
from meshfl.bus._reassembly import ChunkSetError, Reassembled, Reassembler
from meshfl.errors import BusError, CodecError, RegistryUnavailableError, UnknownSchemaError
from meshfl.events import Chunk, Event
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


class _RegistryPause(Exception):
    """Internal: the record at ``offset`` (a chunk set's first) waits for the Schema Registry."""

    def __init__(self, offset: int, error: RegistryUnavailableError) -> None:
        super().__init__(str(error))
        self.offset, self.error = offset, error


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
        self._only_sender = None if only_sender is None else only_sender.encode()
        self._seals = (
            None
            if chunk_signers is None
            else SealCheck(chunk_signers, window_seconds=settings.signature_window_seconds)
        )
        self._settings = settings
        self._start_offsets = start_offsets
        self._accept = accept  # other event types are dead-lettered, never handed out
        self._codec = resolve_codec(settings, codec)
        self._names = [topic_name(settings, topic) for topic in topics]
        self._compacted = {topic_name(settings, t) for t in topics if is_compacted(t)}
        self._on_tombstone = on_tombstone
        self._group_id = group_id
        self._role = client_id or group_id or "reader"
        self._dead_letters = DeadLetterWriter(
            settings, enabled=dead_letters, group_id=group_id, transactional=transactional_dead_letters
        )
        self._registry_failures = 0
        self.assignment_changes = 0
        """Incremented by every assignment or revocation: a caller's cue to rebuild what it owns."""
        self._reassembler = Reassembler(
            max_buffered_bytes=settings.max_payload_bytes,
            max_sender_bytes=settings.max_payload_bytes,
            timeout_ms=int(chunk_timeout * 1000),
            spill_bytes=settings.spill_bytes,
            spill_dir=settings.spill_dir,
            claim_spill_files=None if chunk_signers is None else CLAIM_SPILL_FILES,
        )
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
            envelope = (
                None
                if self._passed_over(message)
                else self._decode(message, topic, partition, offset, broker_ms, timestamp_ms)
            )
        except _RegistryPause as pause:
            self._hold_for_registry(key, pause.offset, pause.error)
            return None
        METRICS.decode_seconds.labels(self._role).observe(time.perf_counter() - started)
        METRICS.chunk_sets_pending.labels(self._role).set(self._reassembler.pending_sets)
        self._registry_failures = 0
        self._next[key] = offset + 1
        for rejected in self._reassembler.expire(clock, key):
            self._dead_letter_set(rejected, None)
        return envelope

    def _broker_time(self, message: Message, topic: str) -> int:
        stamp, trusted = log_time(message)
        if not trusted and topic not in self._create_time_topics:
            self._create_time_topics.add(topic)
            log.warning("topic has producer timestamps; chunk expiry clamps them to now", topic=topic)
        return stamp

    def _decode(
        self,
        message: Message,
        topic: str,
        partition: int,
        offset: int,
        broker_ms: int,
        timestamp_ms: int,
    ) -> Envelope | None:
        value = message.value()
        if value is None and topic in self._compacted:
            # A tombstone: the key's record was deleted on purpose (compaction drops it), not bad data.
            if self._on_tombstone is not None:
                self._on_tombstone(topic, decode_key(message.key()))
            return None
        if value is None:
            self._dead_letters.send(DeadLetter.of(message, REASON_EMPTY, "record without a value"))
            return None
        event = self._decode_bytes(
            value, lambda reason, error: DeadLetter.of(message, reason, error), offset=offset
        )
        if event is None:
            return None
        first_offset = offset
        if isinstance(event, Chunk):
            if self._foreign(message, event, topic, partition):
                return None
            try:
                done = self._reassembler.add(
                    event,
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    timestamp_ms=broker_ms,
                    sender=lambda: self._chunk_budget(message, event, topic, partition, broker_ms),
                )
            except ChunkSetError as exc:
                self._dead_letter_set(exc, message)
                return None
            if done is None:
                return None
            log.debug(
                "chunk set complete",
                topic=topic,
                partition=partition,
                offset=offset,
                message_id=done.message_id,
            )
            event = self._decode_reassembled(done, message)
            if event is None:
                return None
            first_offset = done.first_offset
        if self._accept is not None and not isinstance(event, self._accept):
            letter = f"a {type(event).__name__} does not belong on {topic}"
            self._dead_letters.send(DeadLetter.of(message, REASON_UNEXPECTED, letter))
            return None
        headers = headers_to_dict(message.headers())
        for internal in (CHUNK_HEADER, SENDER_HEADER, SEAL_HEADER):  # the bus's own, not the caller's
            headers.pop(internal, None)
        return Envelope(
            topic=topic,
            partition=partition,
            offset=offset,
            first_offset=first_offset,
            key=decode_key(message.key()),
            event=event,
            headers=headers,
            timestamp_ms=timestamp_ms,
        )

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

    def _passed_over(self, message: Message) -> bool:
        if self._only_sender is None:
            return False
        named = next((value for name, value in message.headers() or () if name == SENDER_HEADER), None)
        return named is not None and named != self._only_sender

    def _chunk_budget(self, message: Message, chunk: Chunk, topic: str, partition: int, log_ms: int) -> str:
        """The budget a set opening with ``chunk`` spends: its signer's when sealed, else its claim's."""
        claim = chunk_sender(message)
        if self._seals is None:
            return claim
        return self._seals.budget(
            chunk, _seal(message), claim=claim, topic=topic, partition=partition, log_ms=log_ms
        )

    def _foreign(self, message: Message, chunk: Chunk, topic: str, partition: int) -> bool:
        """Whether ``chunk`` names a set its signer opened without that signer's seal: a copy with other
        data, dead-lettered so that it cannot spoil the set."""
        if self._seals is None:
            return False
        signer = signer_of(self._reassembler.budget_of(topic, partition, chunk.message_id))
        if signer is None or self._seals.sealed_by(chunk, _seal(message), signer):
            return False
        error = f"chunk {chunk.index} of message {chunk.message_id[:80]} is not sealed by {signer[:80]!r}"
        self._dead_letters.send(DeadLetter.of(message, REASON_FOREIGN, error))
        return True

    def _decode_bytes(self, data: bytes, letter: Any, *, offset: int = -1) -> Event | None:
        try:
            return self._codec.decode(data)
        except RegistryUnavailableError as exc:
            raise _RegistryPause(offset, exc) from exc
        except UnknownSchemaError as exc:
            self._dead_letters.send(letter(REASON_UNKNOWN_SCHEMA, str(exc)))
        except (CodecError, ValidationError) as exc:
            self._dead_letters.send(letter(REASON_UNDECODABLE, str(exc)))
        return None

    def _decode_reassembled(self, done: Reassembled, message: Message) -> Event | None:
        extra = {
            FIRST_OFFSET_HEADER: str(done.first_offset),
            LAST_OFFSET_HEADER: str(done.last_offset),
            MESSAGE_ID_HEADER: done.message_id,
        }
        # The payload is above the message limit, so the letter carries the coordinates, not the bytes.
        event = self._decode_bytes(
            done.payload,
            lambda reason, error: DeadLetter.of(message, reason, f"reassembled payload: {error}", extra),
            offset=done.first_offset,
        )
        if isinstance(event, Chunk):
            self._dead_letters.send(
                DeadLetter.of(message, REASON_UNDECODABLE, "a chunk inside a chunk", extra)
            )
            return None
        return event

    def _dead_letter_set(self, rejected: ChunkSetError, message: Message | None) -> None:
        extra = {
            FIRST_OFFSET_HEADER: str(rejected.first_offset),
            LAST_OFFSET_HEADER: str(rejected.last_offset),
            MESSAGE_ID_HEADER: rejected.message_id,
        }
        if message is not None:
            self._dead_letters.send(DeadLetter.of(message, rejected.reason, str(rejected), extra))
            return
        self._dead_letters.send(
            DeadLetter(
                reason=rejected.reason,
                error=str(rejected),
                topic=rejected.topic,
                partition=rejected.partition,
                offset=rejected.first_offset,
                extra=extra,
            )
        )

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


def _seal(message: Message) -> bytes | None:
    return next((value for name, value in message.headers() or () if name == SEAL_HEADER), None)
