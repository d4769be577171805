"""The audit trusts signatures, not the log: forged events are findings and take no part in a replay."""

from __future__ import annotations

from governance.audit import TaskLog, check_signatures, replay
from meshfl.events import DecisionOutcome, GovernanceDecision, KeyAction, KeyEvent, ModelVersion, TrainingTask
from meshfl.identity import Signer, key_id, public_bytes
from meshfl.tensors import from_wire, to_wire
from meshfl.topics import Topic
from tests.audit.audit_builders import GOVERNANCE_KEY, derived_key, forged, memory_federation, perturbed


def test_a_bus_writer_without_keys_changes_nothing_and_is_named() -> None:
    memory, fed = memory_federation()
    outsider_update, (partition, offset) = next((u, at) for u, at in fed.updates if u.domain == "mallory")
    # a forged ACCEPTED decision for the rejected outsider, a higher version, a weaker task
    memory.append(
        Topic.DECISIONS,
        GovernanceDecision(
            decision_id="forged", task_id=fed.task.id, update_id=outsider_update.update_id, domain="mallory",
            round=outsider_update.round, outcome=DecisionOutcome.ACCEPTED, policy="update_checks",
            reason="trust me", source_partition=partition, source_offset=offset,
        ),
        sign=False,
    )  # fmt: skip
    last = fed.versions[-1]
    memory.append(
        Topic.MODEL_VERSIONS,
        last.model_copy(update={"version": 99, "round": 99, "parent_version": last.version}),
        sign=False,
    )
    memory.append(Topic.TASKS, fed.task.model_copy(update={"rounds": 1000}), sign=False)
    # a key event signed by a domain (not governance) trying to register a key for "beta"
    evil = Signer("mallory", derived_key("mallory"))
    stolen = derived_key("attacker")
    memory.append(
        Topic.KEYS,
        evil.sign(
            KeyEvent(
                domain="beta",
                key_id=key_id(stolen),
                public_key=public_bytes(stolen),
                action=KeyAction.REGISTERED,
            )
        ),
        sign=False,
    )
    # and an update "from beta" signed with that key
    memory.append(Topic.UPDATES, Signer("beta", stolen).sign(forged(fed.updates[1][0])), sign=False)

    result = replay(memory.events, fed.task.id, governance_key=GOVERNANCE_KEY)
    assert [v.version for v in result.versions] == [0, 1, 2, 3]  # version 99 is not one of them
    assert all(v.reproduced and v.self_hash_ok for v in result.versions)
    kinds = sorted(f.kind for f in result.findings)
    assert kinds == ["forged_event"] * 4 + ["forged_key_event"]
    reasons = " ".join(f.message for f in result.findings)
    assert "unsigned" in reasons and "impersonation" in reasons and "unknown_key" in reasons
    assert not result.ok  # someone wrote forged events into the log: the auditor must look
    signed = check_signatures(memory.events, GOVERNANCE_KEY, window_seconds=900).trusted
    index = TaskLog.of(signed, fed.task.id)
    assert index.task.rounds == fed.task.rounds and max(index.versions) == 3
    assert [d.policy for d in index.rejections()] == ["norm_bound"]  # the forged acceptance is gone


def test_a_version_rewritten_without_governance_key_is_forged() -> None:
    memory, fed = memory_federation()
    bad = fed.versions[2]
    at = next(
        e.offset
        for e in memory.events
        if e.topic == Topic.MODEL_VERSIONS and isinstance(e.event, ModelVersion) and e.event.version == 2
    )
    original = next(e.event for e in memory.events if e.topic == Topic.MODEL_VERSIONS and e.offset == at)
    tampered = original.model_copy(update={"tensors": to_wire(perturbed(from_wire(bad.tensors), seed=3))})
    memory.replace(
        Topic.MODEL_VERSIONS, at, tampered, sign=False
    )  # the old signature kept: it no longer fits
    result = replay(memory.events, fed.task.id, governance_key=GOVERNANCE_KEY)
    [finding] = [f for f in result.findings if f.kind == "forged_event"]
    assert finding.version == 2 and "bad_signature" in finding.message
    assert 2 not in [v.version for v in result.versions]
    assert not result.ok


def test_another_governance_key_trusts_nothing() -> None:
    memory, _ = memory_federation()
    other = Signer("governance", derived_key("someone-else")).public_key
    check = check_signatures(memory.events, other, window_seconds=900)
    assert check.trusted == []
    assert {f.kind for f in check.findings} == {"forged_key_event", "forged_event"}
    assert isinstance(next(e.event for e in memory.events if e.topic == Topic.TASKS), TrainingTask)
