"""Live fuzzing: thousands of mutated real updates into a running governance process.

Byte-level mutations of a real ``ModelUpdate`` (flips, insertions, deletions, spliced huge lengths,
truncations) and field-level hostile variants (the numel-overflow shape, long names, NaN weights, int64
edges, unknown tasks and domains) go onto the updates topic. The property: governance stays up, and
every one of the records has either a published decision (by its source offset) or a dead letter.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from governance.rounds import initial_version
from meshfl.bus import SOURCE_OFFSET_HEADER, SOURCE_TOPIC_HEADER, ensure_topics, read_all
from meshfl.codec import make_codec
from meshfl.domain.config import load_domain
from meshfl.events import DataProductRef, GovernanceDecision, ModelUpdate, Tensor, TensorDType, TrainingTask
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name
from tests.federation.conftest import Processes, hospital_task, wait_for, write_task

pytestmark = pytest.mark.kafka

MESSAGES = 2_000
HUGE_VARINT = b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"


def _hostile_variants(task: TrainingTask, base: ModelUpdate) -> list[ModelUpdate]:
    tensors = list(base.tensors)
    first = tensors[0]
    nan = bytearray(first.data)
    nan[0:4] = b"\x00\x00\xc0\x7f"
    return [
        base.model_copy(
            update={
                "tensors": [first.model_copy(update={"shape": [2**62, 2**62, 0], "data": b""}), *tensors[1:]]
            }
        ),
        base.model_copy(
            update={
                "tensors": [*tensors, Tensor(name="n" * 1000, dtype=TensorDType.INT8, shape=[0], data=b"")]
            }
        ),
        base.model_copy(update={"tensors": [first.model_copy(update={"data": bytes(nan)}), *tensors[1:]]}),
        base.model_copy(update={"num_examples": -(2**63), "round": 2**63 - 1, "base_version": -1}),
        base.model_copy(update={"metrics": {"loss": float("nan"), "x" * 500: float("inf")}}),
        base.model_copy(update={"task_id": "no-such-task"}),
        base.model_copy(update={"domain": "nobody"}),
        base.model_copy(update={"tensors": []}),
    ]


def _mutate(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    for _ in range(rng.randint(1, 6)):
        op = rng.choice(("flip", "flip", "insert", "delete", "varint", "header"))
        at = rng.randrange(len(data)) if data else 0
        if op == "flip" and data:
            data[at] ^= rng.randint(1, 255)
        elif op == "insert":
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == "delete" and data:
            del data[at : at + rng.randint(1, 8)]
        elif op == "varint":
            data[at:at] = HUGE_VARINT
        elif op == "header" and len(data) > 12:
            data[rng.randrange(12)] ^= rng.randint(1, 255)
    if rng.random() < 0.1:
        data = data[: rng.randrange(len(data) + 1)]
    return bytes(data)


def _dead_lettered_offsets(settings: MeshflSettings, source: str) -> set[int]:
    consumer = Consumer(
        {**settings.client_config(), "group.id": "live-fuzz-dlq", "enable.auto.commit": False}
    )
    topic = topic_name(settings, Topic.DEAD_LETTERS)
    offsets: set[int] = set()
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, low)])
        seen = 0
        deadline = time.monotonic() + 60
        while seen < high - low and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error() is not None:
                continue
            seen += 1
            headers = {k: v for k, v in message.headers() or ()}
            if headers.get(SOURCE_TOPIC_HEADER) == source.encode():
                offsets.add(int(headers[SOURCE_OFFSET_HEADER]))
    finally:
        consumer.close()
    return offsets


def test_mutated_updates_each_get_a_decision_or_a_dead_letter(
    settings: MeshflSettings, mesh_root: Path, processes: Processes, tmp_path: Path
) -> None:
    task = hospital_task(mesh_root, rounds=1000)
    task_file = write_task(task, tmp_path / "task.json")
    ensure_topics(settings)
    hospital = load_domain(mesh_root / "hospital-north")
    descriptor = hospital.descriptors()[0]
    codec = make_codec(settings)
    base = ModelUpdate(
        update_id="live-fuzz",
        task_id=task.id,
        round=1,
        base_version=0,
        domain=hospital.name,
        data_products=[DataProductRef(id=descriptor.id, version=descriptor.version)],
        num_examples=100,
        tensors=initial_version(task).tensors,
    )
    gov = processes.start("governance", "governance", "run", "--tasks", str(task_file))
    wait_for(lambda: "governance started" in processes.log("governance"), timeout=120, what="governance")

    rng = random.Random(20261201)
    valid = codec.encode(base)
    variants = [codec.encode(update) for update in _hostile_variants(task, base)]
    updates = topic_name(settings, Topic.UPDATES)
    producer = Producer(settings.client_config(**{"enable.idempotence": True}))
    producer.produce(topic_name(settings, Topic.CATALOG), value=codec.encode(descriptor), key=descriptor.id)
    for index in range(MESSAGES):
        if index % 10 == 0:
            value = variants[(index // 10) % len(variants)]
        else:
            value = _mutate(rng, rng.choice([valid, *variants]))
        producer.produce(updates, value=value, key=task.id)
        if index % 200 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0

    seen: dict[str, set[int]] = {}

    def all_handled() -> bool:
        assert gov.poll() is None, processes.log("governance")[-5000:]
        seen["decided"] = {
            env.event.source_offset
            for env in read_all(settings, Topic.DECISIONS)
            if isinstance(env.event, GovernanceDecision) and env.event.source_offset is not None
        }
        seen["dead"] = _dead_lettered_offsets(settings, updates)
        return len((seen["decided"] | seen["dead"]) & set(range(MESSAGES))) == MESSAGES

    wait_for(all_handled, timeout=600, what=f"a decision or dead letter for each of {MESSAGES} records")
    # Both paths were exercised: the hostile variants alone are a tenth of the records and decodable.
    assert len(seen["decided"]) >= MESSAGES // 10 and seen["dead"], {k: len(v) for k, v in seen.items()}
    assert not seen["decided"] & seen["dead"]  # one outcome per record
    assert gov.poll() is None
    assert processes.terminate("governance") == 0
