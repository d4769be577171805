"""Topic administration: create meshfl's topics with their configs, and read end offsets."""

from __future__ import annotations

import time

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from meshfl.bus._config import bus_error, is_retriable
from meshfl.errors import BusError
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name, topic_specs

log = get_logger("meshfl.bus.admin")


def admin_client(settings: MeshflSettings) -> AdminClient:
    try:
        return AdminClient(settings.client_config())
    except KafkaException as exc:
        raise bus_error("creating the admin client", exc) from exc


def ensure_topics(settings: MeshflSettings, *, timeout: float = 30.0) -> None:
    """Create every topic of ``topic_specs(settings)`` that is missing, then wait until all are usable.

    Existing topics are left as they are (their configs are not altered), so this is idempotent and
    safe to call from every process at startup.
    """
    admin = admin_client(settings)
    deadline = time.monotonic() + timeout
    specs = topic_specs(settings)
    existing = _topics_with_leaders(admin, timeout)
    missing = [spec for spec in specs if spec.name not in existing]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(spec.name, spec.partitions, spec.replication_factor, config=dict(spec.config))
                for spec in missing
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
                log.info("topic created", topic=name)
            except KafkaException as exc:
                error = exc.args[0]
                if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise bus_error(f"creating topic {name}", exc) from exc
    wanted = {spec.name for spec in specs}
    while not wanted <= _topics_with_leaders(admin, max(0.1, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            raise BusError(f"topics not ready within {timeout} s: {sorted(wanted - set(existing))}")
        time.sleep(0.1)
    # Metadata names a leader a moment before the leader serves the partition: wait for that too.
    for spec in missing:
        for partition in range(spec.partitions):
            _list_offset(admin, TopicPartition(spec.name, partition), OffsetSpec.latest(), deadline)
    warn_single_replicas(admin, sorted(wanted), timeout=max(1.0, deadline - time.monotonic()))


def warn_single_replicas(admin: AdminClient, names: list[str], *, timeout: float = 10.0) -> list[str]:
    """Log a warning for each topic with one replica on a cluster of several brokers; return them.

    One replica there means losing one broker loses that topic's log (the audit trail with it): a
    topic created before the broker's default replication applied, or with an explicit factor 1.
    """
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise bus_error("listing topics", exc) from exc
    if len(metadata.brokers) < 2:
        return []
    single = sorted(
        name
        for name in names
        if (meta := metadata.topics.get(name)) is not None
        and meta.error is None
        and any(len(p.replicas) < 2 for p in meta.partitions.values())
    )
    if single:
        log.warning(
            "topics with a single replica on a multi-broker cluster: losing one broker loses them",
            brokers=len(metadata.brokers),
            topics=single,
        )
    return single


def partition_count(settings: MeshflSettings, topic: Topic, *, timeout: float = 10.0) -> int:
    """How many partitions a topic has now (it may have been created elsewhere with another count)."""
    name = topic_name(settings, topic)
    try:
        metadata = admin_client(settings).list_topics(name, timeout=timeout).topics.get(name)
    except KafkaException as exc:
        raise bus_error(f"reading the metadata of {name}", exc) from exc
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise BusError(f"topic {name} is not available: {metadata.error if metadata else 'unknown'}")
    return len(metadata.partitions)


def _topics_with_leaders(admin: AdminClient, timeout: float) -> set[str]:
    """Names of the topics whose every partition has a leader."""
    try:
        topics = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise bus_error("listing topics", exc) from exc
    return {
        name
        for name, meta in topics.items()
        if meta.error is None and meta.partitions and all(p.leader >= 0 for p in meta.partitions.values())
    }


def committed_ranges(
    settings: MeshflSettings, name: str, *, timeout: float = 10.0
) -> dict[int, tuple[int, int]]:
    """Per partition of topic ``name``: (earliest offset, last stable offset) for read_committed readers.

    The last stable offset is the end a read_committed consumer can reach now: records of
    transactions still open lie above it.
    """
    admin = admin_client(settings)
    try:
        metadata = admin.list_topics(name, timeout=timeout).topics.get(name)
    except KafkaException as exc:
        raise bus_error(f"reading the metadata of {name}", exc) from exc
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise BusError(f"topic {name} is not available: {metadata.error if metadata else 'unknown'}")
    deadline = time.monotonic() + timeout
    ranges: dict[int, tuple[int, int]] = {}
    for partition in metadata.partitions:
        tp = TopicPartition(name, partition)
        earliest = _list_offset(admin, tp, OffsetSpec.earliest(), deadline)
        latest = _list_offset(admin, tp, OffsetSpec.latest(), deadline)
        ranges[partition] = (earliest, latest)
    return ranges


def offsets_at(
    settings: MeshflSettings, name: str, timestamp_ms: int, *, timeout: float = 10.0
) -> dict[int, int]:
    """Per partition of topic ``name``: the first offset whose log time is ``timestamp_ms`` or later.

    A partition with no such record maps to its last stable offset (nothing there to read). meshfl's
    topics use LogAppendTime, so this is the broker's clock: a reader looking for what a producer wrote
    after some record reads from that record's time, not from the beginning of a topic kept forever.
    """
    admin = admin_client(settings)
    ranges = committed_ranges(settings, name, timeout=timeout)
    deadline = time.monotonic() + timeout
    starts: dict[int, int] = {}
    for partition, (_earliest, end) in ranges.items():
        found = _list_offset(
            admin, TopicPartition(name, partition), OffsetSpec.for_timestamp(timestamp_ms), deadline
        )
        starts[partition] = end if found < 0 else min(found, end)
    return starts


def _list_offset(admin: AdminClient, tp: TopicPartition, spec: OffsetSpec, deadline: float) -> int:
    """One offset lookup, retried while the error is retriable (a leader still being elected)."""
    while True:
        remaining = max(0.5, deadline - time.monotonic())
        try:
            future = admin.list_offsets(
                {tp: spec}, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=remaining
            )[tp]
            return int(future.result().offset)
        except KafkaException as exc:
            error = exc.args[0]
            if not is_retriable(error) or time.monotonic() > deadline:
                raise bus_error(f"listing offsets of {tp.topic}[{tp.partition}]", exc) from exc
            time.sleep(0.1)
