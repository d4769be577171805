"""Schema evolution, checked with the Apache Avro reference checker and through the codec itself."""

from __future__ import annotations

import copy
import io
import json
import shutil
from pathlib import Path
from typing import Any

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro import schemaless_writer

from meshfl.codec import SchemaStore, SingleObjectCodec, StoredSchema, schemas_dir
from meshfl.errors import CodecError
from meshfl.events import EVENT_TYPES, SIGNED_EVENT_TYPES, Chunk, Event, KeyEvent, ModelUpdate
from meshfl.state_events import GovernanceState
from meshfl.vertical.events import SPLIT_EVENT_TYPES

from .conftest import sample_events

UPDATE = "io.meshfl.v1.ModelUpdate"


def _compatible(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )
    return result.compatibility is SchemaCompatibilityType.compatible


NEW_SINCE_V1 = {KeyEvent, GovernanceState}


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_current_reads_every_released_version(store: SchemaStore, event_type: type[Event]) -> None:
    released = store.released(event_type.AVRO_NAME)
    # every other event was released as version 1; version 2 froze the contract before signature
    # scheme 2 (Chunk had not changed since 1, so 2 holds no new Chunk)
    if event_type in NEW_SINCE_V1 or event_type in SPLIT_EVENT_TYPES:
        expected = ["2"]
    else:
        expected = ["1"] if event_type is Chunk else ["1", "2"]
    assert [stored.version for stored in released] == expected
    current = store.current(event_type.AVRO_NAME)
    for writer in released:
        assert _compatible(reader=current.schema, writer=writer.schema), f"{writer.version} -> current"


OTHER_ADDITIONS: dict[str, dict[str, object]] = {
    "io.meshfl.v1.TrainingTask": {"lr_schedule": "constant"},  # v1 tasks keep a constant learning rate
    "io.meshfl.v1.GovernanceDecision": {"base_version": None},  # older decisions name no base version
}
"""Fields added since v1 besides the signature, each with the default a v1 writer's messages get."""


@pytest.mark.parametrize(
    "event_type", [t for t in SIGNED_EVENT_TYPES if t not in NEW_SINCE_V1], ids=lambda cls: cls.__name__
)
def test_signature_is_a_real_backward_and_forward_compatible_change(
    store: SchemaStore, event_type: type[Event]
) -> None:
    v1 = _release(store, event_type.AVRO_NAME, "1")
    current = store.current(event_type.AVRO_NAME)
    assert v1.fingerprint != current.fingerprint
    added = [f for f in current.schema["fields"] if f["name"] not in {g["name"] for g in v1.schema["fields"]}]
    others = OTHER_ADDITIONS.get(event_type.AVRO_NAME, {})
    assert {f["name"]: f["default"] for f in added if f["name"] in others} == others
    added = [f for f in added if f["name"] not in others]
    assert [(f["name"], f["default"]) for f in added] == [("signature", None)]
    null, record = added[0]["type"]
    assert null == "null" and record["name"] == "io.meshfl.v1.Signature"
    assert [f["name"] for f in record["fields"]] == [*_SIGNATURE_FIELDS_2, "scheme"]
    assert _compatible(reader=v1.schema, writer=current.schema)  # v1 readers skip the new field


_SIGNATURE_FIELDS_2 = ["signer", "key_id", "timestamp", "sequence", "value"]


def _release(store: SchemaStore, full_name: str, version: str) -> StoredSchema:
    (stored,) = [s for s in store.released(full_name) if s.version == version]
    return stored


def _signature_record(schema: dict[str, Any]) -> dict[str, Any]:
    (field,) = [f for f in schema["fields"] if f["name"] == "signature"]
    null, record = field["type"]
    assert null == "null"
    return record


@pytest.mark.parametrize("event_type", SIGNED_EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_signature_scheme_is_the_only_change_since_release_2(
    store: SchemaStore, event_type: type[Event]
) -> None:
    """Released 2 is what signed every event on the logs so far (scheme 1): its messages must read with
    the current schema, and the only difference is the Signature's nullable ``scheme`` (null = 1)."""
    released = _release(store, event_type.AVRO_NAME, "2")
    current = store.current(event_type.AVRO_NAME)
    old, new = _signature_record(released.schema), _signature_record(current.schema)
    assert [f["name"] for f in old["fields"]] == _SIGNATURE_FIELDS_2
    assert new["fields"][: len(old["fields"])] == old["fields"]
    (scheme,) = new["fields"][len(old["fields"]) :]
    assert (scheme["name"], scheme["type"], scheme["default"]) == ("scheme", ["null", "long"], None)
    strip = {**current.schema, "fields": [f for f in current.schema["fields"] if f["name"] != "signature"]}
    assert strip == {
        **released.schema,
        "fields": [f for f in released.schema["fields"] if f["name"] != "signature"],
    }
    assert _compatible(reader=current.schema, writer=released.schema)
    assert _compatible(reader=released.schema, writer=current.schema)


def _with_required_field(schema: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(schema)
    changed["fields"].append({"name": "nonce", "type": "long", "doc": "a new field without default"})
    return changed


def test_a_new_field_without_default_is_flagged(store: SchemaStore) -> None:
    current = store.current(UPDATE).schema
    assert not _compatible(reader=_with_required_field(current), writer=current)
    narrowed = copy.deepcopy(current)
    narrowed["fields"][0]["type"] = "long"  # update_id: string -> long
    assert not _compatible(reader=narrowed, writer=current)


def test_a_v1_message_decodes_with_the_current_reader(store: SchemaStore) -> None:
    """Framed by hand with the released schema, so nothing of the current writer is involved."""
    v1 = _release(store, UPDATE, "1")
    update = next(e for e in sample_events() if isinstance(e, ModelUpdate))
    datum = {key: value for key, value in update.to_avro().items() if key != "signature"}
    buffer = io.BytesIO()
    buffer.write(b"\xc3\x01" + v1.fingerprint)
    schemaless_writer(buffer, v1.parsed, datum)
    decoded = SingleObjectCodec(store).decode_as(buffer.getvalue(), ModelUpdate)
    assert decoded.signature is None
    assert decoded == update.model_copy(update={"signature": None})


def test_an_incompatible_reader_fails_as_a_codec_error(store: SchemaStore, tmp_path: Path) -> None:
    """A release whose schema the new current one cannot read: the codec says so instead of crashing."""
    root = tmp_path / "schemas"
    shutil.copytree(schemas_dir(), root, ignore=shutil.ignore_patterns("released"))
    shutil.copytree(schemas_dir(), root / "released" / "2", ignore=shutil.ignore_patterns("released"))
    path = root / "ModelUpdate.avsc"
    path.write_text(json.dumps(_with_required_field(json.loads(path.read_text()))))
    evolved = SchemaStore(root)
    old_writer_payload = SingleObjectCodec(store).encode(
        next(e for e in sample_events() if isinstance(e, ModelUpdate))
    )
    with pytest.raises(CodecError, match="nonce"):
        SingleObjectCodec(evolved).decode(old_writer_payload)
