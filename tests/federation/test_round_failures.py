"""Rounds that cannot close say so: only a strategy's declared "too few updates" waits.

Before, any ``ValueError`` while aggregating meant "wait for more updates", forever in a sync round
whose domains were all in, with nothing on the bus to say why. Now an unexpected strategy error is a
decision (policy ``aggregation_error``), a failed task state (``meshfl governance status`` exits 4) and a
clear log line; the service stays up. A declared ``TooFewUpdates`` (Bulyan short of 4f+3) waits: see
``test_rejections.test_a_strategy_that_cannot_aggregate_waits_and_the_service_stays_up``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import governance.closing
from governance.service import GovernanceService
from governance.task_status import TaskPhase, task_statuses
from meshfl.cli import app
from meshfl.events import GovernanceDecision, ModelVersion
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.federation.conftest import HOSPITALS, Threads, events, hospital_task, wait_for

pytestmark = pytest.mark.kafka


def _statuses(settings: MeshflSettings) -> dict[str, TaskPhase]:
    found = task_statuses(
        events(settings, Topic.TASKS),
        events(settings, Topic.MODEL_VERSIONS),
        events(settings, Topic.DECISIONS),
    )
    return {s.task_id: s.phase for s in found}


def _decisions(settings: MeshflSettings, policy: str) -> list[GovernanceDecision]:
    return [
        e
        for e in events(settings, Topic.DECISIONS)
        if isinstance(e, GovernanceDecision) and e.policy == policy
    ]


def test_a_strategy_error_fails_the_round_with_a_decision(
    settings: MeshflSettings, mesh_root: Path, daemons: Threads, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> ModelVersion:
        raise RuntimeError("a bug in the strategy")  # what an unexpected failure looks like

    monkeypatch.setattr(governance.closing, "aggregate_version", broken)
    task = hospital_task(mesh_root, rounds=1)
    daemons.start("governance", GovernanceService(settings, [task]).run)
    for name in HOSPITALS:
        daemons.start_agent(settings, mesh_root / name)
    wait_for(lambda: _decisions(settings, "aggregation_error"), timeout=300, what="the error decision")
    (failure,) = _decisions(settings, "aggregation_error")
    assert failure.round == 1 and "a bug in the strategy" in failure.reason
    assert _statuses(settings)[task.id] == TaskPhase.FAILED
    result = CliRunner().invoke(
        app,
        [
            "governance",
            "status",
            "--bootstrap",
            settings.bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
        ],
    )
    assert result.exit_code == 4, result.output
    assert "failed" in result.output and "a bug in the strategy" in result.output
    daemons.check()  # the service is still up
