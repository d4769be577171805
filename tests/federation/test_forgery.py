"""Forged, replayed, impersonating and unsigned events on the real broker: each is refused with its
reason, and the federation completes as if they were not there.

Two attackers, as in the threat model (README "Security"): ``mallory``, a registered domain with its
own key (a malicious participant), and a bus writer with no registered key at all. Every attack the
issue lists is made once, in one federation of three hospitals over three rounds, with a governance
restart in the middle (forged decisions are read back at every start).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from governance.audit import events_from_bus, replay
from governance.registry import ModelRegistry
from governance.rounds import initial_version
from governance.service import GovernanceService
from meshfl.bus import EventProducer, read_all
from meshfl.domain.config import load_domain
from meshfl.events import (
    AdmissionPolicy,
    AgentProgress,
    DataProductDescriptor,
    DataProductStatus,
    DecisionOutcome,
    GovernanceDecision,
    KeyAction,
    ModelUpdate,
    ModelVersion,
    RoundPolicy,
    TrainingTask,
)
from meshfl.identity import Signer, generate_private_key
from meshfl.identity.binding import update_id_for
from meshfl.identity.trust import domain_signer, governance_public_key, governance_signer, publish_key_event
from meshfl.settings import MeshflSettings
from meshfl.subscribe import watch_versions
from meshfl.topics import Topic
from tests.federation.conftest import HOSPITALS, Threads, events, hospital_task, register_domain, wait_for

pytestmark = pytest.mark.kafka

ROUNDS = 3


def _decisions(settings: MeshflSettings) -> list[GovernanceDecision]:
    return [e for e in events(settings, Topic.DECISIONS) if isinstance(e, GovernanceDecision)]


def _versions(settings: MeshflSettings, task_id: str) -> list[ModelVersion]:
    found = [e for e in events(settings, Topic.MODEL_VERSIONS) if isinstance(e, ModelVersion)]
    return [v for v in found if v.task_id == task_id and v.signature is not None]


def _refusals(settings: MeshflSettings) -> dict[tuple[str, str], list[str]]:
    """(claimed domain, update id) -> policies of its rejections, in log order."""
    out: dict[tuple[str, str], list[str]] = {}
    for decision in _decisions(settings):
        if decision.outcome == DecisionOutcome.REJECTED:
            out.setdefault((decision.domain, decision.update_id), []).append(decision.policy)
    return out


def _bogus_update(task: TrainingTask, domain: str, round_: int, **fields: object) -> ModelUpdate:
    """A well-formed update (the task's initial weights), not trained on anything."""
    values: dict[str, object] = {
        "update_id": update_id_for(task.id, round_, domain),
        "task_id": task.id,
        "round": round_,
        "base_version": round_ - 1,
        "domain": domain,
        "num_examples": 10_000,
        "metrics": {"bogus": 1.0},
        "tensors": initial_version(task).tensors,
    }
    values.update(fields)
    return ModelUpdate.model_validate(values)


def test_forgeries_are_refused_and_the_federation_completes(
    settings: MeshflSettings, mesh_root: Path, daemons: Threads
) -> None:
    task = hospital_task(mesh_root, rounds=ROUNDS, round_policy=RoundPolicy(min_domains=3))
    governance = governance_signer(settings)
    for name in HOSPITALS:
        register_domain(settings, mesh_root / name)
    mallory = Signer("mallory", generate_private_key())  # a registered, malicious domain
    publish_key_event(settings, governance, "mallory", mallory.public_key)
    retired = Signer("mallory", generate_private_key())  # mallory's old key, revoked
    publish_key_event(settings, governance, "mallory", retired.public_key)
    publish_key_event(settings, governance, "mallory", retired.public_key, KeyAction.REVOKED, reason="test")
    stranger = Signer("hospital-central", generate_private_key())  # never registered
    central = domain_signer(mesh_root / "hospital-central", "hospital-central")

    with EventProducer(settings) as bus:  # no signer: what a writer without credentials can do
        # a task pre-published under the running id with weaker policies, and a forged higher version
        weaker = task.model_copy(update={"rounds": 1000, "admission": AdmissionPolicy(), "local_epochs": 50})
        bus.produce(Topic.TASKS, weaker, key=task.id)
        last = initial_version(task).model_copy(update={"version": 50, "round": task.rounds})
        bus.produce(Topic.MODEL_VERSIONS, last, key=task.id)
        # a new task and its version 0: the attacker's model, trained on every domain's data
        steal = task.model_copy(update={"id": "steal", "admission": AdmissionPolicy()})
        bus.produce(Topic.TASKS, steal, key="steal")
        bus.produce(Topic.MODEL_VERSIONS, initial_version(steal), key="steal")
        # forged decisions: ACCEPTED for updates to come, REJECTED for every early offset
        for offset in range(40):
            bus.produce(
                Topic.DECISIONS,
                GovernanceDecision(
                    decision_id=f"forged-{offset}", task_id=task.id, update_id=f"u{offset}", domain="mallory",
                    round=1, outcome=DecisionOutcome.ACCEPTED if offset % 2 else DecisionOutcome.REJECTED,
                    policy="update_checks", reason="forged", source_partition=0, source_offset=offset,
                ),
                key=task.id,
            )  # fmt: skip
        # a forged progress record: hospital-central "already published" every round
        forged_progress = AgentProgress(
            domain="hospital-central", task_id=task.id, last_round=999, last_update_id="x"
        )
        bus.produce(Topic.AGENT_PROGRESS, forged_progress, key=f"hospital-central/{task.id}")
        # squatting: an unsigned update under hospital-north's id
        bus.produce(Topic.UPDATES, _bogus_update(task, "hospital-north", 1), key=task.id)
    with EventProducer(settings, signer=mallory) as signed_by_mallory:
        for name in HOSPITALS:  # mallory squats every hospital's round-1 id, signed as itself
            squat = _bogus_update(task, "mallory", 1, update_id=update_id_for(task.id, 1, name))
            signed_by_mallory.produce(Topic.UPDATES, squat, key=task.id)

    stop_first = daemons.start("governance", GovernanceService(settings, [task]).run)
    first_thread = daemons.threads[-1]
    for name in HOSPITALS:
        daemons.start_agent(settings, mesh_root / name)

    # a retired-status overwrite of hospital-south's product, once its own descriptor is there
    south = load_domain(mesh_root / "hospital-south").descriptors()[0]
    wait_for(
        lambda: any(
            isinstance(e, DataProductDescriptor) and e.id == south.id for e in events(settings, Topic.CATALOG)
        ),
        timeout=120,
        what="hospital-south's descriptor",
        check=daemons.check,
    )
    with EventProducer(settings) as bus:
        bus.produce(
            Topic.CATALOG, south.model_copy(update={"status": DataProductStatus.RETIRED}), key=south.id
        )

    wait_for(
        lambda: len(_versions(settings, task.id)) >= 2, timeout=180, what="version 1", check=daemons.check
    )
    genuine = next(
        e.event for e in read_all(settings, Topic.UPDATES)
        if isinstance(e.event, ModelUpdate) and e.event.domain == "hospital-south"
        and e.event.signature is not None and e.event.round == 1
    )  # fmt: skip
    south_1 = ("hospital-south", genuine.update_id)
    with EventProducer(settings) as bus:  # a signed update written again: governance knows its sequence
        bus.produce(Topic.UPDATES, genuine, key=task.id)
    wait_for(
        lambda: south_1 in _refusals(settings), timeout=60, what="the replay's decision", check=daemons.check
    )
    # restart governance: the forged decisions are read again at start, and ignored again
    stop_first.set()
    first_thread.join(timeout=60)
    assert not first_thread.is_alive()
    daemons.start("governance-again", GovernanceService(settings, [task]).run)

    # round 2 onwards: impersonation, unknown key, revoked key, tampering in transit, replay
    north_refs = load_domain(mesh_root / "hospital-north").descriptors()
    with EventProducer(settings) as bus:
        for descriptor in north_refs:  # mallory replays hospital-north's own signed descriptor...
            signed = next(
                e.event for e in read_all(settings, Topic.CATALOG)
                if isinstance(e.event, DataProductDescriptor) and e.event.id == descriptor.id
                and e.event.signature is not None
            )  # fmt: skip
            bus.produce(Topic.CATALOG, signed, key=descriptor.id)
        # ...and then speaks as hospital-north, signing with its own key
        bus.produce(Topic.UPDATES, mallory.sign(_bogus_update(task, "hospital-north", 2)), key=task.id)
        bus.produce(Topic.UPDATES, stranger.sign(_bogus_update(task, "hospital-central", 2)), key=task.id)
        bus.produce(Topic.UPDATES, retired.sign(_bogus_update(task, "mallory", 2)), key=task.id)
        tampered = central.sign(_bogus_update(task, "hospital-central", 3)).model_copy(
            update={"num_examples": 1}
        )
        bus.produce(Topic.UPDATES, tampered, key=task.id)
        bus.produce(Topic.UPDATES, genuine, key=task.id)  # again, after the restart: its id is decided

    wait_for(
        lambda: len(_versions(settings, task.id)) >= ROUNDS + 1,
        timeout=300,
        what="every round",
        check=daemons.check,
    )
    versions = sorted(_versions(settings, task.id), key=lambda v: v.version)
    assert [v.version for v in versions] == list(range(ROUNDS + 1))
    for version in versions[1:]:
        assert sorted(version.contributing_domains) == sorted(HOSPITALS)
        assert sorted(version.contributing_updates) == sorted(
            update_id_for(task.id, version.round, name) for name in HOSPITALS
        )

    wait_for(lambda: len(_refusals(settings).get(south_1, [])) >= 2, timeout=60, what="every refusal decided")
    refused = _refusals(settings)
    assert refused[("hospital-north", update_id_for(task.id, 1, "hospital-north"))] == ["unsigned"]
    for name in HOSPITALS:  # squatted ids: refused, and the owners' own updates accepted (below)
        assert refused[("mallory", update_id_for(task.id, 1, name))] == ["update_id"]
    assert refused[("hospital-north", update_id_for(task.id, 2, "hospital-north"))] == ["impersonation"]
    assert refused[("hospital-central", update_id_for(task.id, 2, "hospital-central"))] == ["unknown_key"]
    assert refused[("mallory", update_id_for(task.id, 2, "mallory"))] == ["revoked_key"]
    assert refused[("hospital-central", update_id_for(task.id, 3, "hospital-central"))] == ["bad_signature"]
    # a seen sequence; after the restart (no sequence memory) a decided id, or a finished task
    assert refused[south_1][0] == "replay" and refused[south_1][1] in {"duplicate", "task_complete"}
    decisions = _decisions(settings)
    accepted = [d for d in decisions if d.outcome == DecisionOutcome.ACCEPTED and d.signature is not None]
    assert sorted((d.domain, d.round) for d in accepted) == sorted(
        (name, r) for name in HOSPITALS for r in range(1, ROUNDS + 1)
    )
    assert all(d.signature is not None for d in decisions if not d.decision_id.startswith("forged"))

    # the agents did nothing the forgeries asked: no "steal" training, no round past the task's,
    # hospital-central published every round despite its forged progress record
    updates = [e for e in events(settings, Topic.UPDATES) if isinstance(e, ModelUpdate)]
    trained = {
        (u.task_id, u.domain, u.round, u.base_version, u.signature.sequence)
        for u in updates
        if u.signature is not None and "bogus" not in u.metrics
    }
    assert sorted(t[:4] for t in trained) == sorted(
        (task.id, name, r, r - 1) for name in HOSPITALS for r in range(1, ROUNDS + 1)
    )

    # readers: the registry, subscribe and the audit see governance's versions only
    registry = ModelRegistry(settings)
    latest = registry.latest(task.id)
    assert latest is not None and latest.version == ROUNDS and registry.refused >= 1
    assert registry.tasks() == [task.id]  # the forged "steal" task has no (signed) version
    stop = threading.Event()
    seen = [v.version for v in watch_versions(settings, task.id, timeout=5, stop=stop)]
    assert seen == list(range(ROUNDS + 1))
    result = replay(
        events_from_bus(settings, task.id), task.id, governance_key=governance_public_key(settings)
    )
    assert all(v.reproduced and v.self_hash_ok for v in result.versions)
    assert [v.version for v in result.versions] == list(range(ROUNDS + 1))
    forged = [f for f in result.findings if f.kind == "forged_event"]
    assert len(forged) >= 40 + 2 + 1  # the decisions, the task and version, the unsigned squat
    assert any(f.kind == "replayed_event" for f in result.findings)
