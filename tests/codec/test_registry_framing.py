"""Confluent wire format against confluent-kafka's in-process ``mock://`` Schema Registry."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro import parse_schema, schemaless_reader

from meshfl.codec import RegistryCodec, SchemaStore, SingleObjectCodec, make_codec
from meshfl.errors import CodecError, UnknownSchemaError
from meshfl.events import Chunk, Event, ModelUpdate
from meshfl.settings import MeshflSettings

from .conftest import sample_events


@pytest.fixture
def url() -> str:
    return f"mock://meshfl-{uuid.uuid4().hex}"


def test_round_trip(store: SchemaStore, event: Event, url: str) -> None:
    codec = RegistryCodec(url, store)
    payload = codec.encode(event)
    assert codec.decode(payload) == event
    assert codec.decode_as(memoryview(payload), type(event)) == event


def test_wire_format_and_registered_subject(store: SchemaStore, event: Event, url: str) -> None:
    client = SchemaRegistryClient.new_client({"url": url})
    payload = RegistryCodec(url, store, client=client).encode(event)
    assert payload[0] == 0
    schema_id = int.from_bytes(payload[1:5], "big")
    latest = client.get_latest_version(event.AVRO_NAME)  # RecordNameStrategy: subject = full record name
    assert latest.schema_id == schema_id
    registered = json.loads(client.get_schema(schema_id).schema_str)
    # What the registry holds is self-contained: a plain Avro reader decodes the body with it alone.
    datum = schemaless_reader(io.BytesIO(payload[5:]), parse_schema(registered), None)
    assert type(event).from_avro(datum) == event


def test_ids_are_registered_once_and_shared_between_producer_and_consumer(
    store: SchemaStore, url: str
) -> None:
    producer, consumer = RegistryCodec(url, store), RegistryCodec(url, store)
    events = sample_events()
    payloads = [producer.encode(event) for event in events]
    assert producer.encode(events[0])[:5] == payloads[0][:5]
    assert len({payload[:5] for payload in payloads}) == len(events)
    assert [consumer.decode(payload) for payload in payloads] == events
    assert producer.schema_id(ModelUpdate) == int.from_bytes(payloads[2][1:5], "big")


def test_registry_reader_also_reads_single_object_messages(store: SchemaStore, url: str) -> None:
    chunk = next(e for e in sample_events() if isinstance(e, Chunk))
    assert RegistryCodec(url, store).decode(SingleObjectCodec(store).encode(chunk)) == chunk


def test_unknown_schema_id(store: SchemaStore, url: str) -> None:
    with pytest.raises(UnknownSchemaError, match="schema id 9999"):
        RegistryCodec(url, store).decode(b"\x00" + (9999).to_bytes(4, "big") + b"\x02")


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"", "first byte"), (b"\x07abc", "first byte"), (b"\x00\x00\x01", "truncated Schema Registry header")],
)
def test_bad_frames(store: SchemaStore, url: str, payload: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        RegistryCodec(url, store).decode(payload)


def test_truncated_registry_body(store: SchemaStore, url: str) -> None:
    codec = RegistryCodec(url, store)
    payload = codec.encode(sample_events()[0])
    with pytest.raises(CodecError, match="corrupt"):
        codec.decode(payload[:-3])


def test_make_codec_picks_the_framing(store: SchemaStore, url: str) -> None:
    assert isinstance(make_codec(MeshflSettings(), store), SingleObjectCodec)
    registry = make_codec(MeshflSettings(schema_registry_url=url), store)
    assert isinstance(registry, RegistryCodec)
    event = sample_events()[-1]
    assert registry.decode(registry.encode(event)) == event
