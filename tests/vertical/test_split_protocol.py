"""The split-training protocol without Kafka: the coordinator and the parties' state machines exchange
events through an in-memory queue. Both label configurations learn; duplicates change nothing; a party
that stops answering fails the attempt with a decision and the retry completes the epoch."""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from governance.vertical.coordinator import SplitCoordinator
from governance.vertical.recovery import Recovered
from governance.vertical.replay import replay_split
from meshfl.events import Event, GovernanceDecision
from meshfl.topics import Topic
from meshfl.vertical.aligner import Alignment
from meshfl.vertical.events import (
    SplitActivations,
    SplitCommand,
    SplitEpoch,
    SplitGradients,
    SplitLabelsAt,
    SplitModelVersion,
    SplitReport,
)
from meshfl.vertical.local import CheckpointStore, LocalColumns
from meshfl.vertical.party import SplitParty

from .split_builders import split_task
from .split_keys import SplitKeys


def _data(rows: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 9, generator=generator)
    y = (x[:, 0] + x[:, 4] - x[:, 8] > 0).to(torch.int64)
    return x, y


class Mesh:
    """The coordinator and the parties, each event delivered to whoever it is for."""

    def __init__(self, task, tmp_path: Path, rows: int = 240) -> None:  # type: ignore[no-untyped-def]
        self.task = task
        x, y = _data(rows)
        ids = [f"e{i}" for i in range(rows)]
        alignment = Alignment(session="s", local_index=np.arange(rows), digest="d")
        self.parties = {}
        for index, spec in enumerate(task.domains):
            columns = LocalColumns(
                ids=ids,
                x=x[:, index * 3 : index * 3 + 3].contiguous(),
                y=y if spec.domain == task.labels.domain else None,
                data_products=[f"{spec.domain}.rows@1"],
            )
            self.parties[spec.domain] = SplitParty(
                task, spec.domain, columns, alignment, CheckpointStore(tmp_path / spec.domain)
            )
        self.coordinator = SplitCoordinator(task, Recovered())
        self.keys = SplitKeys()  # every event signed by its sender, as on the bus
        self.log: list[tuple[Topic, Event]] = []
        self.queue: deque[tuple[Topic, Event]] = deque()
        self.silent: set[str] = set()
        self.duplicate = False
        self.now = 0.0
        self.y = y

    def align(self) -> None:
        labels = {"labels": self.y} if self.task.labels.at == SplitLabelsAt.GOVERNANCE else {}
        from meshfl.tensors import to_wire

        self.send(self.coordinator.begin(self.now))
        session = self.coordinator.session
        for party in self.parties.values():
            party.alignment = Alignment(session=str(session), local_index=np.arange(len(self.y)), digest="d")
            shared = (
                to_wire(labels)
                if party.owns_head is False and party.domain == self.task.labels.domain
                else []
            )
            report = SplitReport(
                task_id=self.task.id,
                party=party.domain,
                kind="aligned",
                session=str(session),
                rows=len(self.y),
                alignment_digest="d",
                labels=shared,
            )
            report = self.keys.sign(report)  # type: ignore[assignment]
            self.log.append((Topic.SPLIT_CONTROL, report))
            self.send(self.coordinator.on_report(report, self.now))

    def send(self, events: list[tuple[Topic, Event]]) -> None:
        for topic, event in events:
            item = (topic, self.keys.sign(event))
            self.queue.append(item)
            if self.duplicate:
                self.queue.append(item)

    def run(self, max_events: int = 200_000) -> None:
        for _ in range(max_events):
            if not self.queue:
                self.now += 1000.0
                ticked = self.coordinator.tick(self.now)
                if not ticked:
                    return
                self.send(ticked)
                continue
            topic, event = self.queue.popleft()
            self.log.append((topic, event))
            self.now += 0.001
            if isinstance(event, SplitEpoch):
                for name, party in self.parties.items():
                    if name in self.silent:
                        continue
                    if event.command == SplitCommand.START:
                        self.send(party.start(event))
                    elif event.command == SplitCommand.ABORT:
                        party.abort(event)
            elif isinstance(event, SplitReport):
                self.send(self.coordinator.on_report(event, self.now))
            elif isinstance(event, SplitActivations):
                if event.recipient == "governance":
                    self.send(self.coordinator.on_activations(event, self.now))
                elif event.recipient not in self.silent:
                    self.send(self.parties[event.recipient].on_top_output(event))
            elif isinstance(event, SplitGradients):
                if event.recipient == "governance":
                    self.send(self.coordinator.on_owner_gradient(event, self.now))
                elif event.recipient not in self.silent:
                    self.send(self.parties[event.recipient].on_gradient(event))
        raise AssertionError("the protocol did not settle")

    def versions(self) -> list[SplitModelVersion]:
        """Each published version once (a duplicated delivery logs it twice)."""
        found: dict[int, SplitModelVersion] = {}
        for _, event in self.log:
            if isinstance(event, SplitModelVersion):
                assert found.setdefault(event.version, event) == event
        return list(found.values())


@pytest.mark.parametrize("at", [SplitLabelsAt.GOVERNANCE, SplitLabelsAt.DOMAIN])
def test_both_configurations_learn_and_version_each_epoch(at: SplitLabelsAt, tmp_path: Path) -> None:
    mesh = Mesh(split_task(labels_at=at, epochs=6, max_in_flight=4, learning_rate=3e-2), tmp_path)
    mesh.align()
    mesh.run()
    versions = mesh.versions()
    assert [v.version for v in versions] == [1, 2, 3, 4, 5, 6]
    assert versions[-1].metrics["roc_auc"] > 0.9
    assert mesh.coordinator.complete
    for version in versions:
        assert sorted(p.party for p in version.parts) == ["d0", "d1", "d2"]
        for part in version.parts:
            mesh.parties[part.party].checkpoints.load(part.sha256)  # the domain holds what the version names


def test_duplicates_change_nothing(tmp_path: Path) -> None:
    once = Mesh(split_task(epochs=2), tmp_path / "once")
    once.align()
    once.run()
    twice = Mesh(split_task(epochs=2), tmp_path / "twice")
    twice.duplicate = True
    twice.align()
    twice.run()
    assert [v.top_sha256 for v in once.versions()] == [v.top_sha256 for v in twice.versions()]
    assert [[p.sha256 for p in v.parts] for v in once.versions()] == [
        [p.sha256 for p in v.parts] for v in twice.versions()
    ]


def test_a_silent_party_fails_the_attempt_and_the_retry_completes(tmp_path: Path) -> None:
    mesh = Mesh(split_task(epochs=1), tmp_path)
    mesh.align()
    original = mesh.parties["d2"].on_gradient
    calls = {"n": 0}

    def drop_after_two(event):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            mesh.silent.add("d2")
        return [] if "d2" in mesh.silent else original(event)

    mesh.parties["d2"].on_gradient = drop_after_two  # type: ignore[method-assign]
    mesh.run()
    decisions = [e for _, e in mesh.log if isinstance(e, GovernanceDecision)]
    assert len(decisions) == 1 and decisions[0].domain == "d2" and "attempt 1 failed" in decisions[0].reason
    assert mesh.versions() == []
    mesh.silent.clear()
    # the domain is back: it sees the standing start of attempt 2
    start = [e for _, e in mesh.log if isinstance(e, SplitEpoch) and e.command == SplitCommand.START][-1]
    assert start.attempt == 2
    mesh.send(mesh.parties["d2"].start(start))
    mesh.run()
    assert [(v.epoch, v.attempt) for v in mesh.versions()] == [(1, 2)]


@pytest.mark.parametrize("at", [SplitLabelsAt.GOVERNANCE, SplitLabelsAt.DOMAIN])
def test_replay_reproduces_every_top_and_catches_a_forged_one(at: SplitLabelsAt, tmp_path: Path) -> None:
    task = split_task(labels_at=at, epochs=2)
    mesh = Mesh(task, tmp_path)
    mesh.align()
    mesh.run()
    logged = mesh.keys.logged(mesh.log)
    trust = {"governance_key": mesh.keys.signers["governance"].public_key, "window_seconds": 900.0}
    result = replay_split(task, logged, **trust)
    assert result.ok and [v.version for v in result.versions] == [1, 2]
    assert result.findings == []
    assert all(v.recomputed_sha256 == v.published_sha256 for v in result.versions)
    # an activation of version 2's training, altered, changes what the replay computes
    index = next(
        i
        for i, e in enumerate(logged)
        if isinstance(e.event, SplitActivations) and e.event.epoch == 2 and e.event.recipient == "governance"
    )
    forged = logged[index].event
    data = bytearray(forged.tensor.data)  # type: ignore[attr-defined]
    data[0] ^= 0x40
    tensor = forged.tensor.model_copy(update={"data": bytes(data)})  # type: ignore[attr-defined]
    logged[index] = replace(logged[index], event=forged.model_copy(update={"tensor": tensor}))
    tampered = replay_split(task, logged, **trust)
    assert not tampered.ok
    assert [v.reproduced for v in tampered.versions] == [True, False]
    # the altered copy no longer matches its domain's signature: a finding, left out of the recomputation
    assert [(f.kind, f.offset) for f in tampered.findings if f.severity == "error"] == [
        ("forged_event", logged[index].offset)
    ]
