"""Chunk sets on the real broker: a producer's clock cannot age other sets, a declaration costs its sender,
and a sealed set is neither spent nor spoilt by anyone else.

Before the fix, one first chunk stamped ten days ahead moved the partition's clock, so every later set
expired on arrival; and one 100-byte chunk declaring 4 GiB reserved the whole reassembly budget, so
every honest chunked update was dead-lettered as oversized.
"""

from __future__ import annotations

import os
import time

import pytest
from bus_helpers import poll_until_quiet, produce_raw, read_raw

from meshfl.bus import CHUNK_HEADER, REASON_HEADER, EventConsumer, EventProducer
from meshfl.bus._chunk_seal import REASON_FOREIGN, SEAL_HEADER, seal_header
from meshfl.bus._chunking import iter_chunks
from meshfl.bus._envelope import SENDER_HEADER
from meshfl.codec import EventCodec
from meshfl.events import Chunk, ModelUpdate, Tensor, TensorDType
from meshfl.identity import Signer, TrustRegistry, generate_private_key
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

pytestmark = pytest.mark.kafka

TEN_DAYS_MS = 10 * 24 * 3600 * 1000


def _update(n: int) -> ModelUpdate:
    data = os.urandom(4 * 12_000)  # ~48 KB: three chunks at the 16 KiB message limit
    return ModelUpdate(
        update_id=f"u{n}",
        task_id="task",
        round=1,
        base_version=0,
        domain=f"domain-{n}",
        num_examples=10,
        tensors=[Tensor(name="w", dtype=TensorDType.FLOAT32, shape=[12_000], data=data)],
    )


def test_future_stamp_and_huge_declaration_stop_no_honest_update(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    settings = bus_settings.model_copy(update={"max_message_bytes": 16_384})
    hostile = Chunk(
        message_id="evil", index=0, count=2, total_size=4 * 1024**3, sha256="0" * 64, data=b"x" * 100
    )
    produce_raw(
        settings,
        Topic.UPDATES,
        [(codec.encode(hostile), {CHUNK_HEADER: b"1", SENDER_HEADER: b"mallory"})],
        key="task",
        timestamp_ms=int(time.time() * 1000) + TEN_DAYS_MS,
    )
    updates = [_update(n) for n in range(3)]
    for n, update in enumerate(updates):
        with EventProducer(settings, codec=codec, client_id=f"meshfl-agent-domain-{n}") as producer:
            producer.produce(Topic.UPDATES, update, key="task")
    with EventConsumer(settings, [Topic.UPDATES], codec=codec, chunk_timeout=60.0) as consumer:
        got = poll_until_quiet(consumer, quiet=3.0)
    assert [env.event for env in got] == updates
    # Nothing honest was dead-lettered; the hostile set is still open (it expires by broker time).
    assert [headers[REASON_HEADER] for _, headers in read_raw(settings, Topic.DEAD_LETTERS)] == []


def test_meshfl_topics_stamp_records_with_broker_time(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    """A producer's stamp a year back is replaced by the broker's (LogAppendTime)."""
    update = _update(7)
    produce_raw(
        bus_settings,
        Topic.UPDATES,
        [(codec.encode(update), {})],
        key="task",
        timestamp_ms=int(time.time() * 1000) - 365 * 24 * 3600 * 1000,
    )
    with EventConsumer(bus_settings, [Topic.UPDATES], codec=codec) as consumer:
        (env,) = poll_until_quiet(consumer, quiet=2.0)
    assert env.event == update
    assert abs(env.timestamp_ms - time.time() * 1000) < 600_000


def test_a_forged_declaration_under_a_signers_name_spends_only_its_claim(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    """A 100-byte chunk declaring 4 GiB under domain-0's sender header filled domain-0's budget, so its
    real set was refused until the forgery expired. With a registry the real set's signed declaration
    spends domain-0's own budget, which no claim shares; without one (the old behaviour, and a reader
    that has no registry) the forgery still wins."""
    settings = bus_settings.model_copy(update={"max_message_bytes": 16_384})
    signer = Signer("domain-0", generate_private_key())
    registry = TrustRegistry(generate_private_key().public_key())
    registry.pin("domain-0", signer.public_key)
    forged = Chunk(
        message_id="forged", index=0, count=2, total_size=4 * 1024**3, blake3="0" * 64, data=b"x" * 100
    )
    sender = b"meshfl-agent-domain-0"
    produce_raw(
        settings,
        Topic.UPDATES,
        [(codec.encode(forged), {CHUNK_HEADER: b"1", SENDER_HEADER: sender})],
        key="task",
    )
    update = _update(0)
    with EventProducer(settings, codec=codec, client_id=sender.decode(), signer=signer) as producer:
        producer.produce(Topic.UPDATES, update, key="task")

    with EventConsumer(settings, [Topic.UPDATES], codec=codec, dead_letters=False) as unprotected:
        assert poll_until_quiet(unprotected, quiet=3.0) == []
    with EventConsumer(settings, [Topic.UPDATES], codec=codec, chunk_signers=registry) as consumer:
        got = poll_until_quiet(consumer, quiet=3.0)
    assert [env.event.model_copy(update={"signature": None}) for env in got] == [update]
    assert [headers[REASON_HEADER] for _, headers in read_raw(settings, Topic.DEAD_LETTERS)] == []


def test_a_chunk_copied_into_a_sealed_set_is_dead_lettered_not_its_ruin(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    """Between domain-0's chunks 0 and 1 a writer appends a copy of chunk 1 with other data. Without a
    registry the set is refused as corrupt and the update lost; with one the copy lacks domain-0's seal,
    is dead-lettered as ``chunk-foreign``, and the set completes."""
    settings = bus_settings.model_copy(update={"max_message_bytes": 16_384})
    signer = Signer("domain-0", generate_private_key())
    registry = TrustRegistry(generate_private_key().public_key())
    registry.pin("domain-0", signer.public_key)
    update = signer.sign(_update(0))
    chunks = list(iter_chunks(codec.encode(update), chunk_size=8_000, message_id="set-0"))
    assert len(chunks) >= 3
    base = {CHUNK_HEADER: b"1", SENDER_HEADER: b"meshfl-agent-domain-0"}

    def sealed(chunk: Chunk) -> tuple[bytes, dict[str, bytes]]:
        return codec.encode(chunk), {**base, SEAL_HEADER: seal_header(signer, chunk)}

    copy = chunks[1].model_copy(update={"data": bytes(len(chunks[1].data))})
    records = [sealed(chunks[0]), (codec.encode(copy), base), *(sealed(c) for c in chunks[1:])]
    produce_raw(settings, Topic.UPDATES, records, key="task")

    with EventConsumer(settings, [Topic.UPDATES], codec=codec, dead_letters=False) as unprotected:
        assert poll_until_quiet(unprotected, quiet=3.0) == []
    with EventConsumer(settings, [Topic.UPDATES], codec=codec, chunk_signers=registry) as consumer:
        got = poll_until_quiet(consumer, quiet=3.0)
    assert [env.event for env in got] == [update]
    assert [headers[REASON_HEADER] for _, headers in read_raw(settings, Topic.DEAD_LETTERS)] == [
        REASON_FOREIGN.encode()
    ]
