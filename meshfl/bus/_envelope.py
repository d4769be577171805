"""What a consumer hands out: one decoded event with the Kafka coordinates it came from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from meshfl.events import Event

CHUNK_HEADER = "meshfl-chunk"
"""Set to ``b"1"`` on every record that carries a ``Chunk``; readers that skip chunks can filter on it."""
SENDER_HEADER = "meshfl-sender"
"""Who sent a record (the producer's transactional or client id; a claim, not a proof): a chunk set counts
against that budget unless sealed, and a reader can pass over the records of other producers."""


@dataclass(frozen=True)
class Envelope:
    """One decoded event as consumed.

    ``offset`` is the offset of the record that completed the event (the last chunk when chunked);
    ``first_offset`` is where it started, so a consumer restarting there sees the whole event again.
    """

    topic: str
    partition: int
    offset: int
    first_offset: int
    key: str | None
    event: Event
    headers: dict[str, bytes] = field(default_factory=dict)
    timestamp_ms: int = 0


def headers_to_dict(raw: Sequence[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    """Kafka headers (a list that may repeat names) as a dict; the last value of a name wins."""
    return {name: value if value is not None else b"" for name, value in raw or ()}


def headers_to_list(headers: Mapping[str, str | bytes] | None) -> list[tuple[str, bytes]]:
    """Headers as librdkafka takes them: str values are UTF-8 encoded."""
    return [
        (name, value.encode() if isinstance(value, str) else bytes(value))
        for name, value in (headers or {}).items()
    ]


def decode_key(raw: bytes | str | None) -> str | None:
    """Record keys are UTF-8 strings in meshfl; undecodable bytes are kept visible, not dropped."""
    if raw is None or isinstance(raw, str):
        return raw
    return raw.decode("utf-8", errors="backslashreplace")
