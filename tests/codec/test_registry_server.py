"""The Confluent wire format against a real Confluent-compatible Schema Registry (Apicurio, ccompat API)."""

from __future__ import annotations

import io
import json
import urllib.request

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro import parse_schema, schemaless_reader

from meshfl.codec import RegistryCodec, SchemaStore, make_codec
from meshfl.errors import UnknownSchemaError
from meshfl.settings import MeshflSettings

from .conftest import sample_events


def _client(url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url})  # a client of its own: no cache shared with the codec


def test_every_event_type_is_registered_under_its_subject_and_framed(
    store: SchemaStore, schema_registry_url: str
) -> None:
    codec = RegistryCodec(schema_registry_url, store, client=_client(schema_registry_url))
    inspector = _client(schema_registry_url)
    for event in sample_events():
        payload = codec.encode(event)
        assert payload[0] == 0
        schema_id = int.from_bytes(payload[1:5], "big")
        latest = inspector.get_latest_version(event.AVRO_NAME)  # RecordNameStrategy subject
        assert latest.schema_id == schema_id
        registered = json.loads(inspector.get_schema(schema_id).schema_str)
        datum = schemaless_reader(io.BytesIO(payload[5:]), parse_schema(registered), None)
        assert type(event).from_avro(datum) == event
    with urllib.request.urlopen(f"{schema_registry_url}/subjects", timeout=30) as response:
        subjects = set(json.load(response))
    assert {event.AVRO_NAME for event in sample_events()} <= subjects


def test_a_consumer_with_its_own_client_decodes_by_id(store: SchemaStore, schema_registry_url: str) -> None:
    producer = RegistryCodec(schema_registry_url, store, client=_client(schema_registry_url))
    consumer = RegistryCodec(schema_registry_url, store, client=_client(schema_registry_url))
    events = sample_events()
    payloads = [producer.encode(event) for event in events]
    assert len({payload[:5] for payload in payloads}) == len(events)
    assert [consumer.decode(payload) for payload in payloads] == events
    again = RegistryCodec(schema_registry_url, store, client=_client(schema_registry_url))
    assert [again.encode(event)[:5] for event in events] == [payload[:5] for payload in payloads]


def test_unknown_schema_id_is_reported(store: SchemaStore, schema_registry_url: str) -> None:
    codec = RegistryCodec(schema_registry_url, store, client=_client(schema_registry_url))
    with pytest.raises(UnknownSchemaError, match="schema id 987654"):
        codec.decode(b"\x00" + (987654).to_bytes(4, "big") + b"\x02")


def test_make_codec_from_the_url_setting(store: SchemaStore, schema_registry_url: str) -> None:
    codec = make_codec(MeshflSettings(schema_registry_url=schema_registry_url), store)
    assert isinstance(codec, RegistryCodec)
    event = sample_events()[-1]
    assert codec.decode(codec.encode(event)) == event
