"""Faults of a split federation on the broker: a domain that drops out mid-epoch (its agent stops dead,
nothing more from it) fails that attempt with a decision and the epoch completes once it is back;
governance, a real process, SIGKILLed mid-epoch resumes from the last completed epoch; and the audit
replay of the whole log reproduces every version. Domains run as threads (they start in no time),
governance as a process (so it can be killed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshfl.bus import ensure_topics, read_all
from meshfl.cli import app
from meshfl.events import DecisionOutcome, GovernanceDecision
from meshfl.identity.local import identity_env, provision_local
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from meshfl.vertical.agent import SplitAgent
from meshfl.vertical.datasets import breast_cancer_split, paper_task
from meshfl.vertical.events import (
    SplitCommand,
    SplitEpoch,
    SplitLabelsAt,
    SplitModelVersion,
    SplitReport,
    SplitReportKind,
)
from tests.federation.conftest import Processes, Threads, wait_for

pytestmark = pytest.mark.kafka


def _of(settings: MeshflSettings, topic: Topic, kind: type, task_id: str) -> list:  # type: ignore[type-arg]
    return [
        env.event
        for env in read_all(settings, topic)
        if isinstance(env.event, kind) and getattr(env.event, "task_id", None) == task_id
    ]


def _ready_in(settings: MeshflSettings, task_id: str, epoch: int, attempt: int, parties: int) -> bool:
    reports = _of(settings, Topic.SPLIT_CONTROL, SplitReport, task_id)
    ready = {
        r.party
        for r in reports
        if r.kind == SplitReportKind.READY and (r.epoch, r.attempt) == (epoch, attempt)
    }
    return len(ready) == parties


def test_domain_and_governance_killed_mid_epoch(
    settings: MeshflSettings, tmp_path: Path, processes: Processes, daemons: Threads
) -> None:
    data = breast_cancer_split(tmp_path / "domains")
    task = paper_task(
        data,
        task_id="split-faults",
        labels_at=SplitLabelsAt.DOMAIN,
        epochs=2,
        batch_size=32,
        learning_rate=3e-3,
        batch_timeout_seconds=8.0,
    )
    task_file = tmp_path / "split.json"
    task_file.write_text(json.dumps({"kind": "vertical", **task.model_dump(mode="json")}))
    ensure_topics(settings)
    provision_local(settings, tmp_path / "keys", [data.root / name for name in data.domains])
    governance = ("governance", "run", "--tasks", str(task_file), "--exit-when-complete")
    processes.start("governance", *governance)
    stops = {}
    for name in data.domains:
        agent = SplitAgent(settings, data.root / name, step_delay=0.3)
        stops[name] = daemons.start(f"split-{name}", agent.run)

    # 1. a domain dies in the middle of epoch 1
    wait_for(lambda: _ready_in(settings, task.id, 1, 1, 3), timeout=180, what="epoch 1 under way")
    stops["pathology"].set()
    wait_for(
        lambda: any(
            d.domain == "pathology" for d in _of(settings, Topic.DECISIONS, GovernanceDecision, task.id)
        ),
        timeout=120,
        what="the decision failing epoch 1",
    )
    assert _of(settings, Topic.SPLIT_VERSIONS, SplitModelVersion, task.id) == []
    daemons.start("split-pathology-again", SplitAgent(settings, data.root / "pathology", step_delay=0.3).run)

    # 2. governance dies in the middle of epoch 2
    wait_for(lambda: _ready_in(settings, task.id, 2, 1, 3), timeout=180, what="epoch 2 under way")
    processes.kill("governance")
    processes.start("governance", *governance)
    wait_for(
        lambda: "governance" not in processes.procs or processes.procs["governance"].poll() is not None,
        timeout=240,
        what="governance to complete the task",
    )
    assert processes.procs.pop("governance").returncode == 0, processes.log("governance")

    versions = _of(settings, Topic.SPLIT_VERSIONS, SplitModelVersion, task.id)
    # on a loaded machine a healthy party may also stall past the timeout: then an extra attempt, no harm
    assert [(v.version, v.parent_version) for v in versions] == [(1, None), (2, 1)]
    assert versions[0].attempt >= 2 and versions[1].attempt >= 2
    decisions = _of(settings, Topic.DECISIONS, GovernanceDecision, task.id)
    assert all(d.outcome == DecisionOutcome.REJECTED and d.policy == "split_epoch" for d in decisions)
    assert any(d.round == 1 and d.domain == "pathology" for d in decisions)
    assert any(d.round == 2 and "governance restarted" in d.reason for d in decisions)
    commands = _of(settings, Topic.SPLIT_CONTROL, SplitEpoch, task.id)
    aborted = {(c.epoch, c.attempt) for c in commands if c.command == SplitCommand.ABORT}
    assert {(1, 1), (2, 1)} <= aborted

    # 3. the audit replays the vertical task's log: every version's top reproduces
    result = CliRunner(env=identity_env(settings, with_private_key=False)).invoke(
        app,
        [
            "audit",
            "replay",
            "--task",
            task.id,
            "--json",
            "--bootstrap",
            settings.bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [v["version"] for v in report["versions"]] == [1, 2]
    assert all(v["reproduced"] for v in report["versions"])
    assert [f for f in report["findings"] if f["severity"] == "error"] == []  # every event signed
    assert len([f for f in report["findings"] if f["kind"] == "failed_attempt"]) == len(decisions) >= 2
