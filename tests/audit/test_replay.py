"""Replay over in-memory logs: verification, and every kind of tampering detected and named."""

from __future__ import annotations

import pytest

from governance.audit import LoggedEvent, TaskLog, reapply_transforms, replay
from governance.policies import delta_l2_norm, privacy_spent
from meshfl.errors import ReplayError
from meshfl.events import ModelVersion, PrivacyPolicy, StrategySpec, UpdateChecks
from meshfl.tensors import from_wire, tensors_sha256, to_wire
from meshfl.topics import Topic
from tests.audit.audit_builders import (
    GOVERNANCE_KEY,
    SECRET,
    SIGNERS,
    forged,
    make_task,
    memory_federation,
    perturbed,
)


def _version_offset(memory_events: list, number: int) -> int:
    return next(
        e.offset
        for e in memory_events
        if e.topic == Topic.MODEL_VERSIONS and isinstance(e.event, ModelVersion) and e.event.version == number
    )


def test_every_version_reproduces() -> None:
    memory, fed = memory_federation()
    result = replay(memory.events, fed.task.id, governance_key=GOVERNANCE_KEY)
    assert result.ok, result.findings
    assert [v.version for v in result.versions] == [0, 1, 2, 3]
    assert all(v.reproduced and v.self_hash_ok for v in result.versions)
    assert [v.recomputed_sha256 for v in result.versions] == [v.sha256 for v in fed.versions]
    assert result.versions[0].parent_basis == "task"
    assert {v.parent_basis for v in result.versions[1:]} == {"recomputed"}
    assert sorted(result.versions[2].contributing_domains) == ["alpha", "beta", "gamma"]
    assert not [f for f in result.findings if f.severity == "error"]


def test_range_and_progress() -> None:
    memory, fed = memory_federation()
    seen: list[tuple[int, int]] = []
    result = replay(
        memory.events,
        fed.task.id,
        governance_key=GOVERNANCE_KEY,
        from_version=2,
        to_version=3,
        on_progress=lambda d, t: seen.append((d, t)),
    )
    assert result.ok
    assert [v.version for v in result.versions] == [2, 3]
    assert seen == [(1, 2), (2, 2)]
    with pytest.raises(ReplayError):
        replay(memory.events, fed.task.id, governance_key=GOVERNANCE_KEY, from_version=7)
    with pytest.raises(ReplayError, match="not on the log"):
        replay(memory.events, "no-such-task", governance_key=GOVERNANCE_KEY)


def test_stored_version_rewritten_without_its_hash_is_named() -> None:
    memory, fed = memory_federation()
    bad = fed.versions[2]
    weights = perturbed(from_wire(bad.tensors), seed=1, scale=0.5)
    memory.replace(
        Topic.MODEL_VERSIONS,
        _version_offset(memory.events, 2),
        bad.model_copy(update={"tensors": to_wire(weights)}),
    )
    result = replay(memory.events, fed.task.id, governance_key=GOVERNANCE_KEY)
    assert not result.ok
    by_number = {v.version: v for v in result.versions}
    assert not by_number[2].self_hash_ok
    assert by_number[3].reproduced and by_number[3].self_hash_ok  # rebuilt from the recomputed parent
    assert [f.version for f in result.findings if f.kind == "stored_version_tampered"] == [2]


def test_stored_version_rewritten_with_a_new_hash_is_named() -> None:
    memory, fed = memory_federation()
    bad = fed.versions[1]
    tensors = to_wire(perturbed(from_wire(bad.tensors), seed=2, scale=0.5))
    memory.replace(
        Topic.MODEL_VERSIONS,
        _version_offset(memory.events, 1),
        bad.model_copy(update={"tensors": tensors, "sha256": tensors_sha256(tensors)}),
    )
    result = replay(memory.events, fed.task.id, governance_key=GOVERNANCE_KEY)
    assert not result.ok
    assert [v.version for v in result.versions if not v.reproduced] == [1]
    mismatch = [f for f in result.findings if f.kind == "version_mismatch"]
    assert [f.version for f in mismatch] == [1]
    assert "version 1 does not reproduce" in mismatch[0].message


def test_forged_copy_is_ignored_and_named() -> None:
    memory, fed = memory_federation()
    target, at = fed.updates[4]
    copy_at = memory.append(Topic.UPDATES, forged(target))
    result = replay(memory.events, fed.task.id, governance_key=GOVERNANCE_KEY)
    assert all(v.reproduced for v in result.versions)  # the decision's coordinates pick the real one
    assert not result.ok
    [finding] = [f for f in result.findings if f.kind == "forged_update_copy"]
    assert finding.update_id == target.update_id
    assert (finding.partition, finding.offset) == copy_at
    assert copy_at != at


def test_identical_duplicate_is_not_tampering() -> None:
    memory, fed = memory_federation()
    _, (_, offset) = fed.updates[0]
    signed = next(e.event for e in memory.events if e.topic == Topic.UPDATES and e.offset == offset)
    memory.append(Topic.UPDATES, signed, sign=False)  # the very same signed record, written twice
    memory.append(Topic.UPDATES, fed.updates[0][0])  # the same payload signed again by its domain
    result = replay(memory.events, fed.task.id, governance_key=GOVERNANCE_KEY)
    assert result.ok, result.findings
    assert [f.kind for f in result.findings] == ["replayed_event"]  # a warning: nothing forged


def test_rewritten_accepted_payload_names_version_and_updates() -> None:
    memory, fed = memory_federation()
    target, (_, offset) = fed.updates[3]  # round 2
    memory.replace(Topic.UPDATES, offset, forged(target, scale=0.01))
    result = replay(memory.events, fed.task.id, governance_key=GOVERNANCE_KEY)
    assert not result.ok
    assert [v.version for v in result.versions if not v.reproduced] == [2]
    assert result.versions[3].reproduced  # FedAvg: a mean of the updates, whichever parent
    [mismatch] = [f for f in result.findings if f.kind == "version_mismatch"]
    assert target.update_id in mismatch.message and f"offset {offset}" in mismatch.message


def test_rewritten_payload_over_the_norm_bound_is_the_suspect() -> None:
    task = make_task(update_checks=UpdateChecks(max_l2_norm=5.0, norm_action="reject"))
    memory, fed = memory_federation(task)
    target, (_, offset) = fed.updates[1]
    memory.replace(Topic.UPDATES, offset, forged(target, scale=3.0))
    result = replay(memory.events, task.id, governance_key=GOVERNANCE_KEY)
    [suspect] = [f for f in result.findings if f.kind == "update_fails_policy"]
    assert suspect.update_id == target.update_id and suspect.version == 1
    [mismatch] = [f for f in result.findings if f.kind == "version_mismatch"]
    assert f"{target.update_id} at partition 0 offset {offset} (suspect)" in mismatch.message


def test_contributing_update_without_accepting_decision_breaks_lineage() -> None:
    memory, fed = memory_federation()
    memory.events = [
        e
        for e in memory.events
        if not (
            e.topic == Topic.DECISIONS and getattr(e.event, "update_id", None) == fed.updates[0][0].update_id
        )
    ]
    result = replay(memory.events, fed.task.id, governance_key=GOVERNANCE_KEY)
    assert not result.ok
    assert any(f.kind == "lineage" and f.update_id == fed.updates[0][0].update_id for f in result.findings)


def test_clipping_is_reapplied() -> None:
    task = make_task(update_checks=UpdateChecks(max_l2_norm=0.05, norm_action="clip"))
    memory, fed = memory_federation(task)
    assert replay(memory.events, task.id, governance_key=GOVERNANCE_KEY).ok
    parent = from_wire(fed.versions[0].tensors)
    clipped, refused = reapply_transforms(task, from_wire(fed.updates[0][0].tensors), parent)
    assert refused is None
    assert delta_l2_norm(clipped, parent) == pytest.approx(0.05, rel=1e-4)


def test_dp_versions_need_the_secret() -> None:
    task = make_task(privacy=PrivacyPolicy(clip_norm=0.5, noise_multiplier=0.3))
    memory, fed = memory_federation(task, dp_secret=SECRET)
    with pytest.raises(ReplayError, match="MESHFL_DP_SECRET"):
        replay(memory.events, task.id, governance_key=GOVERNANCE_KEY)
    assert replay(memory.events, task.id, governance_key=GOVERNANCE_KEY, dp_secret=SECRET).ok
    wrong = replay(
        memory.events,
        task.id,
        governance_key=GOVERNANCE_KEY,
        dp_secret=b"a wrong guess, long enough to be tried",
    )
    assert [v.reproduced for v in wrong.versions] == [True, False, False, False]
    assert fed.versions[-1].privacy is not None


def test_task_log_index() -> None:
    memory, fed = memory_federation()
    index = TaskLog.of(memory.events, fed.task.id)
    assert sorted(index.versions) == [0, 1, 2, 3]
    assert len(index.rejections()) == 1
    found, problems = index.accepted_update(fed.updates[0][0].update_id)
    assert found is not None and not problems
    assert found.event.model_copy(update={"signature": None}) == fed.updates[0][0]
    assert index.products[("alpha.table", "2.1.0")].domain == "alpha"


def test_replay_flags_versions_beyond_the_epsilon_budget() -> None:
    """A governance that ignored its budget: every version reproduces, yet the replay is not ok."""
    privacy = PrivacyPolicy(clip_norm=0.5, noise_multiplier=1.1)
    second, third = (privacy_spent(1.1, 1.0, k, privacy.target_delta).epsilon for k in (2, 3))
    task = make_task(privacy=privacy.model_copy(update={"max_epsilon": (second + third) / 2}))
    memory, _ = memory_federation(task, dp_secret=SECRET)
    result = replay(memory.events, task.id, governance_key=GOVERNANCE_KEY, dp_secret=SECRET)
    assert all(v.reproduced for v in result.versions)
    assert not result.ok
    flagged = [f for f in result.findings if f.kind == "budget_exceeded"]
    assert [f.version for f in flagged] == [3]
    assert f"epsilon to {third:.4g}" in flagged[0].message
    within = make_task(privacy=privacy.model_copy(update={"max_epsilon": third * 1.01}))
    memory, _ = memory_federation(within, dp_secret=SECRET)
    assert replay(memory.events, within.id, governance_key=GOVERNANCE_KEY, dp_secret=SECRET).ok


def test_replay_refuses_a_short_secret_and_flags_an_uncalibrated_dp_task() -> None:
    task = make_task(privacy=PrivacyPolicy(clip_norm=0.5, noise_multiplier=1.1))
    memory, _ = memory_federation(task, dp_secret=SECRET)
    with pytest.raises(ReplayError, match="too short"):
        replay(memory.events, task.id, governance_key=GOVERNANCE_KEY, dp_secret=b"s3cret")
    # governance itself ran the task uncalibrated (it signs what it publishes)
    median = SIGNERS.sign(task.model_copy(update={"strategy": StrategySpec(name="fedmedian")}))
    events = [
        LoggedEvent(e.topic, e.partition, e.offset, e.timestamp_ms, median) if e.topic == Topic.TASKS else e
        for e in memory.events
    ]
    result = replay(events, task.id, governance_key=GOVERNANCE_KEY, dp_secret=SECRET)
    assert not result.ok
    assert any(f.kind == "privacy_config" and "fedmedian" in f.message for f in result.findings)
