"""Audit against the real broker: a federation produced to Kafka, replayed, exported, tampered with."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from governance.audit import events_from_bus, events_from_file, export_task, replay
from meshfl.bus import EventProducer, ensure_topics, read_all
from meshfl.cli.audit import app as audit_app
from meshfl.events import ModelUpdate
from meshfl.identity.local import identity_env
from meshfl.identity.trust import governance_public_key, governance_signer
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.audit.audit_builders import (
    DOMAINS,
    Federation,
    Signers,
    forged,
    make_task,
    product,
    run_federation,
)

pytestmark = pytest.mark.kafka


def bus_signers(settings: MeshflSettings) -> Signers:
    """Governance signs with the session's key (the one pinned in ``settings``)."""
    return Signers(governance=governance_signer(settings))


def publish_federation(settings: MeshflSettings) -> Federation:
    """Updates go to the bus one by one; decisions name the offsets Kafka gave them. All signed."""
    ensure_topics(settings)
    signers = bus_signers(settings)
    task = make_task()
    with EventProducer(settings) as producer:
        for registration in signers.key_events():
            producer.produce(Topic.KEYS, registration, key=f"{registration.domain}/{registration.key_id}")
        producer.produce(Topic.TASKS, signers.sign(task), key=task.id)
        for domain in DOMAINS:
            producer.produce(Topic.CATALOG, signers.sign(product(domain)), key=f"{domain}.table")
        producer.flush()

        def place(update: ModelUpdate) -> tuple[int, int]:
            signed = signers.sign(update)
            producer.produce(Topic.UPDATES, signed, key=update.domain)
            producer.flush()
            found = [e for e in read_all(settings, Topic.UPDATES) if e.event == signed]
            return (found[-1].partition, found[-1].offset)

        fed = run_federation(task, place)
        for decision in fed.decisions:
            producer.produce(Topic.DECISIONS, signers.sign(decision), key=task.id)
        for version in fed.versions:
            producer.produce(Topic.MODEL_VERSIONS, signers.sign(version), key=task.id)
        producer.flush()
    return fed


@pytest.fixture
def federation(settings: MeshflSettings) -> Federation:
    return publish_federation(settings)


def _cli(settings: MeshflSettings, *args: str) -> tuple[int, str]:
    common = ["--bootstrap", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix]
    runner = CliRunner(env=identity_env(settings, with_private_key=False))
    result = runner.invoke(audit_app, [*args, *common])
    return result.exit_code, result.output


def test_replay_from_the_bus_then_forgery(
    settings: MeshflSettings, federation: Federation, tmp_path: Path
) -> None:
    task_id = federation.task.id
    result = replay(
        events_from_bus(settings, task_id), task_id, governance_key=governance_public_key(settings)
    )
    assert result.ok, result.findings
    assert [v.version for v in result.versions] == [0, 1, 2, 3]

    code, out = _cli(settings, "replay", "--task", task_id, "--json")
    assert code == 0, out
    assert '"reproduced": true' in out and '"reproduced": false' not in out

    export = tmp_path / "before.avro"
    assert export_task(settings, task_id, export) == len(events_from_bus(settings, task_id))
    code, out = _cli(settings, "replay", "--task", task_id, "--file", str(export))
    assert code == 0, out

    target, at = federation.updates[2]
    with EventProducer(settings) as producer:  # the domain itself re-publishes its id with other weights
        producer.produce(Topic.UPDATES, bus_signers(settings).sign(forged(target)), key=target.domain)
    tampered = replay(
        events_from_bus(settings, task_id), task_id, governance_key=governance_public_key(settings)
    )
    assert not tampered.ok
    [finding] = [f for f in tampered.findings if f.kind == "forged_update_copy"]
    assert finding.update_id == target.update_id and finding.offset != at[1]
    code, out = _cli(settings, "replay", "--task", task_id)
    assert code == 1 and target.update_id in out.replace("\n", "")

    after = tmp_path / "after.avro"
    export_task(settings, task_id, after)
    from_file = replay(events_from_file(after), task_id, governance_key=governance_public_key(settings))
    assert [f.kind for f in from_file.findings] == [f.kind for f in tampered.findings]
    assert not from_file.ok


def test_lineage_and_report_commands(
    settings: MeshflSettings, federation: Federation, tmp_path: Path
) -> None:
    task_id = federation.task.id
    code, out = _cli(settings, "lineage", "--task", task_id, "--json")
    assert code == 0, out
    assert all(domain in out for domain in DOMAINS)
    code, out = _cli(settings, "report", "--task", task_id, "--out", str(tmp_path / "report"))
    assert code == 0, out
    assert "every version reproduces" in (tmp_path / "report" / "index.html").read_text()
    code, out = _cli(settings, "replay", "--task", "no-such-task")
    assert code == 2
