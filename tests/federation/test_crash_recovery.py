"""Exactly once across crashes: a SIGKILLed governance service and a restarted domain agent."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from meshfl.bus import ensure_topics
from meshfl.events import AgentProgress, DecisionOutcome, ModelUpdate, ModelVersion, TrainingTask
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.federation.conftest import HOSPITALS, Processes, events, hospital_task, wait_for, write_task
from tests.federation.faults_helpers import assert_exactly_once, decisions

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _versions(settings: MeshflSettings, task_id: str) -> list[ModelVersion]:
    found = [
        e
        for e in events(settings, Topic.MODEL_VERSIONS)
        if isinstance(e, ModelVersion) and e.task_id == task_id
    ]
    return sorted(found, key=lambda v: v.version)


def _updates(settings: MeshflSettings) -> list[ModelUpdate]:
    return [e for e in events(settings, Topic.UPDATES) if isinstance(e, ModelUpdate)]


def _run_federation(
    procs: Processes, task: TrainingTask, mesh_root: Path, *, crash: bool
) -> list[ModelVersion]:
    settings = procs.settings
    ensure_topics(settings)
    task_file = write_task(task, procs.log_dir / "task.json")
    procs.start("governance", "governance", "run", "--tasks", str(task_file))
    wait_for(lambda: len(_versions(settings, task.id)) >= 1, timeout=90, what="version 0")
    first, second, third = (mesh_root / name for name in HOSPITALS)
    procs.start("agent-1", "domain", "run", "--domain", str(first))
    procs.start("agent-2", "domain", "run", "--domain", str(second))
    if crash:
        # Two of three updates of round 1 are in and decided; the round waits for the third.
        wait_for(lambda: len(_updates(settings)) >= 2, timeout=120, what="two round-1 updates")
        wait_for(
            lambda: (
                "decision" in procs.log("governance") and procs.log("governance").count('"accepted"') >= 2
            ),
            timeout=60,
            what="two accepted decisions",
        )
        procs.kill("governance")
        procs.start("governance-2", "governance", "run", "--tasks", str(task_file))
    procs.start("agent-3", "domain", "run", "--domain", str(third))
    wait_for(lambda: len(_versions(settings, task.id)) >= task.rounds + 1, timeout=240, what="all versions")
    return _versions(settings, task.id)


def test_governance_sigkill_mid_round_gives_the_same_model(
    processes: Processes, mesh_root: Path, settings: MeshflSettings, tmp_path: Path
) -> None:
    task = hospital_task(mesh_root, rounds=2)
    crashed = _run_federation(processes, task, mesh_root, crash=True)
    processes.stop_all()

    clean_settings = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "clean."})
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    clean = Processes(settings=clean_settings, log_dir=clean_dir)
    try:
        reference = _run_federation(clean, task, mesh_root, crash=False)
    finally:
        clean.stop_all()

    assert [v.version for v in crashed] == [0, 1, 2]
    for version in crashed[1:]:
        assert len(version.contributing_updates) == 3  # no update lost, none counted twice
        assert len(set(version.contributing_updates)) == 3
    assert [v.sha256 for v in crashed] == [v.sha256 for v in reference]


def test_restarted_agent_never_publishes_a_round_twice(
    processes: Processes, mesh_root: Path, settings: MeshflSettings
) -> None:
    # The worst moment: its round-1 update is on the log (no transaction) and its progress is not.
    task = hospital_task(mesh_root, rounds=2)
    ensure_topics(settings)
    task_file = write_task(task, processes.log_dir / "task.json")
    processes.start("governance", "governance", "run", "--tasks", str(task_file))
    domain = mesh_root / HOSPITALS[0]
    doomed = processes.start(
        "agent", "domain", "run", "--domain", str(domain), env={"MESHFL_KILL_AT": "agent.before-progress"}
    )
    wait_for(lambda: doomed.poll() is not None, timeout=240, what="the agent to die before its progress")
    assert doomed.returncode == -signal.SIGKILL
    processes.procs.pop("agent")
    assert not [e for e in events(settings, Topic.AGENT_PROGRESS) if isinstance(e, AgentProgress)]
    processes.start("agent-again", "domain", "run", "--domain", str(domain))
    wait_for(
        lambda: any(isinstance(e, AgentProgress) for e in events(settings, Topic.AGENT_PROGRESS)),
        timeout=120,
        what="the progress of the round found on the log",
    )
    assert processes.terminate("agent-again") == 0  # SIGTERM: clean stop, exit code 0
    processes.start("agent-third", "domain", "run", "--domain", str(domain))
    wait_for(lambda: "progress restored" in processes.log("agent-third"), timeout=60, what="restart")
    for other in HOSPITALS[1:]:
        processes.start(f"agent-{other}", "domain", "run", "--domain", str(mesh_root / other))
    wait_for(lambda: len(_versions(settings, task.id)) >= 3, timeout=240, what="both rounds")
    processes.stop_all()

    mine = [(u.round, u.update_id) for u in _updates(settings) if u.domain == HOSPITALS[0]]
    assert sorted(r for r, _ in mine) == [1, 2]  # one update a round: none trained and published again
    progress = [e for e in events(settings, Topic.AGENT_PROGRESS) if isinstance(e, AgentProgress)]
    assert max(p.last_round for p in progress if p.domain == HOSPITALS[0]) == 2
    assert_exactly_once(settings, [task])
    assert "own update found on the log" in processes.log("agent-again")
    outcomes = [d.outcome for d in decisions(settings) if d.domain == HOSPITALS[0]]
    assert outcomes == [DecisionOutcome.ACCEPTED] * 2  # no second copy for governance to refuse
