"""Central DP across a governance SIGKILL: the restored updates are released clipped and noised, and
the auditor with the secret reproduces every version (weights and FedAdam moments) bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest

from governance.audit import events_from_bus, replay
from meshfl.bus import ensure_topics
from meshfl.events import ModelUpdate, ModelVersion, PrivacyPolicy, StrategySpec
from meshfl.identity.trust import governance_public_key
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.federation.conftest import HOSPITALS, Processes, events, hospital_task, wait_for, write_task

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SECRET = "the-dp-secret-of-governance-and-auditors-only"


def _versions(settings: MeshflSettings, task_id: str) -> list[ModelVersion]:
    found = [e for e in events(settings, Topic.MODEL_VERSIONS) if isinstance(e, ModelVersion)]
    return sorted((v for v in found if v.task_id == task_id), key=lambda v: v.version)


def test_dp_federation_survives_a_sigkill_mid_round_and_replays_with_the_secret(
    processes: Processes, mesh_root: Path, settings: MeshflSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHFL_DP_SECRET", SECRET)
    privacy = PrivacyPolicy(clip_norm=0.5, noise_multiplier=1.0)
    task = hospital_task(mesh_root, rounds=2, privacy=privacy, strategy=StrategySpec(name="fedadam"))
    ensure_topics(settings)
    task_file = write_task(task, processes.log_dir / "task.json")
    processes.start("governance", "governance", "run", "--tasks", str(task_file))
    wait_for(lambda: len(_versions(settings, task.id)) >= 1, timeout=240, what="version 0")
    first, second, third = (mesh_root / name for name in HOSPITALS)
    processes.start("agent-1", "domain", "run", "--domain", str(first))
    processes.start("agent-2", "domain", "run", "--domain", str(second))
    # Two of three round-1 updates accepted (and clipped) when governance dies; the round waits.
    wait_for(
        lambda: sum(isinstance(e, ModelUpdate) for e in events(settings, Topic.UPDATES)) >= 2,
        timeout=300,
        what="two round-1 updates",
    )
    wait_for(
        lambda: processes.log("governance").count('"accepted"') >= 2,
        timeout=180,
        what="two accepted decisions",
    )
    processes.kill("governance")
    processes.start("governance-2", "governance", "run", "--tasks", str(task_file))
    processes.start("agent-3", "domain", "run", "--domain", str(third))
    wait_for(lambda: len(_versions(settings, task.id)) >= 3, timeout=600, what="all versions")

    versions = _versions(settings, task.id)
    assert [v.version for v in versions] == [0, 1, 2]
    for version in versions[1:]:
        assert len(set(version.contributing_updates)) == 3  # restored, none lost, none twice
        assert version.privacy is not None and version.server_state
    result = replay(
        events_from_bus(settings, task.id),
        task.id,
        governance_key=governance_public_key(settings),
        dp_secret=SECRET.encode(),
    )
    assert result.ok, result.findings
    assert all(check.reproduced for check in result.versions)
