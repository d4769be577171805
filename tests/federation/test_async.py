"""Asynchronous federation (FedBuff): versions keep coming while a slow domain is still training."""

from __future__ import annotations

from pathlib import Path

import pytest

from governance.service import GovernanceService
from meshfl.domain.agent import DomainAgent
from meshfl.domain.tasks import load_task_file
from meshfl.events import (
    DecisionOutcome,
    FederationMode,
    GovernanceDecision,
    ModelUpdate,
    ModelVersion,
    RoundPolicy,
    StrategySpec,
)
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.federation.conftest import Threads, events, register_domain, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FAST = ["digits-finance", "digits-logistics", "digits-marketing", "digits-retail"]
SLOW = "digits-support"
VERSIONS = 6


def test_async_mode_does_not_wait_for_a_slow_domain(
    settings: MeshflSettings, mesh_root: Path, daemons: Threads
) -> None:
    task = load_task_file(mesh_root / "tasks" / "digits.toml").model_copy(
        update={
            "rounds": VERSIONS,
            "mode": FederationMode.ASYNC,
            "strategy": StrategySpec(name="fedbuff"),
            "round_policy": RoundPolicy(min_domains=1, buffer_size=3, max_staleness=2, staleness_alpha=0.5),
        }
    )
    daemons.start("governance", GovernanceService(settings, [task]).run)
    for name in FAST:
        daemons.start_agent(settings, mesh_root / name)
    register_domain(settings, mesh_root / SLOW)
    slow = DomainAgent(settings, mesh_root / SLOW, heartbeat_interval=1.0, simulate_delay=6.0)
    daemons.start("slow-agent", slow.run)

    def versions() -> list[ModelVersion]:
        found = [e for e in events(settings, Topic.MODEL_VERSIONS) if isinstance(e, ModelVersion)]
        return sorted(found, key=lambda v: v.version)

    wait_for(
        lambda: versions() and versions()[-1].round >= VERSIONS,
        timeout=300,
        what="async versions",
        check=daemons.check,
    )
    published = versions()
    assert [v.version for v in published] == list(range(VERSIONS + 1))
    for version in published[1:]:
        assert len(version.contributing_updates) == 3  # every K = 3 accepted updates
    slow_versions = [v for v in published if SLOW in v.contributing_domains]
    assert len(slow_versions) < VERSIONS  # versions were made without waiting for the slow domain

    updates = {u.update_id: u for u in events(settings, Topic.UPDATES) if isinstance(u, ModelUpdate)}
    decisions = [d for d in events(settings, Topic.DECISIONS) if isinstance(d, GovernanceDecision)]
    for decision in decisions:
        update = updates.get(decision.update_id)
        if update is None or decision.outcome != DecisionOutcome.REJECTED:
            continue
        # the only rejections in a healthy async run are stale updates or the finished task
        assert decision.policy in {"task_and_round", "task_complete", "buffer_staleness"}, decision
