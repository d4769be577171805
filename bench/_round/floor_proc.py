"""One process of the bare confluent-kafka floor (``bench/_round/floor.py``): a "server" or a "domain".

Usage: ``python floor_proc.py server BOOTSTRAP PREFIX DOMAINS ROUNDS BYTES COMPRESSION OUT_JSON`` or
``python floor_proc.py domain BOOTSTRAP PREFIX NAME ROUNDS BYTES COMPRESSION``.

A round moves the bytes of a meshfl round and nothing else: the server produces the model (``BYTES``
in messages of at most ~1 MB) to ``PREFIX.versions``; every domain reads it and produces its update of
the same size to ``PREFIX.updates``; the server reads all of them and produces the next model.
Producers: acks=all, idempotent, the given compression; consumers read partition 0 from the beginning
(no group, no rebalance). Payloads are random float32 bytes (incompressible, like weights).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

MESSAGE_BYTES = 1_000_000 - 1024


def _producer(bootstrap: str, compression: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": compression,
            "linger.ms": 5,
            "message.max.bytes": 1_100_000,
        }
    )


def _consumer(bootstrap: str, topic: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 64 * 1024 * 1024,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    return consumer


def _send(producer: Producer, topic: str, key: bytes, payload: memoryview) -> None:
    for start in range(0, len(payload), MESSAGE_BYTES):
        while True:
            try:
                producer.produce(topic, value=bytes(payload[start : start + MESSAGE_BYTES]), key=key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def _read(consumer: Consumer, count: int) -> int:
    """Read ``count`` messages; returns the bytes read."""
    got = 0
    size = 0
    while got < count:
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            raise RuntimeError(str(message.error()))
        got += 1
        size += len(message.value() or b"")
    return size


def _payload(nbytes: int, seed: int) -> memoryview:
    return memoryview(np.random.default_rng(seed).standard_normal(nbytes // 4, dtype=np.float32).tobytes())


def server(
    bootstrap: str, prefix: str, domains: int, rounds: int, nbytes: int, compression: str, out: str
) -> None:
    producer = _producer(bootstrap, compression)
    updates = _consumer(bootstrap, f"{prefix}.updates")
    per_update = -(-nbytes // MESSAGE_BYTES)
    stamps = []
    model = _payload(nbytes, 0)
    for round_ in range(rounds + 1):
        _send(producer, f"{prefix}.versions", b"server", model)
        stamps.append(time.time())
        if round_ == rounds:
            break
        _read(updates, domains * per_update)
    Path(out).write_text(json.dumps(stamps))


def domain(bootstrap: str, prefix: str, name: str, rounds: int, nbytes: int, compression: str) -> None:
    producer = _producer(bootstrap, compression)
    versions = _consumer(bootstrap, f"{prefix}.versions")
    per_version = -(-nbytes // MESSAGE_BYTES)
    update = _payload(nbytes, hash(name) & 0xFFFF)
    for _ in range(rounds):
        _read(versions, per_version)
        _send(producer, f"{prefix}.updates", name.encode(), update)
    _read(versions, per_version)


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "server":
        bootstrap, prefix, domains, rounds, nbytes, compression, out = rest
        server(bootstrap, prefix, int(domains), int(rounds), int(nbytes), compression, out)
    else:
        bootstrap, prefix, name, rounds, nbytes, compression = rest
        domain(bootstrap, prefix, name, int(rounds), int(nbytes), compression)
