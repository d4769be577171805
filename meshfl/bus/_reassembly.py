"""Putting chunked payloads back together, all or nothing.

A payload is handed out only when every chunk is there, the sizes add up and every digest of the
whole that the set names matches (BLAKE3, or SHA-256 in sets written before: ``meshfl.bus._chunking``).
A sealed set (``meshfl.bus._chunk_seal``) instead had each chunk's own digest checked under its
signer's seal before the chunk was taken, so the whole is not hashed again. Anything else rejects the
set with a ``ChunkSetError`` naming the reason, for the dead-letter path.

Memory is bounded three ways, so that a claim costs its claimant and no one else:

* a set's declared size may not exceed ``max_payload_bytes``;
* a set reserves its declared size against its *sender's* budget (``max_sender_bytes``, the sum over
  that sender's open sets): one 100-byte first chunk declaring 4 GiB fills its own sender's budget,
  never everybody's;
* the bytes actually held, across every set, may not exceed ``max_buffered_bytes``: what is
  reserved but never sent costs nothing, and what is sent is bounded.

A set of at least ``spill_bytes`` is written into an unnamed file instead of anonymous memory
(``meshfl.spill``): its payload views a read-only file mapping, so it is not resident until read, and
readers that walk it in windows drop its pages as they go. The budgets above count it all the same
(they bound the disk as they bound memory).

The sender is the budget the consumer names when a set opens: its signer's, when the set's
opener's seal verifies (``meshfl.bus._chunk_seal``), else its claim's (the ``meshfl-sender`` header, else
the record key), never shared with a signer's. Sets expire on the log's clock (the broker's
LogAppendTime of their partition), not the wall clock, so that replaying the same log rejects the
same sets however fast or slow the reader is, and no producer's clock can age other senders' sets.
"""

from __future__ import annotations

import mmap
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from meshfl.bus._chunk_seal import signer_of
from meshfl.bus._chunking import Declared, SetHasher
from meshfl.errors import ChunkError
from meshfl.events import Chunk
from meshfl.logs import get_logger
from meshfl.spill import SpillBuffer

log = get_logger("meshfl.bus.reassembly")

REASON_CORRUPT = "chunk-corrupt"
REASON_OVERSIZED = "chunk-oversized"
REASON_INCOMPLETE = "chunk-incomplete"

_FINISHED_MEMORY = 4096
"""How many finished (completed or rejected) message ids to remember, to drop their stray chunks."""
_MAX_PENDING_SETS = 4096
"""Open sets at once, whoever sent them (each costs a little bookkeeping even before its bytes)."""

PartitionKey = tuple[str, int]
SetKey = tuple[str, int, str]


class ChunkSetError(ChunkError):
    """A chunk set was rejected; carries where it lies so that it can be dead-lettered."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        topic: str,
        partition: int,
        message_id: str,
        first_offset: int,
        last_offset: int,
    ) -> None:
        super().__init__(
            f"{reason}: {detail} (message {message_id} in {topic}[{partition}] "
            f"at offsets {first_offset}..{last_offset})"
        )
        self.reason = reason
        self.detail = detail
        self.topic = topic
        self.partition = partition
        self.message_id = message_id
        self.first_offset = first_offset
        self.last_offset = last_offset


@dataclass(frozen=True)
class Reassembled:
    """A complete, verified payload and the offsets of its first and last chunk.

    ``payload`` is a read-only view of the buffer the chunks were written into as they arrived.
    """

    topic: str
    partition: int
    message_id: str
    payload: memoryview
    first_offset: int
    last_offset: int


@dataclass
class _PendingSet:
    count: int
    total_size: int
    declared: Declared
    digest: SetHasher | None  # None: a sealed set, each chunk hashed and checked on its own
    first_offset: int
    last_offset: int
    first_timestamp_ms: int
    sender: str = ""
    received_bytes: int = 0
    # Chunks arrive in order (one producer, one partition): each is written into ``buffer`` at once
    # and hashed, so a payload costs its size once, not its chunks plus their join. Chunks ahead of
    # the next expected index wait in ``parts`` (only a misbehaving producer sends them).
    parts: dict[int, bytes | memoryview] = field(default_factory=dict)
    buffer: bytearray | mmap.mmap | SpillBuffer | None = None
    written: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (start, length)
    next_index: int = 0
    size: int = 0


class Reassembler:
    """Collects chunks per (topic, partition, message id) and releases verified payloads.

    ``add`` returns the payload when a set completes, ``None`` while it is incomplete or when the
    chunk is an identical duplicate (an idempotent retry) or a stray of a finished set; it raises
    ``ChunkSetError`` when the set is rejected. ``expire`` rejects sets older than ``timeout_ms``.
    """

    def __init__(
        self,
        *,
        max_buffered_bytes: int,
        timeout_ms: int = 600_000,
        max_sender_bytes: int | None = None,
        max_payload_bytes: int | None = None,
        max_pending_sets: int = _MAX_PENDING_SETS,
        spill_bytes: int = 0,
        spill_dir: Path | None = None,
        claim_spill_files: int | None = None,
        claim_pending_sets: int | None = None,
        claim_buffered_bytes: int | None = None,
    ) -> None:
        """``spill_bytes``: sets at least this large are assembled in a file (``meshfl.spill``) in
        ``spill_dir`` (the system's temporary directory if None), out of resident memory; 0: never.
        ``claim_spill_files``: how many of the spill files (``meshfl.spill.MAX_OPEN_FILES``) sets whose
        sender is only claimed may fill at once (None: any); a reader that checks seals keeps the rest for
        sealed sets, so that forged openers cannot push a signer's large set into resident memory.
        ``claim_pending_sets``: how many of the ``max_pending_sets`` such sets may hold at once (None: any),
        so that openers anyone can write for nothing cannot take every slot from sealed sets.
        ``claim_buffered_bytes``: how many of the ``max_buffered_bytes`` such sets may hold at once (None:
        any), so that one claimed set sent but for its last chunk cannot fill the memory sealed sets need."""
        self.max_buffered_bytes = max_buffered_bytes
        self.max_payload_bytes = max_payload_bytes if max_payload_bytes is not None else max_buffered_bytes
        self.max_sender_bytes = max_sender_bytes if max_sender_bytes is not None else self.max_payload_bytes
        self.timeout_ms = timeout_ms
        self.max_pending_sets = max_pending_sets
        self.spill_bytes = spill_bytes
        self.spill_dir = spill_dir
        self.claim_spill_files = claim_spill_files
        self.claim_pending_sets = claim_pending_sets
        self.claim_buffered_bytes = claim_buffered_bytes
        self._claimed_open = 0
        self._claimed_held = 0
        limits = (max_buffered_bytes, timeout_ms, self.max_sender_bytes, self.max_payload_bytes)
        if min(limits) <= 0 or max_pending_sets <= 0:
            raise ValueError("reassembly budgets, timeout_ms and max_pending_sets must be positive")
        self._pending: dict[SetKey, _PendingSet] = {}
        self._finished: OrderedDict[SetKey, None] = OrderedDict()
        self._reserved = 0
        self._held = 0
        self._by_sender: dict[str, int] = {}

    @property
    def reserved_bytes(self) -> int:
        """Bytes reserved by the pending sets (their declared total sizes, over every sender)."""
        return self._reserved

    @property
    def held_bytes(self) -> int:
        """Bytes of chunk data actually held by the pending sets."""
        return self._held

    def sender_reserved(self, sender: str) -> int:
        """Declared bytes of ``sender``'s open sets."""
        return self._by_sender.get(sender, 0)

    def budget_of(self, topic: str, partition: int, message_id: str) -> str | None:
        """The budget an open set spends (what its opener was given as ``sender``), else None."""
        pending = self._pending.get((topic, partition, message_id))
        return None if pending is None else pending.sender

    def spilling(self, topic: str, partition: int, message_id: str) -> bool | None:
        """Whether an open set is assembled in a spill file (None: no such open set)."""
        pending = self._pending.get((topic, partition, message_id))
        return None if pending is None else isinstance(pending.buffer, SpillBuffer)

    @property
    def pending_sets(self) -> int:
        return len(self._pending)

    def add(
        self,
        chunk: Chunk,
        *,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        sender: str | Callable[[], str] = "",
    ) -> Reassembled | None:
        """``sender`` names the budget a set opening with this chunk counts against; a callable is
        asked only then (checking a signed declaration costs a verify, once a set, not once a chunk)."""
        key = (topic, partition, chunk.message_id)
        if key in self._finished:
            return None
        pending = self._pending.get(key)
        if pending is None:
            pending = self._open(key, chunk, offset, timestamp_ms, sender() if callable(sender) else sender)
        else:
            pending.last_offset = max(pending.last_offset, offset)
            self._check_consistent(key, pending, chunk)
        existing = _received(pending, chunk.index)
        if existing is not None:
            if existing == chunk.data:
                return None
            self._reject(key, REASON_CORRUPT, f"conflicting duplicate of chunk {chunk.index}")
        if pending.received_bytes + len(chunk.data) > pending.total_size:
            self._reject(key, REASON_CORRUPT, f"chunks exceed the declared {pending.total_size} bytes")
        if self._held + len(chunk.data) > self.max_buffered_bytes:
            self._reject(
                key,
                REASON_OVERSIZED,
                f"reassembly memory full: {self._held} of {self.max_buffered_bytes} bytes held",
            )
        claimed = signer_of(pending.sender) is None
        if (
            claimed
            and self.claim_buffered_bytes is not None
            and self._claimed_held + len(chunk.data) > self.claim_buffered_bytes
        ):
            self._reject(
                key,
                REASON_OVERSIZED,
                f"claimed sets' memory full: {self._claimed_held} of {self.claim_buffered_bytes} bytes held",
            )
        pending.parts[chunk.index] = chunk.data
        pending.received_bytes += len(chunk.data)
        self._held += len(chunk.data)
        self._claimed_held += len(chunk.data) if claimed else 0
        try:
            _write_ready(pending, self.spill_dir if self._spills(pending) else False)
        except OSError as exc:  # ENOMEM (strict overcommit), or a full disk under a spilled set
            self._reject(key, REASON_OVERSIZED, f"cannot map the declared {pending.total_size} bytes: {exc}")
        if len(pending.written) < pending.count:
            return None
        return self._complete(key, pending)

    def expire(self, now_ms: int, partition: PartitionKey | None = None) -> list[ChunkSetError]:
        """Reject and forget every set (of ``partition``, or all) first seen more than ``timeout_ms`` ago.

        ``now_ms`` is the log's clock: the newest record timestamp of that partition. Clocks of
        different partitions are not compared, since a reader catching up on one partition's
        history may already be at the present on another.
        """
        expired = [
            key
            for key, pending in self._pending.items()
            if (partition is None or (key[0], key[1]) == partition)
            and now_ms - pending.first_timestamp_ms > self.timeout_ms
        ]
        errors: list[ChunkSetError] = []
        for key in expired:
            pending = self._pending[key]
            errors.append(
                self._close(
                    key,
                    REASON_INCOMPLETE,
                    f"{len(pending.parts) + len(pending.written)} of {pending.count} chunks "
                    f"after {self.timeout_ms} ms",
                )
            )
        return errors

    def first_offsets(self) -> dict[PartitionKey, int]:
        """Per partition, the first offset of its oldest incomplete set: commits must not pass it."""
        result: dict[PartitionKey, int] = {}
        for (topic, partition, _), pending in self._pending.items():
            current = result.get((topic, partition))
            if current is None or pending.first_offset < current:
                result[(topic, partition)] = pending.first_offset
        return result

    def drop(self, partitions: Iterable[PartitionKey] | None = None) -> None:
        """Forget pending and finished sets (of ``partitions``, or all): after a rebalance or a rewind."""
        wanted = None if partitions is None else set(partitions)
        for key in [k for k in self._pending if wanted is None or (k[0], k[1]) in wanted]:
            self._release(self._pending.pop(key))
        for key in [k for k in self._finished if wanted is None or (k[0], k[1]) in wanted]:
            del self._finished[key]

    # --- internals ------------------------------------------------------------------------------

    def _open(self, key: SetKey, chunk: Chunk, offset: int, timestamp_ms: int, sender: str) -> _PendingSet:
        topic, partition, message_id = key

        def fail(reason: str, detail: str) -> ChunkSetError:
            self._remember(key)
            return ChunkSetError(
                reason,
                detail,
                topic=topic,
                partition=partition,
                message_id=message_id,
                first_offset=offset,
                last_offset=offset,
            )

        if chunk.count < 1 or not 0 <= chunk.index < chunk.count:
            raise fail(REASON_CORRUPT, f"index {chunk.index} outside a set of {chunk.count}")
        if chunk.total_size < 0 or chunk.count > max(1, chunk.total_size):
            raise fail(REASON_CORRUPT, f"{chunk.count} chunks cannot hold {chunk.total_size} bytes")
        declared = Declared.of(chunk)
        problem = declared.problem()
        if problem is not None:
            raise fail(REASON_CORRUPT, problem)
        if chunk.total_size > self.max_payload_bytes:
            raise fail(
                REASON_OVERSIZED, f"{chunk.total_size} bytes exceed the {self.max_payload_bytes} limit"
            )
        in_use = self._by_sender.get(sender, 0)
        if in_use + chunk.total_size > self.max_sender_bytes:
            raise fail(
                REASON_OVERSIZED,
                f"{chunk.total_size} bytes do not fit the budget of sender {sender[:80]!r}: "
                f"{in_use} of {self.max_sender_bytes} in use",
            )
        if len(self._pending) >= self.max_pending_sets:
            raise fail(REASON_OVERSIZED, f"{len(self._pending)} chunk sets already open")
        claimed = signer_of(sender) is None
        if claimed and self.claim_pending_sets is not None and self._claimed_open >= self.claim_pending_sets:
            raise fail(REASON_OVERSIZED, f"{self._claimed_open} claimed chunk sets already open")
        pending = _PendingSet(
            count=chunk.count,
            total_size=chunk.total_size,
            declared=declared,
            digest=None if signer_of(sender) is not None else declared.hasher(),
            first_offset=offset,
            last_offset=offset,
            first_timestamp_ms=timestamp_ms,
            sender=sender,
        )
        self._pending[key] = pending
        self._claimed_open += claimed
        self._reserved += chunk.total_size
        self._by_sender[sender] = in_use + chunk.total_size
        return pending

    def _check_consistent(self, key: SetKey, pending: _PendingSet, chunk: Chunk) -> None:
        if (chunk.count, chunk.total_size, Declared.of(chunk)) != (
            pending.count,
            pending.total_size,
            pending.declared,
        ):
            self._reject(key, REASON_CORRUPT, f"chunk {chunk.index} disagrees on count, size or digest")
        if not 0 <= chunk.index < pending.count:
            self._reject(key, REASON_CORRUPT, f"index {chunk.index} outside a set of {pending.count}")

    def _complete(self, key: SetKey, pending: _PendingSet) -> Reassembled:
        if pending.size != pending.total_size:
            self._reject(key, REASON_CORRUPT, f"{pending.size} bytes, {pending.total_size} declared")
        mismatch = None if pending.digest is None else pending.digest.mismatch()
        if mismatch is not None:
            self._reject(key, REASON_CORRUPT, f"{mismatch} of the reassembled payload does not match")
        buffer = pending.buffer if pending.buffer is not None else bytearray()
        if isinstance(buffer, SpillBuffer):
            buffer.seal()
            buffer = buffer.map
        payload = memoryview(buffer).toreadonly()
        self._forget(key)
        topic, partition, message_id = key
        return Reassembled(
            topic=topic,
            partition=partition,
            message_id=message_id,
            payload=payload,
            first_offset=pending.first_offset,
            last_offset=pending.last_offset,
        )

    def _reject(self, key: SetKey, reason: str, detail: str) -> None:
        raise self._close(key, reason, detail)

    def _close(self, key: SetKey, reason: str, detail: str) -> ChunkSetError:
        pending = self._pending[key]
        self._forget(key)
        topic, partition, message_id = key
        return ChunkSetError(
            reason,
            detail,
            topic=topic,
            partition=partition,
            message_id=message_id,
            first_offset=pending.first_offset,
            last_offset=pending.last_offset,
        )

    def _forget(self, key: SetKey) -> None:
        self._release(self._pending.pop(key))
        self._remember(key)

    def _spills(self, pending: _PendingSet) -> bool:
        """Whether ``pending`` is (to be) assembled in a file, else in anonymous memory."""
        if pending.buffer is not None:
            return isinstance(pending.buffer, SpillBuffer)
        if not (0 < self.spill_bytes <= pending.total_size and SpillBuffer.available()):
            return False
        if self.claim_spill_files is None or signer_of(pending.sender) is not None:
            return True
        claimed = sum(
            1
            for other in self._pending.values()
            if isinstance(other.buffer, SpillBuffer) and signer_of(other.sender) is None
        )
        return claimed < self.claim_spill_files

    def _release(self, pending: _PendingSet) -> None:
        if isinstance(pending.buffer, SpillBuffer):
            pending.buffer.close()  # a completed set's payload keeps the mapping; a rejected one's goes
        claimed = signer_of(pending.sender) is None
        self._claimed_open -= claimed
        self._claimed_held -= pending.received_bytes if claimed else 0
        self._reserved -= pending.total_size
        self._held -= pending.received_bytes
        left = self._by_sender.get(pending.sender, 0) - pending.total_size
        if left > 0:
            self._by_sender[pending.sender] = left
        else:
            self._by_sender.pop(pending.sender, None)

    def _remember(self, key: SetKey) -> None:
        self._finished[key] = None
        while len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)


def _received(pending: _PendingSet, index: int) -> bytes | memoryview | None:
    """The data already received for chunk ``index`` (written or waiting), if any."""
    waiting = pending.parts.get(index)
    if waiting is not None:
        return waiting
    place = pending.written.get(index)
    if place is None or pending.buffer is None:
        return None
    start, length = place
    buffer = pending.buffer.view if isinstance(pending.buffer, SpillBuffer) else pending.buffer
    return memoryview(buffer)[start : start + length]


def _write_ready(pending: _PendingSet, spill: Path | bool | None = False) -> None:
    """Write the chunks that follow what is written into the buffer, hashing them in order.

    The buffer is an anonymous mapping of the declared size, allocated on the first write: its
    zero pages cost memory only once written, so an unverified sender's declared size costs nothing
    beyond the bytes it sends (a ``bytearray`` would be zero-filled: committed at once). It never
    grows: ``received_bytes`` is checked against the size before a write. A large set (``spill`` is
    not False: its directory) goes to a file instead, written with ``pwrite``: not resident at all.
    A file that cannot be made or written (a missing directory, a full disk) costs the set its
    spilling, never the set: it moves to anonymous memory.
    """
    while pending.next_index in pending.parts:
        data = pending.parts.pop(pending.next_index)
        if pending.buffer is None:
            pending.buffer = _new_buffer(pending.total_size, spill)
        start = pending.size
        if isinstance(pending.buffer, SpillBuffer):
            try:
                pending.buffer.write(start, data)
            except OSError as exc:
                log.warning("spill file not writable; the set goes on in memory", error=str(exc))
                pending.buffer = _unspilled(pending.buffer, start, pending.total_size)
        if not isinstance(pending.buffer, SpillBuffer):
            pending.buffer[start : start + len(data)] = data
        if pending.digest is not None:
            pending.digest.update(data)
        pending.written[pending.next_index] = (start, len(data))
        pending.size += len(data)
        pending.next_index += 1


def _new_buffer(size: int, spill: Path | bool | None) -> bytearray | mmap.mmap | SpillBuffer:
    if spill is not False and size > 0:
        try:
            return SpillBuffer(size, spill if isinstance(spill, Path) else None)
        except OSError as exc:
            log.warning("cannot make a spill file; the set is assembled in memory", error=str(exc))
    return _lazy_buffer(size)


def _unspilled(spilled: SpillBuffer, written: int, size: int) -> bytearray | mmap.mmap:
    """The first ``written`` bytes of ``spilled`` moved into anonymous memory; the file is closed."""
    buffer = _lazy_buffer(size)
    buffer[:written] = spilled.view[:written]
    spilled.close()
    return buffer


def _lazy_buffer(size: int) -> bytearray | mmap.mmap:
    """A writable zeroed buffer of ``size`` bytes whose pages are committed only when written."""
    return mmap.mmap(-1, size) if size > 0 else bytearray()
