"""Export files: standard Avro, the same replay verdict as the log they came from, tampering detected."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro

from governance.audit import EXPORT_SCHEMA, events_from_file, file_metadata, replay, write_events
from governance.audit.export import file_codec
from meshfl.events import ModelUpdate
from tests.audit.audit_builders import GOVERNANCE_KEY, forged, memory_federation


def _strip_seconds(result_json: str) -> dict:
    data = json.loads(result_json)
    data.pop("seconds")
    return data


def test_export_round_trip_gives_the_same_replay(tmp_path: Path) -> None:
    memory, fed = memory_federation()
    path = tmp_path / "audit.avro"
    assert write_events(memory.events, path, task_id=fed.task.id, source="memory") == len(memory.events)
    back = events_from_file(path)
    assert [(e.topic, e.partition, e.offset, e.timestamp_ms) for e in back] == [
        (e.topic, e.partition, e.offset, e.timestamp_ms) for e in memory.events
    ]
    assert [e.event for e in back] == [e.event for e in memory.events]
    direct, from_file = (
        replay(memory.events, fed.task.id, governance_key=GOVERNANCE_KEY),
        replay(back, fed.task.id, governance_key=GOVERNANCE_KEY),
    )
    assert from_file.ok
    assert _strip_seconds(direct.model_dump_json()) == _strip_seconds(from_file.model_dump_json())
    assert file_metadata(path)["meshfl.task_id"] == fed.task.id


def test_export_is_plain_avro_with_its_schemas(tmp_path: Path) -> None:
    memory, fed = memory_federation()
    path = tmp_path / "audit.avro"
    write_events(memory.events, path, task_id=fed.task.id)
    with path.open("rb") as handle:
        reader = fastavro.reader(handle)
        assert reader.writer_schema["name"] == "io.meshfl.audit.v1.LoggedEvent"
        assert [f["name"] for f in reader.writer_schema["fields"]] == [
            f["name"] for f in EXPORT_SCHEMA["fields"]
        ]
        schemas = json.loads(reader.metadata["meshfl.schemas"])
        records = list(reader)
    update = next(r for r in records if r["event_type"] == ModelUpdate.AVRO_NAME)
    assert update["payload"][:2] == b"\xc3\x01" and update["payload"][2:10] == update["schema_fingerprint"]
    # Any Avro library decodes the payload with the embedded writer schema: no meshfl needed.
    writer = fastavro.parse_schema(
        json.loads(schemas[f"{int.from_bytes(update['schema_fingerprint'], 'little'):016x}"])
    )
    datum = fastavro.schemaless_reader(io.BytesIO(update["payload"][10:]), writer, None)
    assert datum["update_id"] == fed.updates[0][0].update_id


def test_tampered_export_fails_replay(tmp_path: Path) -> None:
    memory, fed = memory_federation()
    path, tampered = tmp_path / "audit.avro", tmp_path / "tampered.avro"
    write_events(memory.events, path, task_id=fed.task.id)
    target, (_, offset) = fed.updates[2]
    codec = file_codec()
    with path.open("rb") as handle:
        reader = fastavro.reader(handle)
        records = list(reader)
    for record in records:
        if record["topic"] == "model-updates" and record["offset"] == offset:
            record["payload"] = codec.encode(forged(target, scale=0.01))
    with tampered.open("wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(EXPORT_SCHEMA), records)
    result = replay(events_from_file(tampered), fed.task.id, governance_key=GOVERNANCE_KEY)
    assert not result.ok
    assert [v.version for v in result.versions if not v.reproduced] == [1]
    assert any(target.update_id in f.message for f in result.findings if f.kind == "version_mismatch")
