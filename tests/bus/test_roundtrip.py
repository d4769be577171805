"""Events through a real broker: envelope fields, keys, headers, partitions, snapshots."""

from __future__ import annotations

import time

import pytest
from bus_helpers import decision, drain, heartbeat, produce_raw

from meshfl.bus import EventConsumer, EventProducer, ensure_topics, read_all
from meshfl.bus._envelope import SENDER_HEADER
from meshfl.codec import EventCodec
from meshfl.events import ModelUpdate, Tensor, TensorDType
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name

pytestmark = pytest.mark.kafka


def _update(n: int = 0, size: int = 16) -> ModelUpdate:
    return ModelUpdate(
        update_id=f"u{n}",
        task_id="task",
        round=n,
        base_version=0,
        domain="retail",
        num_examples=100,
        metrics={"loss": 0.5},
        tensors=[
            Tensor(
                name="w", dtype=TensorDType.FLOAT32, shape=[size // 4], data=bytes(range(16)) * (size // 16)
            )
        ],
    )


def test_round_trip_of_several_event_types(bus_settings: MeshflSettings, codec: EventCodec) -> None:
    before_ms = int(time.time() * 1000)
    sent_heartbeat, sent_decision, sent_update = heartbeat(), decision(), _update()
    with EventProducer(bus_settings, codec=codec, client_id="test-producer") as producer:
        producer.produce(Topic.HEARTBEATS, sent_heartbeat, key="retail", headers={"trace-id": "abc"})
        producer.produce(Topic.DECISIONS, sent_decision, key=None)
        producer.produce(Topic.UPDATES, sent_update, key="retail")
        producer.flush()
    topics = [Topic.HEARTBEATS, Topic.DECISIONS, Topic.UPDATES]
    with EventConsumer(bus_settings, topics, codec=codec) as consumer:
        got = {envelope.topic: envelope for envelope in drain(consumer, 3)}
        assert consumer.poll(0.5) is None
        assert consumer.at_end()
    hb = got[topic_name(bus_settings, Topic.HEARTBEATS)]
    assert hb.event == sent_heartbeat
    assert (hb.partition, hb.offset, hb.first_offset, hb.key) == (0, 0, 0, "retail")
    assert hb.headers == {"trace-id": b"abc"}
    assert before_ms - 1000 <= hb.timestamp_ms <= int(time.time() * 1000) + 1000
    dec = got[topic_name(bus_settings, Topic.DECISIONS)]
    assert dec.event == sent_decision and dec.key is None and dec.headers == {}
    upd = got[topic_name(bus_settings, Topic.UPDATES)]
    assert upd.event == sent_update and isinstance(upd.event, ModelUpdate)


def test_order_per_key_and_chunks_stay_on_one_partition(settings: MeshflSettings, codec: EventCodec) -> None:
    wide = settings.model_copy(update={"partitions": 3, "max_message_bytes": 16_384})
    ensure_topics(wide)
    big = _update(99, size=100_000)
    with EventProducer(wide, codec=codec) as producer:
        for n in range(6):
            producer.produce(Topic.UPDATES, _update(n), key=f"domain-{n % 2}")
        producer.produce(Topic.UPDATES, big, key=None)
        producer.produce(Topic.UPDATES, big, key="domain-0")
    with EventConsumer(wide, [Topic.UPDATES], codec=codec) as consumer:
        got = drain(consumer, 8)
    small = [e for e in got if e.event.update_id != "u99"]
    for key in ("domain-0", "domain-1"):
        rounds = [e.event.round for e in small if e.key == key]
        assert rounds == sorted(rounds) and len(rounds) == 3
        assert len({e.partition for e in small if e.key == key}) == 1
    chunked = [e for e in got if e.event.update_id == "u99"]
    assert [e.event for e in chunked] == [big, big]
    assert all(e.offset - e.first_offset >= 6 for e in chunked)  # 100 kB in chunks below 16 kB
    assert {e.key for e in chunked} == {None, "domain-0"}


def test_read_all_stops_at_the_end(bus_settings: MeshflSettings, codec: EventCodec) -> None:
    assert list(read_all(bus_settings, Topic.DECISIONS, codec=codec)) == []
    with EventProducer(bus_settings, codec=codec) as producer:
        for n in range(5):
            producer.produce(Topic.DECISIONS, decision(n), key=f"d{n}")
    started = time.monotonic()
    snapshot = list(read_all(bus_settings, Topic.DECISIONS, codec=codec, timeout=10.0))
    assert time.monotonic() - started < 10.0
    assert [e.event.decision_id for e in snapshot] == [f"d{n}" for n in range(5)]
    assert [e.offset for e in snapshot] == list(range(5))


def test_from_end_skips_history(bus_settings: MeshflSettings, codec: EventCodec) -> None:
    with EventProducer(bus_settings, codec=codec) as producer:
        producer.produce(Topic.HEARTBEATS, heartbeat(n=1), key="a")
    with EventConsumer(bus_settings, [Topic.HEARTBEATS], codec=codec, from_beginning=False) as consumer:
        assert consumer.poll(1.0) is None
        assert consumer.at_end()
        with EventProducer(bus_settings, codec=codec) as producer:
            producer.produce(Topic.HEARTBEATS, heartbeat(n=2), key="a")
        assert not consumer.at_end()
        (envelope,) = drain(consumer, 1)
    assert envelope.event.agent_id == "agent-2" and envelope.offset == 1


def test_read_all_over_partitions_some_empty(settings: MeshflSettings, codec: EventCodec) -> None:
    wide = settings.model_copy(update={"partitions": 3})
    ensure_topics(wide)
    with EventProducer(wide, codec=codec) as producer:
        for n in range(4):
            producer.produce(Topic.DECISIONS, decision(n), key="one-key")
    snapshot = list(read_all(wide, Topic.DECISIONS, codec=codec, timeout=10.0))
    assert [e.event for e in snapshot] == [decision(n) for n in range(4)]
    assert len({e.partition for e in snapshot}) == 1


def test_a_zero_timeout_poll_reads_past_end_of_partition_markers(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    # Events produced one fetch apart reach the consumer's queue as [u1, EOF, u2, EOF, u3, EOF]: a reader
    # draining with poll(0) (an agent catching up to the newest version) must get all three at once, not
    # one per call (it then trained on ever older versions in async mode).
    with EventConsumer(bus_settings, [Topic.UPDATES], codec=codec) as consumer:
        assert consumer.poll(2.0) is None  # at the end of the empty partition
        with EventProducer(bus_settings, codec=codec, client_id="test-producer") as producer:
            for n in (1, 2, 3):
                producer.produce(Topic.UPDATES, _update(n), key="retail")
                producer.flush()
                time.sleep(1.5)  # the consumer's fetcher takes each one (and the end marker) by itself
        first = consumer.poll(10.0)
        assert first is not None
        rest = []
        while (envelope := consumer.poll(0.0)) is not None:
            rest.append(envelope)
    assert [e.event.round for e in [first, *rest]] == [1, 2, 3]


def test_draining_asks_for_watermarks_per_partition_not_per_record(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    """The drain loop of the catalog and key feeds: a round trip per record stalled 1,000 domains."""
    with EventProducer(bus_settings, codec=codec) as producer:
        for n in range(20):
            producer.produce(Topic.HEARTBEATS, heartbeat(n=n), key="a")
    with EventConsumer(bus_settings, [Topic.HEARTBEATS], codec=codec) as consumer:
        asked = []
        real = consumer._watermarks
        consumer._watermarks = lambda tp: asked.append(tp) or real(tp)  # type: ignore[method-assign]
        got = 0
        while True:
            envelope = consumer.poll(0.0 if consumer.at_end() else 0.5)
            if envelope is None:
                if consumer.at_end():
                    break
                continue
            got += 1
    assert got == 20
    assert len(asked) <= 4 * len(consumer.assigned()) + 4, len(asked)


def test_a_reader_of_its_own_records_passes_over_the_others_undecoded(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    """Every record names its producer; ``only_sender`` reads one producer's (whole and chunked) and
    passes over the rest, undecoded: a record of garbage under another name is not even dead-lettered.
    A record without the header (written before every record carried it) is still decoded."""
    settings = bus_settings.model_copy(update={"max_message_bytes": 16_384})
    mine, theirs = _update(1, size=12_000), _update(2, size=12_000)  # both chunked
    with EventProducer(settings, codec=codec, client_id="agent-a-updates") as producer:
        assert producer.sender == "agent-a-updates"
        producer.produce(Topic.UPDATES, mine, key="task")
        producer.produce(Topic.UPDATES, heartbeat("a"), key="task")
    with EventProducer(settings, codec=codec, client_id="agent-b-updates") as producer:
        producer.produce(Topic.UPDATES, theirs, key="task")
        producer.produce(Topic.UPDATES, heartbeat("b"), key="task")
    legacy = heartbeat("legacy")
    produce_raw(
        settings,
        Topic.UPDATES,
        [(codec.encode(legacy), {}), (b"\x00garbage", {SENDER_HEADER: b"agent-b-updates"})],
        key="task",
    )
    got = [env.event for env in read_all(settings, Topic.UPDATES, codec=codec, only_sender="agent-a-updates")]
    assert got == [mine, heartbeat("a"), legacy]
    everything = [env.event for env in read_all(settings, Topic.UPDATES, codec=codec)]
    assert everything == [mine, heartbeat("a"), theirs, heartbeat("b"), legacy]
