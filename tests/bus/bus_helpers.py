"""Helpers of the bus tests: sample events, draining consumers, raw records with plain clients."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from meshfl.bus import Envelope, EventConsumer
from meshfl.events import AgentStatus, DecisionOutcome, DomainHeartbeat, GovernanceDecision
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name

FIXED_TIME = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def heartbeat(domain: str = "retail", n: int = 0) -> DomainHeartbeat:
    return DomainHeartbeat(
        domain=domain, agent_id=f"agent-{n}", status=AgentStatus.IDLE, tasks=[f"t{n}"], sent_at=FIXED_TIME
    )


def decision(n: int = 0) -> GovernanceDecision:
    return GovernanceDecision(
        decision_id=f"d{n}",
        task_id="task",
        update_id=f"u{n}",
        domain="retail",
        round=n,
        outcome=DecisionOutcome.ACCEPTED,
        policy="norm-bound",
        reason="within bounds",
        created_at=FIXED_TIME,
    )


def drain(consumer: EventConsumer, count: int, *, timeout: float = 30.0) -> list[Envelope]:
    """Poll until ``count`` envelopes arrived; fail the test if they do not within ``timeout``."""
    got: list[Envelope] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} events within {timeout} s"
        envelope = consumer.poll(0.5)
        if envelope is not None:
            got.append(envelope)
    return got


def poll_until_quiet(consumer: EventConsumer, *, quiet: float = 2.0) -> list[Envelope]:
    """Everything a consumer delivers until nothing more comes for ``quiet`` seconds."""
    got: list[Envelope] = []
    while (envelope := consumer.poll(quiet)) is not None:
        got.append(envelope)
    return got


def produce_raw(
    settings: MeshflSettings,
    topic: Topic,
    records: Sequence[tuple[bytes, dict[str, bytes]]],
    *,
    key: str | None = "k",
    timestamp_ms: int | None = None,
) -> None:
    """Write raw records (value, headers) with a plain producer: what a foreign or broken client sends."""
    producer = Producer(settings.client_config(**{"enable.idempotence": True}))
    extra = {} if timestamp_ms is None else {"timestamp": timestamp_ms}
    for value, headers in records:
        producer.produce(
            topic_name(settings, topic), value=value, key=key, headers=list(headers.items()), **extra
        )
    assert producer.flush(30) == 0


def read_raw(
    settings: MeshflSettings, topic: Topic, *, timeout: float = 30.0
) -> list[tuple[bytes, dict[str, bytes]]]:
    """Every record of partition 0 of ``topic`` as (value, headers), read to the end."""
    consumer = Consumer(
        settings.client_config(
            **{
                "group.id": f"raw-{uuid.uuid4().hex}",
                "enable.partition.eof": True,
                "enable.auto.commit": False,
            }
        )
    )
    records: list[tuple[bytes, dict[str, bytes]]] = []
    try:
        consumer.assign([TopicPartition(topic_name(settings, topic), 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    return records
                raise AssertionError(message.error())
            records.append((message.value() or b"", {k: v or b"" for k, v in message.headers() or ()}))
    finally:
        consumer.close()
    raise AssertionError(f"{topic} not read to its end within {timeout} s")
