"""Every byte every topic of a test's prefix holds: keys, values and headers, as the broker returns them."""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from meshfl.settings import MeshflSettings


def raw_bytes_of_every_topic(settings: MeshflSettings, *, timeout: float = 30.0) -> bytes:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    topics = [
        name for name in admin.list_topics(timeout=timeout).topics if name.startswith(settings.topic_prefix)
    ]
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": "bus-scan",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    parts: list[bytes] = []
    try:
        for name in topics:
            metadata = consumer.list_topics(name, timeout=timeout).topics[name]
            for partition in metadata.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=timeout)
                if high <= low:
                    continue
                consumer.assign([TopicPartition(name, partition, OFFSET_BEGINNING)])
                position = low
                while position < high - 1:
                    message = consumer.poll(timeout)
                    assert message is not None, f"{name}[{partition}] stalled at {position}"
                    if message.error():
                        continue
                    position = message.offset()
                    parts += [message.key() or b"", message.value() or b""]
                    parts += [value or b"" for _, value in message.headers() or []]
    finally:
        consumer.close()
    return b"\x00".join(parts)
