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

from meshfl.codec import SchemaStore, SingleObjectCodec, schemas_dir
from meshfl.errors import CodecError
from meshfl.events import EVENT_TYPES, SIGNED_EVENT_TYPES, Event, KeyEvent, ModelUpdate
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
    # every other event was released as version 1
    expected = [] if event_type in NEW_SINCE_V1 or event_type in SPLIT_EVENT_TYPES else ["1"]
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
    (v1,) = store.released(event_type.AVRO_NAME)
    current = store.current(event_type.AVRO_NAME)
    assert v1.fingerprint != current.fingerprint
    added = [f for f in current.schema["fields"] if f["name"] not in {g["name"] for g in v1.schema["fields"]}]
    others = OTHER_ADDITIONS.get(event_type.AVRO_NAME, {})
    assert {f["name"]: f["default"] for f in added if f["name"] in others} == others
    added = [f for f in added if f["name"] not in others]
    assert [(f["name"], f["default"]) for f in added] == [("signature", None)]
    null, record = added[0]["type"]
    assert null == "null" and record["name"] == "io.meshfl.v1.Signature"
    assert [f["name"] for f in record["fields"]] == ["signer", "key_id", "timestamp", "sequence", "value"]
    assert _compatible(reader=v1.schema, writer=current.schema)  # v1 readers skip the new field


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
    (v1,) = store.released(UPDATE)
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
