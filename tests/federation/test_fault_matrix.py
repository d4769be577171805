"""The fault matrix: governance SIGKILLed at every point of a round, agents killed and paused mid-round.

Every fault uses the test hooks of ``meshfl.faults`` (``MESHFL_KILL_AT`` / ``MESHFL_FAIL_AT``, inert
unless set) to die at an exact point, then asserts what the exactly-once argument promises: the final
models are byte-identical to an uninterrupted run (run side by side, on its own topics), nothing is
lost, nothing decided or published twice.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from meshfl.bus import ensure_topics
from meshfl.events import DecisionOutcome, RoundPolicy
from meshfl.settings import MeshflSettings
from tests.federation.conftest import Processes, hospital_task, wait_for
from tests.federation.faults_helpers import (
    accepted,
    assert_exactly_once,
    decisions,
    small_tasks,
    task_args,
    versions,
    wait_for_log,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(1200)]  # two federations side by side

DOMAINS = ("digits-retail", "digits-finance", "hospital-central", "hospital-north")
KILLS = [
    {"MESHFL_KILL_AT": "governance.after-consume:2"},
    {"MESHFL_KILL_AT": "governance.mid-aggregation"},
    {"MESHFL_KILL_AT": "governance.before-commit:2"},
    {"MESHFL_FAIL_AT": "governance.commit", "MESHFL_KILL_AT": "governance.during-abort"},
    {"MESHFL_FAIL_AT": "governance.commit:2"},  # aborts, rewinds, rebuilds and goes on to the end
]


def _start_federation(procs: Processes, args: list[str], mesh_root: Path, env: dict[str, str]) -> None:
    procs.start("governance-0", *args, env=env)
    for domain in DOMAINS:
        procs.start(domain, "domain", "run", "--domain", str(mesh_root / domain))


def test_governance_killed_at_every_point_gives_the_uninterrupted_models(
    processes: Processes, mesh_root: Path, settings: MeshflSettings, tmp_path: Path
) -> None:
    tasks = small_tasks(mesh_root, rounds=3)
    clean_settings = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "clean."})
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    clean = Processes(settings=clean_settings, log_dir=clean_dir)
    for s in (settings, clean_settings):
        ensure_topics(s)
    try:
        _start_federation(clean, ["governance", "run", *task_args(tasks, clean_dir)], mesh_root, {})
        args = ["governance", "run", *task_args(tasks, processes.log_dir)]
        _start_federation(processes, args, mesh_root, KILLS[0])
        for n, env in enumerate(KILLS[1:], start=1):
            proc = processes.procs[f"governance-{n - 1}"]
            wait_for(
                lambda proc=proc: proc.poll() is not None, timeout=400, what=f"kill point {KILLS[n - 1]}"
            )
            assert proc.returncode == -signal.SIGKILL
            processes.procs.pop(f"governance-{n - 1}")
            processes.start(f"governance-{n}", *args, env=env)
        for s in (settings, clean_settings):
            for task in tasks:
                wait_for(
                    lambda s=s, task=task: len(versions(s, task.id)) >= task.rounds + 1,
                    timeout=300,
                    what=f"{task.id}: all versions",
                )
        assert "transaction failed; aborting" in processes.log(f"governance-{len(KILLS) - 1}")
    finally:
        clean.stop_all()
        processes.stop_all()
    assert_exactly_once(settings, tasks)
    for task in tasks:
        assert [v.sha256 for v in versions(settings, task.id)] == [
            v.sha256 for v in versions(clean_settings, task.id)
        ]


def test_an_agent_killed_mid_chunked_upload_is_accepted_once(
    processes: Processes, mesh_root: Path, settings: MeshflSettings
) -> None:
    # 16 KiB messages: the digits MLP update (about 38 KB) goes out in three chunks.
    settings = settings.model_copy(update={"max_message_bytes": 16_384})
    processes.settings = settings
    task = small_tasks(mesh_root, rounds=1)[0]
    ensure_topics(settings)
    processes.start("governance", "governance", "run", *task_args([task], processes.log_dir))
    wait_for(lambda: versions(settings, task.id), timeout=300, what="version 0")
    victim = mesh_root / "digits-retail"
    doomed = processes.start(
        "digits-retail", "domain", "run", "--domain", str(victim), env={"MESHFL_KILL_AT": "producer.chunk:2"}
    )
    wait_for(lambda: doomed.poll() is not None, timeout=300, what="the agent to die after two chunks")
    processes.procs.pop("digits-retail")
    processes.start("digits-retail-again", "domain", "run", "--domain", str(victim))
    processes.start("digits-finance", "domain", "run", "--domain", str(mesh_root / "digits-finance"))
    wait_for(lambda: len(versions(settings, task.id)) >= 2, timeout=400, what="version 1")
    processes.stop_all()
    mine = [d for d in decisions(settings) if d.domain == "digits-retail"]
    assert [d.outcome for d in mine] == [DecisionOutcome.ACCEPTED]
    assert mine[0].update_id in versions(settings, task.id)[1].contributing_updates
    assert_exactly_once(settings, [task])


def test_a_paused_agent_is_rejected_as_stale_then_catches_up(
    processes: Processes, mesh_root: Path, settings: MeshflSettings
) -> None:
    # The deadline leaves the slow domain (4 s of simulated training) time to make round 2 once it is
    # resumed; round 1 closes without it only because it is stopped past the deadline.
    policy = RoundPolicy(min_domains=2, deadline_seconds=20.0)
    task = hospital_task(mesh_root, rounds=2, round_policy=policy, local_epochs=1)
    ensure_topics(settings)
    processes.start("governance", "governance", "run", *task_args([task], processes.log_dir))
    wait_for(lambda: versions(settings, task.id), timeout=300, what="version 0")
    for domain in ("hospital-central", "hospital-north"):
        processes.start(domain, "domain", "run", "--domain", str(mesh_root / domain))
    # The slow domain holds its round-1 update for a while; it is paused in the middle of that.
    slow = processes.start(
        "hospital-south",
        "domain",
        "run",
        "--domain",
        str(mesh_root / "hospital-south"),
        "--simulate-delay",
        "4",
    )
    wait_for_log(processes, "hospital-south", "training", timeout=300, round=1)
    slow.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: len(versions(settings, task.id)) >= 2, timeout=300, what="round 1 closed without it")
    finally:
        slow.send_signal(signal.SIGCONT)
    wait_for(lambda: len(versions(settings, task.id)) >= 3, timeout=300, what="round 2")

    def south_decisions() -> list:
        found = decisions(settings)
        return [d for d in found if d.domain == "hospital-south" and d.source_offset is not None]

    wait_for(lambda: len(south_decisions()) >= 2, timeout=120, what="both of the slow domain's decisions")
    processes.stop_all()
    south = south_decisions()
    stale = [d for d in south if d.round == 1]
    assert [d.outcome for d in stale] == [DecisionOutcome.REJECTED], stale
    assert any(d.round == 2 and d.outcome == DecisionOutcome.ACCEPTED for d in south), south
    assert accepted(settings, task.id)
