"""Asynchronous federation (FedBuff): versions keep coming while a slow domain is still training.

Each buffered update is aggregated as its delta against the version it trained from (its own base), its
norm clipped against that base too (not against the version it lands in), and an audit replay
reproduces every version bit for bit from the log, stale and clipped updates included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from governance.audit import events_from_bus, replay
from governance.policies.transforms import reapply_transforms
from governance.rounds import aggregate_version
from governance.service import GovernanceService
from governance.strategies import ClientUpdate
from meshfl.domain.agent import DomainAgent
from meshfl.domain.tasks import load_task_file
from meshfl.events import (
    DecisionOutcome,
    DomainHeartbeat,
    FederationMode,
    GovernanceDecision,
    ModelUpdate,
    ModelVersion,
    RoundPolicy,
    StrategySpec,
    UpdateChecks,
)
from meshfl.identity.trust import governance_public_key
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire
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
            # deltas are ~1-5 here: most updates are clipped, each against the version it trained from
            "update_checks": UpdateChecks(max_l2_norm=1.0, norm_action="clip"),
        }
    )
    for name in FAST:
        daemons.start_agent(settings, mesh_root / name)
    register_domain(settings, mesh_root / SLOW)
    slow = DomainAgent(settings, mesh_root / SLOW, heartbeat_interval=1.0, simulate_delay=6.0)
    daemons.start("slow-agent", slow.run)
    # every agent up before the task is out: the four fast ones then train in step, K = 3 of them close
    # each version and the fourth's update lands in the next buffer, stale (a late starter would not be)
    wait_for(
        lambda: (
            {e.domain for e in events(settings, Topic.HEARTBEATS) if isinstance(e, DomainHeartbeat)}
            >= {*FAST, SLOW}
        ),
        timeout=120,
        what="heartbeats of every agent",
        check=daemons.check,
    )
    daemons.start("governance", GovernanceService(settings, [task]).run)

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

    stale = [
        (version, updates[u])
        for version in published[1:]
        for u in version.contributing_updates
        if updates[u].base_version < version.parent_version
    ]
    assert stale, "no update was aggregated into a version later than the one it trained from"
    # a version with a stale, clipped update is the mean of each update's clipped delta against its own
    # base: recompute one, and check that clipping against the parent instead would give other bits
    accepted = {d.update_id: d for d in decisions if d.outcome == DecisionOutcome.ACCEPTED}
    clipped = [(v, u) for v, u in stale if "clipped" in accepted[u.update_id].reason]
    assert clipped, "no stale update was clipped"
    version, _ = clipped[0]
    by_number = {v.version: v for v in published}
    parent = by_number[version.version - 1]

    def recompute(against_own_base: bool) -> ModelVersion:
        updates_in = []
        for u in version.contributing_updates:
            base = from_wire(by_number[updates[u].base_version].tensors)
            reference = base if against_own_base else from_wire(parent.tensors)
            weights, refused = reapply_transforms(task, from_wire(updates[u].tensors), reference)
            assert refused is None
            updates_in.append(
                ClientUpdate(
                    update_id=u,
                    domain=updates[u].domain,
                    weights=weights,
                    num_examples=updates[u].num_examples,
                    staleness=parent.version - updates[u].base_version,
                    base=base,
                )
            )
        return aggregate_version(
            task,
            parent,
            from_wire(parent.tensors),
            from_wire(parent.server_state),
            updates_in,
            created_at=version.created_at,
        )

    recomputed = recompute(against_own_base=True)
    assert recompute(against_own_base=False).sha256 != version.sha256
    assert recomputed.sha256 == version.sha256
    daemons.stop_all()
    result = replay(
        events_from_bus(settings, task.id), task.id, governance_key=governance_public_key(settings)
    )
    assert result.ok, result.findings
    assert all(v.reproduced for v in result.versions)
