"""The dead-letter path: undecodable records go to their own topic, with the reason in headers.

A consumer never stops on bad data: it copies the raw record (value, key, original headers) to
the dead-letter topic, adds headers that say why and where it came from, logs a warning and goes
on. For a rejected chunk set the value is the record that settled its fate (empty when the set
expired); ``-first-offset``/``-last-offset`` and ``-message-id`` point at the whole set in the
source topic, which keeps every chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from meshfl.bus._config import bus_error, producer_config
from meshfl.errors import BusError
from meshfl.logs import get_logger
from meshfl.retry import retrying
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name

REASON_HEADER = "meshfl-dlq-reason"
SOURCE_TOPIC_HEADER = "meshfl-dlq-source-topic"
SOURCE_PARTITION_HEADER = "meshfl-dlq-source-partition"
SOURCE_OFFSET_HEADER = "meshfl-dlq-source-offset"
ERROR_HEADER = "meshfl-dlq-error"
FIRST_OFFSET_HEADER = "meshfl-dlq-first-offset"
LAST_OFFSET_HEADER = "meshfl-dlq-last-offset"
MESSAGE_ID_HEADER = "meshfl-dlq-message-id"
GROUP_HEADER = "meshfl-dlq-group"

REASON_EMPTY = "empty-value"
REASON_UNKNOWN_SCHEMA = "unknown-schema"
REASON_UNDECODABLE = "undecodable"
REASON_UNEXPECTED = "unexpected-event"

_MAX_ERROR_TEXT = 1000
_QUEUE_FULL_TIMEOUT = 300.0

log = get_logger("meshfl.bus.dead_letter")


@dataclass(frozen=True)
class DeadLetter:
    """One record to dead-letter and why."""

    reason: str
    error: str
    topic: str
    partition: int
    offset: int
    value: bytes = b""
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    extra: Mapping[str, str] | None = None
    group: str | None = None

    def wire_headers(self) -> list[tuple[str, bytes]]:
        """The record's own headers, then why and where it came from."""
        headers = [
            *self.headers,
            (REASON_HEADER, self.reason.encode()),
            (SOURCE_TOPIC_HEADER, self.topic.encode()),
            (SOURCE_PARTITION_HEADER, str(self.partition).encode()),
            (SOURCE_OFFSET_HEADER, str(self.offset).encode()),
            (ERROR_HEADER, self.error[:_MAX_ERROR_TEXT].encode()),
            *((name, value.encode()) for name, value in (self.extra or {}).items()),
        ]
        if self.group is not None:
            headers.append((GROUP_HEADER, self.group.encode()))
        return headers

    @classmethod
    def of(
        cls, message: Message, reason: str, error: str, extra: Mapping[str, str] | None = None
    ) -> DeadLetter:
        raw_key = message.key()
        return cls(
            reason=reason,
            error=error,
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            value=message.value() or b"",
            key=raw_key.encode() if isinstance(raw_key, str) else raw_key,
            headers=tuple((name, value or b"") for name, value in message.headers() or ()),
            extra=extra,
        )


class DeadLetterWriter:
    """Writes dead letters through its own idempotent producer, created on first use.

    ``transactional=True`` keeps them instead, for the caller's transactional producer to write with
    the offsets that pass them (``take``): an aborted batch then leaves no dead letter behind, and
    the redo writes each exactly once.
    """

    def __init__(
        self,
        settings: MeshflSettings,
        *,
        enabled: bool = True,
        group_id: str | None = None,
        transactional: bool = False,
    ) -> None:
        self._settings = settings
        self._enabled = enabled
        self._group_id = group_id
        self._transactional = transactional
        self._kept: list[DeadLetter] = []
        self._topic = topic_name(settings, Topic.DEAD_LETTERS)
        self._producer: Producer | None = None
        self._failures: list[str] = []
        self.sent = 0

    def take(self, partitions: set[tuple[str, int]] | None = None) -> list[DeadLetter]:
        """The letters kept for the caller's transaction, of the source ``partitions`` (default all)."""
        if partitions is None:
            kept, self._kept = self._kept, []
            return kept
        taken = [letter for letter in self._kept if (letter.topic, letter.partition) in partitions]
        self._kept = [letter for letter in self._kept if (letter.topic, letter.partition) not in partitions]
        return taken

    def discard(self) -> None:
        """Forget kept letters: their records will be read (and dead-lettered) again after a rewind."""
        self._kept.clear()

    def send(self, letter: DeadLetter) -> None:
        log.warning(
            "dead letter",
            reason=letter.reason,
            topic=letter.topic,
            partition=letter.partition,
            offset=letter.offset,
            error=letter.error,
            **dict(letter.extra or {}),
        )
        if not self._enabled:
            return
        letter = replace(letter, group=self._group_id)
        self.sent += 1
        if self._transactional:
            self._kept.append(letter)
            return
        producer = self._ensure_producer()
        queue_full = retrying(
            f"dead-lettering to {self._topic} (queue full)",
            retry_on=lambda exc: isinstance(exc, BufferError),
            deadline=_QUEUE_FULL_TIMEOUT,
            sleep=producer.poll,
        )
        try:
            for attempt in queue_full:
                with attempt:
                    producer.produce(
                        self._topic,
                        value=letter.value,
                        key=letter.key,
                        headers=letter.wire_headers(),
                        on_delivery=self._delivered,
                    )
        except BufferError:
            raise BusError(f"dead-letter queue still full after {_QUEUE_FULL_TIMEOUT} s") from None
        except KafkaException as exc:
            raise bus_error(f"dead-lettering to {self._topic}", exc) from exc
        producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every dead letter is stored; a commit must not pass a record that is not."""
        if self._producer is None:
            return
        remaining = self._producer.flush(timeout)
        if remaining:
            raise BusError(f"{remaining} dead letters not delivered to {self._topic} within {timeout} s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise BusError(f"{len(failures)} dead letters failed: {failures[0]}")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._producer is not None:
                self._producer.close()
                self._producer = None

    def poll(self) -> None:
        if self._producer is not None:
            self._producer.poll(0)

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(producer_config(self._settings, client_id="meshfl-dead-letters"))
        return self._producer

    def _delivered(self, err: KafkaError | None, message: Message) -> None:
        if err is not None:
            log.error("dead letter not delivered", topic=self._topic, error=err.str())
            self._failures.append(err.str())
