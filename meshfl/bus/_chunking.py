"""Cutting a payload above the message limit into ``Chunk`` events, and the digest of a chunk set.

Kafka caps one record at about 1 MB by default (librdkafka's producer ``message.max.bytes`` is
1,000,000, the broker's 1,048,588 after compression), while model weights run to hundreds of MB.
The producer encodes the event once, cuts the framed bytes into ``Chunk`` events that share a
message id and carry the count, total size and digest of the whole, and sends them with the same
key, so they land on one partition in order. ``meshfl.bus._reassembly`` puts them back together.

The digest (``schemas/Chunk.avsc``): writers fill ``blake3`` (BLAKE3-256, unkeyed, 64 lowercase hex
digits: about four times SHA-256's speed here; the bus only has to catch a torn or mixed-up set, the
signature inside proves who sent it). Sets written before that field carry ``sha256`` instead and keep
reassembling. A reader checks every digest a set names (``Declared``, ``SetHasher``): a set naming
neither, or a malformed one, is refused before any of its bytes are held; one whose chunks name
different digests is corrupt.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import blake3

from meshfl.events import Chunk

if TYPE_CHECKING:
    from meshfl.codec import EventCodec

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HASHERS = {"sha256": hashlib.sha256, "blake3": blake3.blake3}
_AVRO_LONG_MAX = 2**63 - 1
_BYTES_LENGTH_PREFIX = 10
"""Upper bound of the Avro varint in front of a chunk's ``data`` (5 bytes suffice below 2 GiB)."""


def chunk_overhead(codec: EventCodec, message_id: str) -> int:
    """Bytes a framed ``Chunk`` adds around its data, measured with the codec in use (upper bound).

    Every ``long`` is set to its largest value so its varint is as long as it can be, and the digest
    is what ``iter_chunks`` writes (a ``blake3``, no ``sha256``); the length prefix of ``data`` is
    accounted for separately.
    """
    empty = Chunk(
        message_id=message_id,
        index=_AVRO_LONG_MAX,
        count=_AVRO_LONG_MAX,
        total_size=_AVRO_LONG_MAX,
        blake3="f" * 64,
        data=b"",
    )
    return len(codec.encode(empty)) + _BYTES_LENGTH_PREFIX


def chunk_size_for(max_message_bytes: int, overhead: int) -> int:
    """Data bytes per chunk so that the framed chunk stays within ``max_message_bytes``."""
    size = max_message_bytes - overhead
    if size <= 0:
        raise ValueError(f"max_message_bytes={max_message_bytes} leaves no room for chunk data")
    return size


def iter_chunks(
    payload: bytes | Sequence[bytes | bytearray | memoryview], *, chunk_size: int, message_id: str
) -> Iterator[Chunk]:
    """The chunks of ``payload`` in order, built one at a time so only one slice is copied at once.

    ``payload`` is the message, or the pieces whose concatenation it is (``EventCodec.encode_parts``):
    then the whole message never exists in memory; each chunk's data is a view of one piece, or the
    join of the slices it spans (one chunk-sized copy). An empty payload still gives one (empty)
    chunk, so that every chunk set has ``count >= 1``.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    whole = isinstance(payload, bytes | bytearray | memoryview)
    pieces = [memoryview(p).cast("B") for p in ([payload] if whole else payload)]
    total = sum(piece.nbytes for piece in pieces)
    count = max(1, -(-total // chunk_size))
    digest = blake3.blake3()
    for piece in pieces:
        digest.update(piece)
    whole_blake3 = digest.hexdigest()
    slices = _slices(pieces, chunk_size)
    for index in range(count):
        data = next(slices, memoryview(b""))
        yield Chunk(
            message_id=message_id,
            index=index,
            count=count,
            total_size=total,
            blake3=whole_blake3,
            data=data,  # a view (or one chunk's join): the codec copies it once, into the message
        )


def _slices(pieces: list[memoryview], size: int) -> Iterator[bytes | memoryview]:
    """Consecutive ``size``-byte runs of the concatenation of ``pieces`` (the last one shorter)."""
    held: list[memoryview] = []
    held_bytes = 0
    for piece in pieces:
        start = 0
        while start < piece.nbytes:
            take = min(size - held_bytes, piece.nbytes - start)
            held.append(piece[start : start + take])
            held_bytes += take
            start += take
            if held_bytes == size:
                yield held[0] if len(held) == 1 else b"".join(held)
                held, held_bytes = [], 0
    if held:
        yield held[0] if len(held) == 1 else b"".join(held)


def split_payload(payload: bytes, *, chunk_size: int, message_id: str) -> list[Chunk]:
    """All chunks of ``payload``: ``ceil(len / chunk_size)`` of them (at least one), in index order."""
    return list(iter_chunks(payload, chunk_size=chunk_size, message_id=message_id))


@dataclass(frozen=True, slots=True)
class Declared:
    """The digests a chunk names for its set's payload (None when absent)."""

    sha256: str | None
    blake3: str | None

    @classmethod
    def of(cls, chunk: Chunk) -> Declared:
        return cls(sha256=chunk.sha256, blake3=chunk.blake3)

    def named(self) -> list[tuple[str, str]]:
        return [
            (name, value)
            for name, value in (("blake3", self.blake3), ("sha256", self.sha256))
            if value is not None
        ]

    def problem(self) -> str | None:
        """Why a set naming these digests cannot be verified, or None."""
        named = self.named()
        if not named:
            return "the chunk names no digest (neither blake3 nor sha256)"
        for name, value in named:
            if not _HEX64.fullmatch(value):
                return f"{name} is not 64 lowercase hex digits"
        return None

    def hasher(self) -> SetHasher:
        return SetHasher(self)


class SetHasher:
    """Hashes a set's payload, in order, with every algorithm its chunks name."""

    __slots__ = ("_running",)

    def __init__(self, declared: Declared) -> None:
        self._running = [(name, expected, _HASHERS[name]()) for name, expected in declared.named()]

    def update(self, data: bytes | memoryview) -> None:
        for _, _, digest in self._running:
            digest.update(data)

    def mismatch(self) -> str | None:
        """The first algorithm whose digest of the hashed bytes differs from the declared one, or None."""
        for name, expected, digest in self._running:
            if digest.hexdigest() != expected:
                return name
        return None
