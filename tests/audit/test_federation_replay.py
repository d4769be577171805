"""A real federation (governance service and three hospital agents over the broker), then audited.

Governance folds each accepted update as it is decided (FedAvg): at no moment does it hold more than
the one update being decided, and the replay, folding in the order each version lists (the decision
order), reproduces every version bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from governance.audit import TaskLog, events_from_bus, events_from_file, export_task, lineage, replay
from governance.service import GovernanceService
from meshfl.bus import ensure_topics
from meshfl.events import DecisionOutcome, GovernanceDecision, ModelVersion
from meshfl.identity.trust import governance_public_key
from meshfl.metrics import METRICS
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire
from meshfl.topics import Topic
from tests.federation.conftest import HOSPITALS, Threads, events, hospital_task, wait_for

pytestmark = pytest.mark.kafka


def _latest(settings: MeshflSettings, task_id: str) -> int:
    found = [
        e.version
        for e in events(settings, Topic.MODEL_VERSIONS)
        if isinstance(e, ModelVersion) and e.task_id == task_id
    ]
    return max(found, default=-1)


def test_replay_of_a_real_federation(
    settings: MeshflSettings,
    mesh_root: Path,
    daemons: Threads,
    tmp_path: Path,
) -> None:
    ensure_topics(settings)
    task = hospital_task(mesh_root, rounds=3)
    METRICS.round_held_bytes_max.labels(task.id).set(0)  # the service runs in this process
    daemons.start("governance", GovernanceService(settings, [task]).run)
    for name in HOSPITALS:
        daemons.start_agent(settings, mesh_root / name)
    wait_for(lambda: _latest(settings, task.id) >= 3, timeout=180, what="versions 0..3", check=daemons.check)
    daemons.stop_all()

    first = next(e for e in events(settings, Topic.MODEL_VERSIONS) if isinstance(e, ModelVersion))
    model_bytes = sum(t.numel() * t.element_size() for t in from_wire(first.tensors).values())
    held = METRICS.round_held_bytes_max.labels(task.id)._value.get()
    assert 0 < held <= model_bytes, f"governance held {held} bytes of updates at once; one is {model_bytes}"
    accepted = [
        e.update_id
        for e in events(settings, Topic.DECISIONS)
        if isinstance(e, GovernanceDecision) and e.outcome == DecisionOutcome.ACCEPTED
    ]
    versions = sorted(
        (e for e in events(settings, Topic.MODEL_VERSIONS) if isinstance(e, ModelVersion)),
        key=lambda v: v.version,
    )
    folded = [u for v in versions for u in v.contributing_updates]
    assert folded == accepted, "versions must list their updates in decision (fold) order"

    log_events = events_from_bus(settings, task.id)
    result = replay(log_events, task.id, governance_key=governance_public_key(settings))
    assert result.ok, result.findings
    assert [v.version for v in result.versions] == [0, 1, 2, 3]
    assert all(v.reproduced and v.self_hash_ok for v in result.versions)

    index = TaskLog.of(log_events, task.id)
    last = index.version(3)
    assert last is not None
    tree = lineage(index, 3)
    assert tree.domains == sorted(last.contributing_domains) == HOSPITALS
    assert all(u.data_products for u in tree.chain[0].updates)
    assert all(p.in_catalog for u in tree.chain[0].updates for p in u.data_products)

    path = tmp_path / "federation.avro"
    export_task(settings, task.id, path)
    from_file = replay(events_from_file(path), task.id, governance_key=governance_public_key(settings))
    assert from_file.ok
    assert [v.recomputed_sha256 for v in from_file.versions] == [v.recomputed_sha256 for v in result.versions]
