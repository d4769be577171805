"""Round policies over the real broker: a deadline that leaves a straggler behind, and central DP."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from governance.audit import events_from_bus, replay
from governance.service import GovernanceService
from meshfl.domain.agent import DomainAgent
from meshfl.events import (
    DecisionOutcome,
    GovernanceDecision,
    ModelVersion,
    PrivacyPolicy,
    RoundPolicy,
    StrategySpec,
)
from meshfl.identity.trust import governance_public_key
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.federation.conftest import HOSPITALS, Threads, events, hospital_task, register_domain, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _versions(settings: MeshflSettings) -> list[ModelVersion]:
    found = [e for e in events(settings, Topic.MODEL_VERSIONS) if isinstance(e, ModelVersion)]
    return sorted(found, key=lambda v: v.version)


def test_deadline_closes_the_round_without_the_straggler_and_says_so(
    settings: MeshflSettings, mesh_root: Path, daemons: Threads
) -> None:
    policy = RoundPolicy(min_domains=2, deadline_seconds=4.0)
    task = hospital_task(mesh_root, rounds=1, round_policy=policy)
    daemons.start("governance", GovernanceService(settings, [task]).run)
    fast, slow = HOSPITALS[:2], HOSPITALS[2]
    for name in fast:
        daemons.start_agent(settings, mesh_root / name)
    register_domain(settings, mesh_root / slow)
    straggler = DomainAgent(settings, mesh_root / slow, heartbeat_interval=1.0, simulate_delay=30.0)
    daemons.start("straggler", straggler.run)

    wait_for(lambda: len(_versions(settings)) >= 2, timeout=120, what="version 1", check=daemons.check)
    version = _versions(settings)[1]
    assert sorted(version.contributing_domains) == sorted(fast)
    decisions = [e for e in events(settings, Topic.DECISIONS) if isinstance(e, GovernanceDecision)]
    missing = [d for d in decisions if d.policy == "round_deadline"]
    assert [(d.domain, d.outcome) for d in missing] == [(slow, DecisionOutcome.REJECTED)]
    assert "straggler" in missing[0].reason


def test_central_dp_reports_the_budget_and_replays_with_the_secret(
    settings: MeshflSettings, mesh_root: Path, daemons: Threads
) -> None:
    secret = "governance-and-auditors-only-0123456789abcdef"
    dp_settings = settings.model_copy(update={"dp_secret": SecretStr(secret)})
    privacy = PrivacyPolicy(clip_norm=5.0, noise_multiplier=1.0, target_delta=1e-5)
    # FedAdam: its published moments are computed from the noised mean (issue 10), and replay them too
    task = hospital_task(mesh_root, rounds=2, privacy=privacy, strategy=StrategySpec(name="fedadam"))
    daemons.start("governance", GovernanceService(dp_settings, [task]).run)
    for name in HOSPITALS:
        daemons.start_agent(settings, mesh_root / name)

    wait_for(
        lambda: len(_versions(settings)) >= 3, timeout=180, what="two noised versions", check=daemons.check
    )
    first, second = _versions(settings)[1:3]
    assert first.privacy is not None and second.privacy is not None
    assert 0 < first.privacy.epsilon < second.privacy.epsilon  # the budget spent grows per release
    assert first.privacy.delta == pytest.approx(1e-5)
    assert first.server_state and set(first.metrics) == {"num_updates"}  # no example counts under DP
    accepted = [
        e
        for e in events(settings, Topic.DECISIONS)
        if isinstance(e, GovernanceDecision) and e.outcome == DecisionOutcome.ACCEPTED
    ]
    assert len(accepted) >= 6 and len({d.reason for d in accepted}) == 1  # no per-update norm published

    logged = events_from_bus(settings, task.id)
    pinned = governance_public_key(settings)
    result = replay(logged, task.id, governance_key=pinned, dp_secret=secret.encode())
    assert result.ok and all(v.reproduced for v in result.versions)  # weights and moments, bit for bit
    assert not replay(
        logged, task.id, governance_key=pinned, dp_secret=b"a guess of the right length, 32 bytes or more"
    ).ok  # not in the log
