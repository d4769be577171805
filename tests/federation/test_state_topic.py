"""Start-up in O(open rounds): the governance-state record, read back on the real broker.

One federation (governance in-process, two hospitals' updates made by hand) runs several rounds; then:
the state records stay bounded over the rounds; a restart reads the latest record and a short tail,
not the history, and gets the same state as reading the whole log; a forged or unsigned newer record
is ignored with a log line; the restarted service restores the open round's accepted update, refuses a
copy of an old update by its round, and closes the round.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from governance.log_state import read_log_state
from governance.rounds import initial_version
from governance.service import GovernanceService
from governance.state_topic import read_governance_state
from meshfl.bus import EventProducer, ensure_topics
from meshfl.domain.config import load_domain
from meshfl.events import (
    DataProductRef,
    DecisionOutcome,
    GovernanceDecision,
    ModelUpdate,
    ModelVersion,
    RoundPolicy,
    TrainingTask,
)
from meshfl.identity import GOVERNANCE, Signer, generate_private_key
from meshfl.settings import MeshflSettings
from meshfl.state_events import GovernanceState, LogPosition, TaskSummary, VersionPointer
from meshfl.tensors import from_wire, to_wire
from meshfl.topics import Topic
from tests.federation.conftest import EventSigners, Threads, events, hospital_task, wait_for

pytestmark = pytest.mark.kafka

DOMAINS = ["hospital-north", "hospital-south"]
ROUNDS = 6


def _update(task: TrainingTask, domain: str, ref: DataProductRef, parent: ModelVersion) -> ModelUpdate:
    weights = from_wire(parent.tensors)
    moved = {name: t + 0.01 * (1 + DOMAINS.index(domain)) for name, t in weights.items()}
    return ModelUpdate(
        update_id=f"{domain}/r{parent.round + 1}",
        task_id=task.id,
        round=parent.round + 1,
        base_version=parent.version,
        domain=domain,
        data_products=[ref],
        num_examples=100,
        tensors=to_wire({name: t.to(torch.float32) for name, t in moved.items()}),
    )


def _versions(settings: MeshflSettings, task: TrainingTask) -> dict[int, ModelVersion]:
    found = [e for e in events(settings, Topic.MODEL_VERSIONS) if isinstance(e, ModelVersion)]
    return {v.version: v for v in found if v.task_id == task.id}


def _decisions(settings: MeshflSettings) -> list[GovernanceDecision]:
    return [e for e in events(settings, Topic.DECISIONS) if isinstance(e, GovernanceDecision)]


def _stop(daemons: Threads, stop: threading.Event) -> None:
    stop.set()
    daemons.threads[daemons.stop_events.index(stop)].join(timeout=60)
    daemons.check()


def test_restart_reads_the_state_record_and_a_short_tail(
    settings: MeshflSettings, mesh_root: Path, daemons: Threads, signers: EventSigners
) -> None:
    task = hospital_task(mesh_root, rounds=ROUNDS + 2, round_policy=RoundPolicy(min_domains=2))
    ensure_topics(settings)
    refs = {}
    with EventProducer(settings) as producer:
        for domain in DOMAINS:
            descriptor = load_domain(mesh_root / domain).descriptors()[0]
            refs[domain] = DataProductRef(id=descriptor.id, version=descriptor.version)
            producer.produce(Topic.CATALOG, signers.sign(descriptor), key=descriptor.id)
    sent: dict[str, ModelUpdate] = {}

    def send(*updates: ModelUpdate) -> None:
        with EventProducer(settings) as producer:
            for update in updates:
                producer.produce(Topic.UPDATES, signers.sign(update), key=task.id)
                sent[update.update_id] = update

    stop = daemons.start("governance", GovernanceService(settings, [task]).run)
    for number in range(ROUNDS):
        wait_for(lambda n=number: n in _versions(settings, task), timeout=180, what=f"version {number}")
        parent = _versions(settings, task)[number]
        send(*(_update(task, domain, refs[domain], parent) for domain in DOMAINS))
    wait_for(lambda: ROUNDS in _versions(settings, task), timeout=180, what=f"version {ROUNDS}")
    # Round ROUNDS + 1 stays open: one of its two updates is in, accepted and held.
    latest = _versions(settings, task)[ROUNDS]
    held = _update(task, DOMAINS[0], refs[DOMAINS[0]], latest)
    send(held)
    wait_for(
        lambda: any(d.update_id == held.update_id for d in _decisions(settings)),
        timeout=120,
        what="the open round's first decision",
    )
    _stop(daemons, stop)

    # Bounded over the rounds: no record remembers more than one round's updates.
    records = [e for e in events(settings, Topic.GOVERNANCE_STATE) if isinstance(e, GovernanceState)]
    assert len(records) >= ROUNDS
    assert max(sum(len(t.decided) for t in r.tasks) for r in records) <= len(DOMAINS)
    assert max(len(r.open_decisions) for r in records) <= len(DOMAINS)
    last = records[-1]
    (summary,) = last.tasks
    assert [d.update_id for d in summary.decided] == [held.update_id]
    assert [(d.update_id, d.accepted, d.settled) for d in last.open_decisions] == [
        (held.update_id, True, False)
    ]

    # A forged and an unsigned record after the genuine one: both ignored, the genuine one is used.
    pointer = VersionPointer(version=0, search_from=[])
    forged = GovernanceState(
        updates_topic=last.updates_topic,
        updates_partition=last.updates_partition,
        committed_offset=0,
        log_ends=[LogPosition(topic=Topic.DECISIONS.value, partition=0, offset=0)],
        tasks=[TaskSummary(task_id=task.id, versions=[pointer], decided=[])],
        open_decisions=[],
    )
    with EventProducer(settings, signer=Signer(GOVERNANCE, generate_private_key())) as producer:
        producer.produce(Topic.GOVERNANCE_STATE, forged, key="partition-0")
    with EventProducer(settings) as producer:
        producer.produce(Topic.GOVERNANCE_STATE, forged, key="partition-0")

    configured = {task.id: task}
    compact = read_governance_state(
        settings, configured, partitions=[0], partition_count=1, committed={0: last.committed_offset}
    )
    full = read_log_state(settings, configured)
    assert compact.source == "state"
    assert compact.refused >= 2  # the forged and the unsigned record
    assert compact.latest[task.id] == full.latest[task.id] == latest
    # O(open rounds): the record, the latest version and the tail of the last transaction, against
    # every decision and version of the history for the whole log.
    assert full.records_read[Topic.DECISIONS.value] >= len(DOMAINS) * ROUNDS + 1
    assert compact.records_read[Topic.DECISIONS.value] <= len(DOMAINS) + 1
    assert compact.records_read[Topic.MODEL_VERSIONS.value] <= 2
    assert compact.records_read[Topic.GOVERNANCE_STATE.value] <= 8
    assert len(full.decided_ids) >= len(DOMAINS) * ROUNDS + 1
    assert set(compact.decided_ids) == {held.update_id}
    held_at = {key for key, update_id in compact.decided_update.items() if update_id == held.update_id}
    assert {key: compact.decided_at[key] for key in held_at} == {k: DecisionOutcome.ACCEPTED for k in held_at}
    assert set(compact.decided_at) == held_at

    # The restarted service: the held update is restored, a copy of an old update is refused by its
    # round (its id is long forgotten), and the open round closes with both updates.
    daemons.start("governance-2", GovernanceService(settings, [task]).run)
    old_copy = sent[f"{DOMAINS[1]}/r2"]
    send(old_copy, _update(task, DOMAINS[1], refs[DOMAINS[1]], latest))
    wait_for(lambda: ROUNDS + 1 in _versions(settings, task), timeout=180, what="the open round's version")
    closed = _versions(settings, task)[ROUNDS + 1]
    assert sorted(closed.contributing_updates) == sorted([held.update_id, f"{DOMAINS[1]}/r{ROUNDS + 1}"])
    copies = [d for d in _decisions(settings) if d.update_id == old_copy.update_id]
    assert len(copies) == 2
    assert copies[1].outcome == DecisionOutcome.REJECTED
    assert copies[1].policy == "task_and_round", copies[1].reason
    assert [d.update_id for d in _decisions(settings)].count(held.update_id) == 1  # never decided twice
    assert initial_version(task).sha256 == _versions(settings, task)[0].sha256
