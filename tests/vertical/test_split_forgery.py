"""Forged split events are refused by their receivers before any field is used (no Kafka: the daemons'
record handlers are fed envelopes as their consumers read them).

Anyone may write to the split topics; without signatures a forged task made a domain publish its raw
columns and labels, forged commands and gradients drove its training, and a copy of an activation in
another domain's name, written first, counted as that domain's. Each case here is what an attacker
with a key of their own (or none) can write."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshfl.events import Event
from meshfl.identity import Signer, generate_private_key
from meshfl.topics import Topic
from meshfl.vertical.admission import split_admits
from meshfl.vertical.agent import SplitAgent
from meshfl.vertical.datasets import SplitDataset, breast_cancer_split, paper_task
from meshfl.vertical.events import (
    SplitActivations,
    SplitAlignment,
    SplitCommand,
    SplitEpoch,
    SplitGradients,
    SplitLabelsAt,
    SplitReport,
    SplitReportKind,
    SplitTask,
)

from .split_keys import SplitKeys
from .test_split_hostile import _started

IMPOSTOR = Signer("governance", generate_private_key())
"""Says it is governance; its key is not the pinned one."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SplitDataset:
    return breast_cancer_split(tmp_path_factory.mktemp("split") / "domains")


def _agent(dataset: SplitDataset, keys: SplitKeys, name: str) -> SplitAgent:
    for domain in dataset.domains:
        keys.signer(domain)
    keys.signer("analyst")  # a principal governance registered, who may ask for predictions
    keys.signer("outsider")  # registered too, but no task lists it as a predictor
    return SplitAgent(
        keys.settings(), dataset.root / name, signer=keys.signer(name), trust=keys.trust(f"split-{name}")
    )


def _task(dataset: SplitDataset, **overrides: object) -> SplitTask:
    fields = {"task_id": "split-forgery", "labels_at": SplitLabelsAt.GOVERNANCE, "epochs": 1, **overrides}
    return paper_task(dataset, **fields)  # type: ignore[arg-type]


def _on(agent: SplitAgent, keys: SplitKeys, event: Event, topic: Topic = Topic.SPLIT_CONTROL) -> list:  # type: ignore[type-arg]
    return agent.on_control(keys.envelope(event, topic))


def test_a_split_agent_joins_only_governance_signed_tasks_its_config_admits(dataset: SplitDataset) -> None:
    keys = SplitKeys()
    holder = dataset.label_domain
    agent = _agent(dataset, keys, holder)
    task = _task(dataset)
    raw = task.model_copy(
        update={"domains": [d.model_copy(update={"bottom": [], "cut_width": 10}) for d in task.domains]}
    )
    raw = raw.model_copy(update={"top": task.top, "id": "split-raw"})
    # unsigned, and signed by an impostor claiming to be governance: never read further
    assert _on(agent, keys, task, Topic.TASKS) == []
    assert _on(agent, keys, IMPOSTOR.sign(task), Topic.TASKS) == []
    assert agent._tasks == {}
    assert agent.refused["unsigned"] == 1 and agent.refused["unknown_key"] == 1
    # governance-signed but not admitted by the domain: raw columns as the cut, another data product
    other_product = task.model_copy(
        update={
            "id": "split-other-product",
            "domains": [
                d.model_copy(update={"data_product": "elsewhere.patients"}) if d.domain == holder else d
                for d in task.domains
            ],
        }
    )
    for refused in (raw, other_product):
        _on(agent, keys, keys.sign(refused), Topic.TASKS)
    assert set(agent._not_admitted) == {"split-raw", "split-other-product"}
    assert "no linear layer" in agent._not_admitted["split-raw"]
    # the genuine task is joined, even after forged copies of it came first
    _on(agent, keys, keys.sign(task), Topic.TASKS)
    assert list(agent._tasks) == [task.id]
    assert agent.refused["not_admitted"] == 2


def test_labels_go_to_governance_only_when_the_domain_agrees(dataset: SplitDataset, tmp_path: Path) -> None:
    keys = SplitKeys()
    agent = _agent(dataset, keys, dataset.label_domain)
    config = agent._config.model_copy(
        update={"split": agent._config.split.model_copy(update={"share_labels": False})}
    )
    agent._config = config
    _on(agent, keys, keys.sign(_task(dataset)), Topic.TASKS)
    assert "share_labels" in agent._not_admitted["split-forgery"]
    _on(agent, keys, keys.sign(_task(dataset, task_id="kept", labels_at=SplitLabelsAt.DOMAIN)), Topic.TASKS)
    assert list(agent._tasks) == ["kept"]


def test_a_split_agent_refuses_forged_commands_gradients_psi_and_predictions(dataset: SplitDataset) -> None:
    keys = SplitKeys()
    member = dataset.domains[0]
    agent = _agent(dataset, keys, member)
    task = _task(dataset, predictors=["analyst"])
    _on(agent, keys, keys.sign(task), Topic.TASKS)
    align = SplitEpoch(task_id=task.id, command=SplitCommand.ALIGN, session="s1", epoch=0, attempt=0)
    assert _on(agent, keys, align) == []  # unsigned ALIGN: nothing sent
    assert _on(agent, keys, IMPOSTOR.sign(align)) == []
    assert _on(agent, keys, keys.signer(dataset.label_domain).sign(align)) == []  # a domain is not governance
    assert agent._tasks[task.id].aligner is None
    out = _on(agent, keys, keys.sign(align))
    assert [type(e).__name__ for _, e in out] == ["SplitAlignment"]  # the genuine one starts the PSI
    # a PSI message in the holder's name, signed by another domain, and one unsigned
    collect = SplitAlignment(
        task_id=task.id,
        session="s1",
        step="collect_request",
        sender=dataset.label_domain,
        recipient=member,
        setup=b"",
        payload=b"\x00" * 32,
    )
    before = dict(agent.refused)
    assert _on(agent, keys, keys.signer(dataset.domains[1]).sign(collect), Topic.SPLIT_ALIGNMENT) == []
    assert _on(agent, keys, collect, Topic.SPLIT_ALIGNMENT) == []
    assert agent.refused["impersonation"] == before.get("impersonation", 0) + 1
    # a gradient and a top output "from governance", signed by a domain or by nobody
    common = {
        "task_id": task.id,
        "epoch": 1,
        "attempt": 1,
        "batch": 0,
        "sender": "governance",
        "recipient": member,
    }
    tensor = {"name": "g", "dtype": "float32", "shape": [1, 16], "data": b"\x00" * 64}
    gradient = SplitGradients(**common, tensor=tensor)
    top = SplitActivations(**common, phase="train", tensor=tensor)
    for forged in (gradient, keys.signer(dataset.domains[1]).sign(gradient), top, IMPOSTOR.sign(top)):
        assert agent.on_data(keys.envelope(forged, Topic.SPLIT_GRADIENTS)) == []
    # predictions: unsigned, or signed by someone else than the requester's principal, are refused;
    # a registered principal's request is served (its PSI starts)
    predict = SplitEpoch(
        task_id=task.id,
        command=SplitCommand.PREDICT,
        session="p1",
        epoch=1,
        attempt=0,
        base_version=1,
        base_parts={member: "0" * 64},
        requester="analyst~p1",
    )
    assert _on(agent, keys, predict) == []
    assert _on(agent, keys, keys.signer(dataset.domains[1]).sign(predict)) == []
    # a principal governance registered but the task does not list gets nothing, not even a refusal
    outsider = predict.model_copy(update={"session": "p0", "requester": "outsider~p0"})
    assert _on(agent, keys, keys.signer("outsider").sign(outsider)) == []
    assert "p0" not in agent._tasks[task.id].predictions
    # a predictor's request that reuses the training alignment's session would capture its PSI messages
    collide = predict.model_copy(update={"session": "s1", "requester": "analyst~s1"})
    assert _on(agent, keys, keys.sign(collide)) == []
    assert "s1" not in agent._tasks[task.id].predictions
    signed = _on(agent, keys, keys.sign(predict))
    # the domain holds no part 000...: it says so to the requester instead of leaving it waiting
    assert [(e.kind, e.party) for _, e in signed if isinstance(e, SplitReport)] == [
        (SplitReportKind.REFUSED, member)
    ]


def test_split_governance_counts_only_verified_copies(tmp_path: Path) -> None:
    """An activation, a report and a gradient in another party's name are refused; the honest copy that
    comes after the forged one is the one the top steps on."""
    from meshfl.vertical.events import SplitLabelsAt as At

    clean, _, _ = _started(tmp_path / "clean", At.GOVERNANCE)
    clean.run()
    mesh, start, service = _started(tmp_path / "forged", At.GOVERNANCE)
    rows = len(mesh.coordinator.current.batches[0])  # type: ignore[union-attr]
    common = {"task_id": mesh.task.id, "epoch": start.epoch, "attempt": start.attempt, "batch": 0}
    poison = {"name": "h", "dtype": "float32", "shape": [rows, 4], "data": b"\x7f" * (rows * 16)}
    forged = SplitActivations(**common, phase="train", sender="d0", recipient="governance", tensor=poison)
    done = SplitReport(
        task_id=mesh.task.id,
        party="d0",
        kind="done",
        session=str(mesh.coordinator.session),
        epoch=1,
        attempt=1,
        sha256="f" * 64,
    )
    for copy in (
        forged,
        mesh.keys.signer("d1").sign(forged),
        Signer("d0", generate_private_key()).sign(forged),
    ):
        assert service.on_data(mesh.keys.envelope(copy, Topic.SPLIT_ACTIVATIONS)) == []
    assert service.on_control(mesh.keys.envelope(mesh.keys.signer("d2").sign(done))) == []
    assert mesh.coordinator.current.train == {}  # type: ignore[union-attr]
    assert service.refused == {"unsigned": 1, "impersonation": 1, "unknown_key": 1} | {"impersonation": 2}
    mesh.run()
    assert [v.top_sha256 for v in mesh.versions()] == [v.top_sha256 for v in clean.versions()]
    assert [p.sha256 for p in mesh.versions()[0].parts] == [p.sha256 for p in clean.versions()[0].parts]


def test_split_governance_serves_only_signed_predictions_of_versions_it_holds(tmp_path: Path) -> None:
    from meshfl.vertical.events import SplitLabelsAt as At

    mesh, _, service = _started(tmp_path, At.GOVERNANCE, predictors=["analyst"])
    mesh.run()
    version = mesh.versions()[0]
    mesh.keys.signer("analyst")
    mesh.keys.signer("outsider")
    service._trust = mesh.keys.trust()  # type: ignore[assignment]
    request = SplitEpoch(
        task_id=mesh.task.id,
        command=SplitCommand.PREDICT,
        session="p1",
        epoch=version.version,
        attempt=0,
        base_version=version.version,
        base_parts={p.party: p.sha256 for p in version.parts},
        requester="analyst~p1",
    )
    predictions = mesh.coordinator.predictions
    assert service.on_control(mesh.keys.envelope(request)) == []  # unsigned
    assert "p1" not in predictions._open
    outsider = request.model_copy(update={"session": "p0", "requester": "outsider~p0"})
    assert service.on_control(mesh.keys.envelope(mesh.keys.signer("outsider").sign(outsider))) == []
    assert "p0" not in predictions._open  # registered, but not a predictor of this task
    assert service.on_control(mesh.keys.envelope(mesh.keys.sign(request))) == []
    assert "p1" in predictions._open
    unknown = request.model_copy(update={"session": "p2", "epoch": 9, "base_version": 9})
    out = service.on_control(mesh.keys.envelope(mesh.keys.sign(unknown)))
    assert [(e.kind, e.party) for _, e in out] == [(SplitReportKind.REFUSED, "governance")]
    assert "no version 9" in out[0][1].reason  # type: ignore[attr-defined]


def test_shared_labels_are_only_a_column_the_domain_listed(dataset: SplitDataset) -> None:
    # share_labels lets *a* label column go to governance as it is: a governance-signed task naming a
    # feature the domain kept out of [split] columns as its "label" must not get that column raw.
    keys = SplitKeys()
    holder = dataset.label_domain
    config = _agent(dataset, keys, holder)._config
    kept_out, *features = dataset.columns[holder]
    task = _task(dataset)
    hostile = task.model_copy(
        update={
            "id": "split-label-grab",
            "domains": [
                d.model_copy(update={"columns": features}) if d.domain == holder else d for d in task.domains
            ],
            "labels": task.labels.model_copy(update={"column": kept_out}),
        }
    )
    listed = config.model_copy(update={"split": config.split.model_copy(update={"columns": features})})
    assert "label column" in (split_admits(listed, hostile) or "")
    # the honest label passes once listed (here as [split] label_columns), and so does the default config
    labelled = listed.model_copy(
        update={"split": listed.split.model_copy(update={"label_columns": [task.labels.column]})}
    )
    assert split_admits(labelled, task.model_copy(update={"domains": hostile.domains})) is None
    assert "label column" in (split_admits(labelled, hostile) or "")
    assert split_admits(config, task) is None
