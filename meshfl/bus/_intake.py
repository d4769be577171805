"""One consumed record to an event, or to a dead letter with the reason: never an exception.

What a record can be, in the order it is judged: another producer's (passed over undecoded by a
reader of its own records), a tombstone of a compacted topic, empty, undecodable or of an unknown
schema, a chunk (to the reassembly, under the budget its seal proves or its header claims; one not
sealed by the signer of the set it names is foreign), an event of a type the topic does not carry,
or the event. Only an unreachable Schema Registry is not the record's fault: ``RegistryPause`` asks
the consumer to read it again later. The consumer (``_consumer``) owns the client and the offsets;
this owns what the bytes mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Message
from pydantic import ValidationError

from meshfl.bus._chunk_seal import (
    CLAIM_PENDING_SETS,
    CLAIM_SPILL_FILES,
    CLAIMED,
    REASON_FOREIGN,
    SEAL_HEADER,
    SealCheck,
    signer_of,
)
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
from meshfl.bus._provenance import chunk_sender
from meshfl.bus._reassembly import ChunkSetError, Reassembled, Reassembler
from meshfl.errors import CodecError, RegistryUnavailableError, UnknownSchemaError
from meshfl.events import Chunk, Event
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings

if TYPE_CHECKING:
    from meshfl.codec import EventCodec
    from meshfl.identity import TrustRegistry

log = get_logger("meshfl.bus.consumer")

_INTERNAL_HEADERS = (CHUNK_HEADER, SENDER_HEADER, SEAL_HEADER)
"""The bus's own headers: kept out of ``Envelope.headers``, which are the caller's."""


class RegistryPause(Exception):
    """The record at ``offset`` (a chunk set's first) waits for the Schema Registry."""

    def __init__(self, offset: int, error: RegistryUnavailableError) -> None:
        super().__init__(str(error))
        self.offset, self.error = offset, error


class RecordIntake:
    """Turns records into envelopes for one consumer; its bad records go to ``dead_letters``."""

    def __init__(
        self,
        settings: MeshflSettings,
        codec: EventCodec,
        dead_letters: DeadLetterWriter,
        *,
        chunk_timeout: float,
        compacted: set[str],
        accept: tuple[type[Event], ...] | None = None,
        on_tombstone: Callable[[str, str | None], None] | None = None,
        chunk_signers: TrustRegistry | None = None,
        only_sender: str | None = None,
    ) -> None:
        self._codec = codec
        self._dead_letters = dead_letters
        self._compacted = compacted
        self._accept = accept  # other event types are dead-lettered, never handed out
        self._on_tombstone = on_tombstone
        self._only_sender = None if only_sender is None else only_sender.encode()
        self._seals = (
            None
            if chunk_signers is None
            else SealCheck(chunk_signers, window_seconds=settings.signature_window_seconds)
        )
        self.reassembler = Reassembler(
            max_buffered_bytes=settings.max_payload_bytes,
            max_sender_bytes=settings.max_payload_bytes,
            timeout_ms=int(chunk_timeout * 1000),
            spill_bytes=settings.spill_bytes,
            spill_dir=settings.spill_dir,
            # every reader: the spill files are the process's, and one reader without seals (governance's
            # catalog or keys consumer) could otherwise take them all from the one that checks them
            claim_spill_files=CLAIM_SPILL_FILES,
            # where seals are checked, openers anyone writes for nothing take at most half the open sets
            claim_pending_sets=None if chunk_signers is None else CLAIM_PENDING_SETS,
            # and half the memory: one claimed set sent but for its last chunk filled it all before
            claim_buffered_bytes=None if chunk_signers is None else settings.max_payload_bytes // 2,
        )

    def take(
        self, message: Message, topic: str, partition: int, offset: int, broker_ms: int, timestamp_ms: int
    ) -> Envelope | None:
        """The envelope ``message`` completes, or None (passed over, a chunk of an open set, or a dead
        letter); raises ``RegistryPause`` when the registry is unreachable."""
        if self._passed_over(message):
            return None
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
            done = self._chunk(message, event, topic, partition, offset, broker_ms)
            if done is None:
                return None
            event = self._decode_reassembled(done, message)
            if event is None:
                return None
            first_offset = done.first_offset
        if self._accept is not None and not isinstance(event, self._accept):
            letter = f"a {type(event).__name__} does not belong on {topic}"
            self._dead_letters.send(DeadLetter.of(message, REASON_UNEXPECTED, letter))
            return None
        headers = headers_to_dict(message.headers())
        for internal in _INTERNAL_HEADERS:
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

    def expired(self, clock_ms: int, key: tuple[str, int]) -> None:
        """Dead-letter the sets of partition ``key`` older than the chunk timeout on its log clock."""
        for rejected in self.reassembler.expire(clock_ms, key):
            self._dead_letter_set(rejected, None)

    # --- chunks -----------------------------------------------------------------------------------

    def _chunk(
        self, message: Message, chunk: Chunk, topic: str, partition: int, offset: int, broker_ms: int
    ) -> Reassembled | None:
        if self._foreign(message, chunk, topic, partition):
            return None
        try:
            done = self.reassembler.add(
                chunk,
                topic=topic,
                partition=partition,
                offset=offset,
                timestamp_ms=broker_ms,
                sender=lambda: self._chunk_budget(message, chunk, topic, partition, broker_ms),
            )
        except ChunkSetError as exc:
            self._dead_letter_set(exc, message)
            return None
        if done is not None:
            log.debug(
                "chunk set complete",
                topic=topic,
                partition=partition,
                offset=offset,
                message_id=done.message_id,
            )
        return done

    def _passed_over(self, message: Message) -> bool:
        if self._only_sender is None:
            return False
        named = _header(message, SENDER_HEADER)
        return named is not None and named != self._only_sender

    def _chunk_budget(self, message: Message, chunk: Chunk, topic: str, partition: int, log_ms: int) -> str:
        """The budget a set opening with ``chunk`` spends: its signer's when sealed, else its claim's.
        A claim is always named as one: a ``meshfl-sender`` header ``signed:x`` read where seals are not
        checked would otherwise pass for a sealed set, and skip the whole-set digest (``_reassembly``)."""
        claim = chunk_sender(message)
        if self._seals is None:
            return CLAIMED + claim
        return self._seals.budget(
            chunk, _header(message, SEAL_HEADER), claim=claim, topic=topic, partition=partition, log_ms=log_ms
        )

    def _foreign(self, message: Message, chunk: Chunk, topic: str, partition: int) -> bool:
        """Whether ``chunk`` names a set its signer opened without that signer's seal: a copy with other
        data, dead-lettered so that it cannot spoil the set."""
        if self._seals is None:
            return False
        signer = signer_of(self.reassembler.budget_of(topic, partition, chunk.message_id))
        header = _header(message, SEAL_HEADER)
        if signer is None or self._seals.sealed_by(chunk, header, signer, topic=topic, partition=partition):
            return False
        error = f"chunk {chunk.index} of message {chunk.message_id[:80]} is not sealed by {signer[:80]!r}"
        self._dead_letters.send(DeadLetter.of(message, REASON_FOREIGN, error))
        return True

    # --- decoding ---------------------------------------------------------------------------------

    def _decode_bytes(self, data: bytes | memoryview, letter: Any, *, offset: int = -1) -> Event | None:
        try:
            return self._codec.decode(data)
        except RegistryUnavailableError as exc:
            raise RegistryPause(offset, exc) from exc
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


def _header(message: Message, wanted: str) -> bytes | None:
    """The first value of header ``wanted`` (Kafka headers are a list that may repeat names)."""
    return next((value for name, value in message.headers() or () if name == wanted), None)
