"""Broker trouble: delivery failures surface in ``flush``; an unreachable cluster does not crash ``poll``."""

from __future__ import annotations

import os
import socket
import time

import pytest
from bus_helpers import decision

from meshfl.bus import EventConsumer, EventProducer
from meshfl.codec import EventCodec
from meshfl.errors import BusError
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic


@pytest.mark.kafka
def test_rejected_delivery_is_raised_by_flush(bus_settings: MeshflSettings, codec: EventCodec) -> None:
    # Chunking only above 4 MB: a 3 MB record (1.5 MB compressed) passes the client, not the broker.
    loose = bus_settings.model_copy(update={"max_message_bytes": 4_000_000})
    too_big = decision(1).model_copy(update={"reason": os.urandom(1_500_000).hex()})
    with EventProducer(loose, codec=codec) as producer:
        producer.produce(Topic.DECISIONS, too_big, key="d")
        with pytest.raises(BusError, match="deliveries failed"):
            producer.flush(timeout=30)
        producer.produce(Topic.DECISIONS, decision(2), key="d")
        producer.flush(timeout=30)  # the failure was reported once; the producer goes on


def test_poll_survives_an_unreachable_cluster() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe is closed
    settings = MeshflSettings(bootstrap_servers=f"127.0.0.1:{port}", topic_prefix="unreachable.")
    started = time.monotonic()
    with EventConsumer(settings, [Topic.DECISIONS], group_id="g") as consumer:
        for _ in range(3):
            assert consumer.poll(0.5) is None
        assert not consumer.at_end()
    assert time.monotonic() - started < 30
