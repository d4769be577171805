"""A federation whose every message is in the Confluent wire format against a real Schema Registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from governance.service import GovernanceService
from meshfl.codec import RegistryCodec, default_store
from meshfl.events import DecisionOutcome, GovernanceDecision, ModelUpdate, ModelVersion
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.bus.bus_helpers import read_raw
from tests.federation.conftest import HOSPITALS, Threads, events, hospital_task, wait_for

pytestmark = pytest.mark.kafka


def test_one_round_over_the_registry_wire_format(
    settings: MeshflSettings, schema_registry_url: str, mesh_root: Path, daemons: Threads
) -> None:
    settings = settings.model_copy(update={"schema_registry_url": schema_registry_url})
    task = hospital_task(mesh_root, rounds=1)
    daemons.start("governance", GovernanceService(settings, [task], exit_when_complete=False).run)
    for name in HOSPITALS:
        daemons.start_agent(settings, mesh_root / name)

    def versions() -> list[ModelVersion]:
        found = events(settings, Topic.MODEL_VERSIONS)
        return [e for e in found if isinstance(e, ModelVersion) and e.task_id == task.id]

    wait_for(lambda: len(versions()) >= 2, timeout=240, what="versions 0 and 1", check=daemons.check)
    assert sorted(v.version for v in versions()) == [0, 1]

    inspector = SchemaRegistryClient({"url": schema_registry_url})
    reader = RegistryCodec(schema_registry_url, default_store(), client=inspector)
    for topic, event_type in [
        (Topic.UPDATES, ModelUpdate),
        (Topic.DECISIONS, GovernanceDecision),
        (Topic.MODEL_VERSIONS, ModelVersion),
    ]:
        records = read_raw(settings, topic)
        assert records, topic
        ids = set()
        for value, _headers in records:
            assert value[0] == 0, f"{topic}: not Confluent framing: {value[:5].hex()}"
            ids.add(int.from_bytes(value[1:5], "big"))
            reader.decode(value)  # every record decodes with the schema fetched by its id
        subject_id = inspector.get_latest_version(event_type.AVRO_NAME).schema_id
        assert subject_id in ids, f"{topic}: no record framed with the {event_type.AVRO_NAME} subject's id"

    updates = [e for e in events(settings, Topic.UPDATES) if isinstance(e, ModelUpdate)]
    assert sorted(u.domain for u in updates) == HOSPITALS
    accepted = {
        d.update_id
        for d in events(settings, Topic.DECISIONS)
        if isinstance(d, GovernanceDecision) and d.outcome == DecisionOutcome.ACCEPTED
    }
    assert accepted == {u.update_id for u in updates}
