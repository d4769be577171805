"""``read_all``: a snapshot read of one topic, from the beginning to where it ended when asked.

Used to rebuild state on startup and by audit replay. The end is the last stable offset per
partition at the start (what a read_committed reader can reach), so a snapshot neither waits
for open transactions nor runs on with events written after it began.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from meshfl.bus._admin import committed_ranges
from meshfl.bus._consumer import EventConsumer
from meshfl.bus._envelope import Envelope
from meshfl.errors import BusError
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name

if TYPE_CHECKING:
    from meshfl.codec import EventCodec
    from meshfl.identity import TrustRegistry

log = get_logger("meshfl.bus.snapshot")


def read_all(
    settings: MeshflSettings,
    topic: Topic,
    *,
    codec: EventCodec | None = None,
    timeout: float = 10.0,
    dead_letters: bool = False,
    starts: Mapping[int, int] | None = None,
    only_sender: str | None = None,
    chunk_signers: TrustRegistry | None = None,
) -> Iterator[Envelope]:
    """Every event of ``topic`` up to the ends observed at the start, then stop.

    ``starts`` (partition -> offset) reads only those partitions, each from its offset: the tail of a
    log whose beginning the caller already knows. ``only_sender``: pass over the records another
    producer's ``meshfl-sender`` header names, undecoded (``EventConsumer``). ``chunk_signers``: check
    chunk seals with this registry (``EventConsumer``), so that sealed sets spend their signer's budget.

    ``timeout`` bounds the time without progress; it raises ``BusError`` rather than return a
    partial snapshot. Bad records are logged, and dead-lettered only if ``dead_letters`` (a replay
    should not write to the log it audits; the consumer that first met them did).
    """
    name = topic_name(settings, topic)
    ranges = committed_ranges(settings, name, timeout=timeout)
    if starts is not None:
        ranges = {
            partition: (max(start, starts[partition]), end)
            for partition, (start, end) in ranges.items()
            if partition in starts
        }
    ends = {(name, partition): end for partition, (start, end) in ranges.items() if end > start}
    if not ends:
        return
    yielded = 0
    only = None if starts is None else {p: ranges[p][0] for _n, p in ends}
    with EventConsumer(
        settings,
        [topic],
        codec=codec,
        dead_letters=dead_letters,
        start_offsets=only,
        only_sender=only_sender,
        chunk_signers=chunk_signers,
    ) as consumer:
        last_progress = time.monotonic()
        seen = consumer.progress()
        while True:
            envelope = consumer.poll(0.2)
            if envelope is not None and envelope.offset < ends.get((envelope.topic, envelope.partition), 0):
                yielded += 1
                yield envelope
            progress = consumer.progress()
            if all(progress.get(key, 0) >= end for key, end in ends.items()):
                log.debug("snapshot read", topic=name, events=yielded)
                return
            if progress != seen:
                seen, last_progress = progress, time.monotonic()
            elif time.monotonic() - last_progress > timeout:
                raise BusError(
                    f"read_all({name}) made no progress for {timeout} s: at {progress}, ends {ends}"
                )
