"""Cutting a payload above the message limit into ``Chunk`` events.

Kafka caps one record at about 1 MB by default (librdkafka's producer ``message.max.bytes`` is
1,000,000, the broker's 1,048,588 after compression), while model weights run to hundreds of MB.
The producer encodes the event once, cuts the framed bytes into ``Chunk`` events that share a
message id and carry the count, total size and SHA-256 of the whole, and sends them with the same
key, so they land on one partition in order. ``meshfl.bus._reassembly`` puts them back together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from meshfl.events import Chunk

if TYPE_CHECKING:
    from meshfl.codec import EventCodec

_AVRO_LONG_MAX = 2**63 - 1
_BYTES_LENGTH_PREFIX = 10
"""Upper bound of the Avro varint in front of a chunk's ``data`` (5 bytes suffice below 2 GiB)."""


def chunk_overhead(codec: EventCodec, message_id: str) -> int:
    """Bytes a framed ``Chunk`` adds around its data, measured with the codec in use (upper bound).

    Every ``long`` is set to its largest value so its varint is as long as it can be; the length
    prefix of ``data`` is accounted for separately.
    """
    empty = Chunk(
        message_id=message_id,
        index=_AVRO_LONG_MAX,
        count=_AVRO_LONG_MAX,
        total_size=_AVRO_LONG_MAX,
        sha256="f" * 64,
        data=b"",
    )
    return len(codec.encode(empty)) + _BYTES_LENGTH_PREFIX


def chunk_size_for(max_message_bytes: int, overhead: int) -> int:
    """Data bytes per chunk so that the framed chunk stays within ``max_message_bytes``."""
    size = max_message_bytes - overhead
    if size <= 0:
        raise ValueError(f"max_message_bytes={max_message_bytes} leaves no room for chunk data")
    return size


def iter_chunks(payload: bytes, *, chunk_size: int, message_id: str) -> Iterator[Chunk]:
    """The chunks of ``payload`` in order, built one at a time so only one slice is copied at once.

    An empty payload still gives one (empty) chunk, so that every chunk set has ``count >= 1``.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    total = len(payload)
    count = max(1, -(-total // chunk_size))
    digest = hashlib.sha256(payload).hexdigest()
    view = memoryview(payload)
    for index in range(count):
        start = index * chunk_size
        yield Chunk(
            message_id=message_id,
            index=index,
            count=count,
            total_size=total,
            sha256=digest,
            data=view[start : start + chunk_size],  # a view: the codec copies it once, into the message
        )


def split_payload(payload: bytes, *, chunk_size: int, message_id: str) -> list[Chunk]:
    """All chunks of ``payload``: ``ceil(len / chunk_size)`` of them (at least one), in index order."""
    return list(iter_chunks(payload, chunk_size=chunk_size, message_id=message_id))
