"""A 400 MB model update (100M float32 parameters) chunked through the real broker, intact."""

from __future__ import annotations

import gc
import hashlib
import time

import pytest
import torch

from meshfl.bus import EventConsumer, EventProducer
from meshfl.codec import EventCodec
from meshfl.events import ModelUpdate, Tensor, TensorDType
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

PARAMETERS = 100_000_000

log = get_logger("tests.bus.large")


@pytest.mark.kafka
@pytest.mark.slow
def test_400_mb_update_round_trip(bus_settings: MeshflSettings, codec: EventCodec) -> None:
    data = torch.arange(PARAMETERS, dtype=torch.float32).numpy().tobytes()
    size_mb = len(data) / 1e6
    expected = hashlib.sha256(data).hexdigest()
    update = ModelUpdate(
        update_id="big",
        task_id="task",
        round=1,
        base_version=0,
        domain="retail",
        num_examples=1,
        tensors=[Tensor(name="w", dtype=TensorDType.FLOAT32, shape=[PARAMETERS], data=data)],
    )
    del data
    started = time.perf_counter()
    with EventProducer(bus_settings, codec=codec) as producer:
        producer.produce(Topic.UPDATES, update, key="retail")
        producer.flush(timeout=600)
        chunk_size = producer.chunk_size
    produce_s = time.perf_counter() - started
    del update
    gc.collect()

    started = time.perf_counter()
    with EventConsumer(bus_settings, [Topic.UPDATES], codec=codec) as consumer:
        envelope = None
        deadline = time.monotonic() + 600
        while envelope is None:
            assert time.monotonic() < deadline, "the chunked update did not arrive"
            envelope = consumer.poll(1.0)
        consume_s = time.perf_counter() - started
        assert consumer.poll(1.0) is None
    assert isinstance(envelope.event, ModelUpdate)
    (tensor,) = envelope.event.tensors
    assert tensor.shape == [PARAMETERS] and len(tensor.data) == PARAMETERS * 4
    assert hashlib.sha256(tensor.data).hexdigest() == expected
    chunks = envelope.offset - envelope.first_offset + 1
    assert chunks == -(-PARAMETERS * 4 // chunk_size) or chunks == -(-PARAMETERS * 4 // chunk_size) + 1
    figures = {
        "payload_mb": round(size_mb, 1),
        "chunks": chunks,
        "produce_s": round(produce_s, 2),
        "produce_mb_s": round(size_mb / produce_s, 1),
        "consume_s": round(consume_s, 2),
        "consume_mb_s": round(size_mb / consume_s, 1),
    }
    log.info("large payload through kafka", **figures)
    print(f"\n400 MB update through Kafka: {figures}")  # shown with -s
