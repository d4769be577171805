"""A whole federation over the real broker: 3 hospital domains, 3 rounds."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from governance.service import GovernanceService
from meshfl.domain.data import load_xy_file
from meshfl.domain.training import evaluate
from meshfl.events import DecisionOutcome, GovernanceDecision, ModelUpdate, ModelVersion
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire, tensors_sha256
from meshfl.topics import Topic
from tests.federation.conftest import HOSPITALS, Threads, events, hospital_task, wait_for

pytestmark = pytest.mark.kafka


def _versions(settings: MeshflSettings, task_id: str) -> list[ModelVersion]:
    found = [
        e
        for e in events(settings, Topic.MODEL_VERSIONS)
        if isinstance(e, ModelVersion) and e.task_id == task_id
    ]
    return sorted(found, key=lambda v: v.version)


def test_three_domains_three_rounds(settings: MeshflSettings, mesh_root: Path, daemons: Threads) -> None:
    task = hospital_task(mesh_root, rounds=3)
    service = GovernanceService(settings, [task], exit_when_complete=False)
    daemons.start("governance", service.run)
    for name in HOSPITALS:
        daemons.start_agent(settings, mesh_root / name)

    wait_for(
        lambda: len(_versions(settings, task.id)) >= 4,
        timeout=180,
        what="versions 0..3",
        check=daemons.check,
    )
    versions = _versions(settings, task.id)
    assert [v.version for v in versions] == [0, 1, 2, 3]
    for parent, child in itertools.pairwise(versions):
        assert child.parent_version == parent.version
        assert child.round == parent.round + 1
        assert sorted(child.contributing_domains) == HOSPITALS
        assert len(child.contributing_updates) == 3
        assert child.sha256 == tensors_sha256(child.tensors)

    updates = [e for e in events(settings, Topic.UPDATES) if isinstance(e, ModelUpdate)]
    assert sorted((u.domain, u.round) for u in updates) == sorted(
        (d, r) for d in HOSPITALS for r in (1, 2, 3)
    )
    decisions = [e for e in events(settings, Topic.DECISIONS) if isinstance(e, GovernanceDecision)]
    accepted = {d.update_id for d in decisions if d.outcome == DecisionOutcome.ACCEPTED}
    assert accepted == {u.update_id for u in updates}
    used = {uid for v in versions for uid in v.contributing_updates}
    assert used == accepted

    x_test, y_test = load_xy_file(mesh_root / "_testsets" / "breast-cancer-test.parquet", task)
    first = evaluate(task.model, from_wire(versions[0].tensors), x_test, y_test)
    last = evaluate(task.model, from_wire(versions[-1].tensors), x_test, y_test)
    assert last["accuracy"] > max(first["accuracy"], 0.85)
