"""Export a task's events to a standard Avro object container file, and read them back for replay.

An auditor in another cluster (or with no cluster at all) verifies the federation from this file with
``meshfl audit replay --file``. The file is plain Avro (``fastavro``, ``avro-tools tojson`` and Spark
all read it); each record wraps one event exactly as it was on the log:

.. code-block:: json

    {"type": "record", "name": "LoggedEvent", "namespace": "io.meshfl.audit.v1", "fields": [
      {"name": "topic", "type": "string"},            // logical topic: "model-updates", "decisions", ...
      {"name": "partition", "type": "int"},
      {"name": "offset", "type": "long"},             // the offset a decision's source_offset refers to
      {"name": "timestamp_ms", "type": "long"},       // broker timestamp, ms since the epoch
      {"name": "event_type", "type": "string"},       // full Avro name, e.g. io.meshfl.v1.ModelUpdate
      {"name": "schema_fingerprint",                  // CRC-64-AVRO of the writer schema, little-endian
       "type": {"type": "fixed", "name": "Crc64Avro", "size": 8}},
      {"name": "payload", "type": "bytes"}]}          // the event, Avro single-object encoded

Payloads are single-object encoded (``C3 01`` + fingerprint + Avro binary) whatever wire format the
source cluster used, so the file never depends on a schema registry. The file metadata records the
task, the source topic prefix, when it was exported, and the writer schemas by fingerprint
(``meshfl.schemas``: JSON object, hex fingerprint -> schema), so any Avro library can decode payloads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro

from governance.audit.log import LoggedEvent, events_from_bus
from meshfl.errors import CodecError, ReplayError
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

if TYPE_CHECKING:
    from meshfl.codec import EventCodec

log = get_logger("meshfl.audit.export")

SINGLE_OBJECT_MARKER = b"\xc3\x01"
FORMAT_VERSION = "1"

EXPORT_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "LoggedEvent",
    "namespace": "io.meshfl.audit.v1",
    "doc": "One meshfl event as it was on the Kafka log, with its coordinates.",
    "fields": [
        {"name": "topic", "type": "string", "doc": "logical meshfl topic, without the prefix"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long", "doc": "offset of the record that completed the event"},
        {"name": "timestamp_ms", "type": "long", "doc": "broker timestamp, ms since the epoch"},
        {"name": "event_type", "type": "string", "doc": "full Avro name of the event's schema"},
        {
            "name": "schema_fingerprint",
            "type": {"type": "fixed", "name": "Crc64Avro", "size": 8},
            "doc": "CRC-64-AVRO fingerprint of the writer schema, little-endian (as in the payload header)",
        },
        {"name": "payload", "type": "bytes", "doc": "the event, Avro single-object encoded"},
    ],
}
_PARSED = fastavro.parse_schema(EXPORT_SCHEMA)


def file_codec() -> EventCodec:
    """The single-object codec (no registry) that export files are written and read with."""
    from meshfl.codec import SingleObjectCodec, default_store

    return SingleObjectCodec(default_store())


def writer_schemas(fingerprints: Iterable[bytes]) -> dict[str, str]:
    """The writer schemas of ``fingerprints`` (hex -> JSON), for tools that decode payloads without meshfl."""
    from meshfl.codec import default_store

    store = default_store()
    found = {raw: store.find(raw) for raw in set(fingerprints)}
    return {schema.fingerprint_hex: schema.schema_str for schema in found.values() if schema is not None}


def to_record(item: LoggedEvent, codec: EventCodec) -> dict[str, Any]:
    payload = codec.encode(item.event)
    if payload[:2] != SINGLE_OBJECT_MARKER or len(payload) < 10:
        raise CodecError("the export codec did not produce an Avro single-object encoding")
    return {
        "topic": item.topic.value,
        "partition": item.partition,
        "offset": item.offset,
        "timestamp_ms": item.timestamp_ms,
        "event_type": item.event.AVRO_NAME,
        "schema_fingerprint": payload[2:10],
        "payload": payload,
    }


def from_record(record: dict[str, Any], codec: EventCodec) -> LoggedEvent:
    try:
        topic = Topic(record["topic"])
    except ValueError as exc:
        raise ReplayError(f"unknown topic {record['topic']!r} in export file") from exc
    event = codec.decode(record["payload"])
    if record["event_type"] != event.AVRO_NAME:
        raise ReplayError(
            f"record at {topic.value}[{record['partition']}]@{record['offset']} says {record['event_type']} "
            f"but holds {event.AVRO_NAME}"
        )
    return LoggedEvent(topic, record["partition"], record["offset"], record["timestamp_ms"], event)


def write_events(
    events: Iterable[LoggedEvent],
    path: Path,
    *,
    task_id: str,
    source: str = "",
    codec: EventCodec | None = None,
) -> int:
    """Write ``events`` to an Avro container file at ``path``; return how many were written."""
    codec = codec or file_codec()
    records = [to_record(item, codec) for item in events]
    metadata = {
        "meshfl.format": FORMAT_VERSION,
        "meshfl.task_id": task_id,
        "meshfl.source": source,
        "meshfl.exported_at": datetime.now(UTC).isoformat(),
        "meshfl.schemas": json.dumps(writer_schemas(r["schema_fingerprint"] for r in records)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("wb") as handle:
            fastavro.writer(handle, _PARSED, records, codec="deflate", metadata=metadata)
    except OSError as exc:
        raise ReplayError(f"cannot write {path}: {exc}") from exc
    log.info("events exported", task=task_id, events=len(records), path=str(path))
    return len(records)


def export_task(settings: MeshflSettings, task_id: str, path: Path, *, timeout: float = 10.0) -> int:
    """Snapshot ``task_id``'s events from the bus into ``path`` (see the module docstring)."""
    events = events_from_bus(settings, task_id, timeout=timeout)
    if not events:
        raise ReplayError(f"no events of task {task_id!r} on {settings.topic_prefix}*")
    source = f"{settings.bootstrap_servers}/{settings.topic_prefix}"
    return write_events(events, path, task_id=task_id, source=source)


def file_metadata(path: Path) -> dict[str, str]:
    """The ``meshfl.*`` metadata of an export file (task id, source, export time)."""
    try:
        with path.open("rb") as handle:
            reader = fastavro.reader(handle)
            return {k: v for k, v in reader.metadata.items() if k.startswith("meshfl.")}
    except (OSError, ValueError) as exc:
        raise ReplayError(f"cannot read {path} as an Avro container file: {exc}") from exc


def events_from_file(path: Path, *, codec: EventCodec | None = None) -> list[LoggedEvent]:
    """Every event of an export file, decoded; raises ``ReplayError`` on an unreadable file."""
    codec = codec or file_codec()
    try:
        with path.open("rb") as handle:
            return [from_record(record, codec) for record in fastavro.reader(handle)]  # type: ignore[arg-type]
    except (OSError, ValueError, CodecError) as exc:
        raise ReplayError(f"cannot read {path} as a meshfl export: {exc}") from exc
