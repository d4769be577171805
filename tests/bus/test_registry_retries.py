"""A Schema Registry away for a while delays decoding; it never turns a valid record into a dead letter.

Transient registry failures (transport errors, timeouts, 5xx) used to become ``CodecError``: the record
was dead-lettered and the next commit moved past a valid update. Now the consumer goes back to the
record, backs off and reads it again; the committed position cannot pass it meanwhile. Only a permanent
failure (a schema id the registry does not have) is dead-lettered. The registry is confluent-kafka's
in-process one, made unreachable for its first lookups by a client that fails as a dropped connection
does; the broker is real.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from bus_helpers import heartbeat, produce_raw, read_raw
from confluent_kafka.schema_registry import SchemaRegistryClient

from meshfl.bus import REASON_HEADER, EventConsumer, EventProducer
from meshfl.codec import RegistryCodec, default_store
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

pytestmark = pytest.mark.kafka


class _Unreachable:
    """A registry client whose first ``failures`` schema lookups fail like a refused connection."""

    def __init__(self, client: SchemaRegistryClient, failures: int) -> None:
        self._client, self.failures, self.calls = client, failures, 0
        self.probe: Callable[[], None] | None = None
        """Called at every lookup after the first: the record is then held by an earlier failure."""

    def get_schema(self, schema_id: int, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > 1 and self.probe is not None:
            self.probe()
        if self.calls <= self.failures:
            raise ConnectionRefusedError(111, "Connection refused")
        return self._client.get_schema(schema_id, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_registry_outage_delays_records_and_never_dead_letters_them(bus_settings: MeshflSettings) -> None:
    url = f"mock://meshfl-{uuid.uuid4().hex}"
    store = default_store()
    client = SchemaRegistryClient.new_client({"url": url})
    writer = RegistryCodec(url, store, client=client)
    with EventProducer(bus_settings, codec=writer) as producer:
        for n in range(2):
            producer.produce(Topic.HEARTBEATS, heartbeat(n=n), key="retail")
    flaky = _Unreachable(client, failures=3)
    reader = RegistryCodec(url, store, client=flaky)  # type: ignore[arg-type]
    consumer = EventConsumer(
        bus_settings, [Topic.HEARTBEATS], codec=reader, group_id=f"g-{uuid.uuid4().hex[:6]}"
    )
    got = []
    held: list[int] = []  # the safe offset each time the record was looked up again
    flaky.probe = lambda: held.extend(tp.offset for tp in consumer.safe_offsets()[:1])
    try:
        for _ in range(120):
            envelope = consumer.poll(0.5)
            if envelope is not None:
                got.append(envelope.event)
            if len(got) == 2:
                break
    finally:
        consumer.close()
    assert got == [heartbeat(n=0), heartbeat(n=1)]
    assert flaky.calls > flaky.failures  # it was retried, then read
    assert held and set(held) == {0}  # meanwhile a commit could not pass the record
    assert read_raw(bus_settings, Topic.DEAD_LETTERS) == []


def test_an_unknown_schema_id_is_still_a_dead_letter(bus_settings: MeshflSettings) -> None:
    url = f"mock://meshfl-{uuid.uuid4().hex}"
    produce_raw(bus_settings, Topic.HEARTBEATS, [(b"\x00\x00\x01\x86\xa0" + b"\x02", {})])  # id 100000
    consumer = EventConsumer(bus_settings, [Topic.HEARTBEATS], codec=RegistryCodec(url, default_store()))
    try:
        for _ in range(20):
            if consumer.poll(0.5) is None and consumer.at_end():
                break
    finally:
        consumer.close()
    letters = read_raw(bus_settings, Topic.DEAD_LETTERS)
    assert len(letters) == 1 and letters[0][1][REASON_HEADER] == b"unknown-schema"
