"""librdkafka configs of the bus clients, and the translation of Kafka errors into ``BusError``.

Layering, lowest priority first: meshfl's defaults, then ``settings.client_config()`` (bootstrap
plus the ``settings.kafka`` pass-through, so TLS/SASL and tuning such as ``transaction.timeout.ms``
reach every client), then the settings the bus relies on for its guarantees, which cannot be
overridden (idempotence and ``acks=all``; ``read_committed``; manual offset commits).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException

from meshfl.errors import BusError, FencedError
from meshfl.settings import MeshflSettings
from meshfl.topics import READER_GROUP_PREFIX

if TYPE_CHECKING:
    from meshfl.codec import EventCodec

PRODUCER_MAX_MESSAGE_BYTES = 1_000_000
"""librdkafka's default producer ``message.max.bytes``; raised only if chunks need more."""
QUEUE_KBYTES = 64 * 1024
"""Producer queue bound (``queue.buffering.max.kbytes``): a full queue makes ``produce`` wait for room."""
_RECORD_MARGIN = 64 * 1024
"""Room above a framed chunk for the key, headers and record framing."""

FATAL_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)
"""Errors no retry can cure: misconfiguration and missing permissions. Anything else (``_TRANSPORT``,
``_ALL_BROKERS_DOWN``, leader changes...) librdkafka recovers from by itself."""


def resolve_codec(settings: MeshflSettings, codec: EventCodec | None) -> EventCodec:
    """The codec given, or the one ``meshfl.codec`` builds from the settings."""
    if codec is not None:
        return codec
    from meshfl.codec import make_codec

    return make_codec(settings)


def producer_config(
    settings: MeshflSettings, *, transactional_id: str | None = None, client_id: str | None = None
) -> dict[str, Any]:
    max_bytes = max(PRODUCER_MAX_MESSAGE_BYTES, settings.max_message_bytes + _RECORD_MARGIN)
    config: dict[str, Any] = {
        # None: float weights do not compress, and bench/round.py's floor measures what trying costs on
        # this 2-core machine: a 10 x 4 MB round took 0.26 s uncompressed, 0.60 s with lz4, 0.89 s with
        # zstd. The small events gain nothing worth a codec either. MESHFL_KAFKA can set one.
        "compression.type": "none",
        "linger.ms": 5,
        "message.max.bytes": max_bytes,
        # librdkafka queues up to 1 GiB by default: a chunked 1 GB version or update would sit there whole
        # beside the tensors it was cut from. 64 MiB in flight is far above what the link needs.
        # Room for two of the largest records at least: one above the bound never fits, however empty.
        "queue.buffering.max.kbytes": max(QUEUE_KBYTES, -(-2 * max_bytes // 1024)),
    }
    if transactional_id is not None:
        config["transaction.timeout.ms"] = 60_000
    config.update(settings.client_config())
    config.update({"enable.idempotence": True, "acks": "all"})
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
    if client_id is not None:
        config["client.id"] = client_id
    return with_statistics(settings, config, client_id or transactional_id or "producer")


def consumer_config(
    settings: MeshflSettings,
    *,
    group_id: str | None,
    client_id: str | None = None,
    instance_id: str | None = None,
    session_timeout_ms: int | None = None,
) -> dict[str, Any]:
    """A consumer config; without a group, a private throw-away ``group.id`` that is never committed.

    librdkafka insists on a ``group.id`` even for ``assign()``-only consumers. ``instance_id`` makes
    the member static (KIP-345): a restart with the same id gets its partitions back at once, without
    waiting for the session of the dead member to expire or a rebalance of the others.
    """
    config: dict[str, Any] = {"auto.offset.reset": "earliest"}
    config.update(settings.client_config())
    config.update(
        {
            "group.id": group_id if group_id is not None else f"{READER_GROUP_PREFIX}{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
        }
    )
    if group_id is not None:
        config["auto.offset.reset"] = "earliest"
        if instance_id is not None:
            config["group.instance.id"] = instance_id
        if session_timeout_ms is not None:
            config["session.timeout.ms"] = session_timeout_ms
            config["heartbeat.interval.ms"] = max(500, session_timeout_ms // 4)
    if client_id is not None:
        config["client.id"] = client_id
    return with_statistics(settings, config, client_id or group_id or "reader")


def with_statistics(settings: MeshflSettings, config: dict[str, Any], role: str) -> dict[str, Any]:
    """Turn on librdkafka's statistics, folded into meshfl's metrics, when a daemon serves them."""
    if settings.statistics_interval_ms > 0:
        from meshfl.metrics import stats_callback

        config["statistics.interval.ms"] = settings.statistics_interval_ms
        config["stats_cb"] = stats_callback(role)
    return config


FENCED_CODES = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.FENCED_INSTANCE_ID,
    }
)
"""A newer producer (same transactional id) or group member (same group.instance.id) took over."""


def bus_error(action: str, exc: KafkaException) -> BusError:
    """A ``BusError`` that says what was being done and what librdkafka answered (``FencedError``
    when a newer instance took over)."""
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        kind = FencedError if error.code() in FENCED_CODES else BusError
        return kind(f"{action} failed: {error.name()} ({error.str()})")
    return BusError(f"{action} failed: {exc}")


RETRIABLE_CODES = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)
"""Errors of one request that a retry a moment later cures (e.g. just after a topic is created),
even where librdkafka does not flag them retriable."""


def is_retriable(error: object) -> bool:
    return isinstance(error, KafkaError) and (error.retriable() or error.code() in RETRIABLE_CODES)


def is_fatal(error: KafkaError) -> bool:
    return error.fatal() or error.code() in FATAL_CODES
