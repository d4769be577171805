"""Updates that used to kill governance become rejections; the daemon stays up and restarts clean.

The attack: one ``ModelUpdate`` with a tensor of shape ``[2**62, 2**62, 0]`` and no data passed the
layout check (its product is 0) and killed governance with torch's ``numel`` overflow in ``reshape``;
restarted, it read the same record and died again. And any exception raised inside a policy (torch,
numpy, pydantic) stopped the daemon instead of becoming a decision.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from governance import deciding
from governance.rounds import initial_version
from governance.service import GovernanceService
from meshfl.bus import EventProducer, ensure_topics
from meshfl.domain.config import load_domain
from meshfl.events import (
    DataProductRef,
    DecisionOutcome,
    GovernanceDecision,
    ModelUpdate,
    Tensor,
    TensorDType,
    TrainingTask,
)
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.federation.conftest import (
    E,
    EventSigners,
    Processes,
    Threads,
    events,
    hospital_task,
    wait_for,
    write_task,
)

pytestmark = pytest.mark.kafka


def _decisions(settings: MeshflSettings, update_id: str) -> list[GovernanceDecision]:
    return [
        e
        for e in events(settings, Topic.DECISIONS)
        if isinstance(e, GovernanceDecision) and e.update_id == update_id
    ]


def _register(settings: MeshflSettings, mesh_root: Path) -> tuple[str, list[DataProductRef]]:
    hospital = load_domain(mesh_root / "hospital-north")
    descriptor = hospital.descriptors()[0]
    with EventProducer(settings) as producer:
        producer.produce(Topic.CATALOG, _sign(settings, mesh_root, descriptor), key=descriptor.id)
        producer.flush()
    return hospital.name, [DataProductRef(id=descriptor.id, version=descriptor.version)]


def _sign(settings: MeshflSettings, mesh_root: Path, event: E) -> E:
    """Signed by its domain, as a hostile but registered domain would send it."""
    return EventSigners(settings, mesh_root).sign(event)


def _overflowing(task: TrainingTask, domain: str, refs: list[DataProductRef]) -> ModelUpdate:
    tensors = list(initial_version(task).tensors)
    tensors[0] = Tensor(name=tensors[0].name, dtype=TensorDType.FLOAT32, shape=[2**62, 2**62, 0], data=b"")
    return ModelUpdate(
        update_id=f"{domain}/numel-overflow",
        task_id=task.id,
        round=1,
        base_version=0,
        domain=domain,
        data_products=refs,
        num_examples=10,
        tensors=tensors,
    )


def test_numel_overflow_is_a_rejection_and_governance_restarts_clean(
    settings: MeshflSettings, mesh_root: Path, processes: Processes, tmp_path: Path
) -> None:
    task = hospital_task(mesh_root, rounds=2)
    task_file = write_task(task, tmp_path / "task.json")
    ensure_topics(settings)
    domain, refs = _register(settings, mesh_root)
    with EventProducer(settings) as producer:
        producer.produce(
            Topic.UPDATES, _sign(settings, mesh_root, _overflowing(task, domain, refs)), key=task.id
        )
        producer.flush()
    gov = processes.start("governance", "governance", "run", "--tasks", str(task_file))
    wait_for(
        lambda: bool(_decisions(settings, f"{domain}/numel-overflow")), timeout=120, what="the rejection"
    )
    (decision,) = _decisions(settings, f"{domain}/numel-overflow")
    assert decision.outcome == DecisionOutcome.REJECTED
    assert decision.policy == "tensor_layout" and "elements" in decision.reason
    assert gov.poll() is None, processes.log("governance")
    # A restart reads the same record again (its decision is on the log): it starts and stays up.
    assert processes.terminate("governance") == 0
    again = processes.start("governance-2", "governance", "run", "--tasks", str(task_file))
    wait_for(
        lambda: "governance started" in processes.log("governance-2"),
        timeout=120,
        what="the restarted governance",
        check=lambda: None if again.poll() is None else pytest.fail(processes.log("governance-2")),
    )
    assert again.poll() is None
    assert processes.terminate("governance-2") == 0
    assert len(_decisions(settings, f"{domain}/numel-overflow")) == 1


def test_an_exception_inside_a_policy_becomes_a_rejection(
    settings: MeshflSettings, mesh_root: Path, daemons: Threads, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = hospital_task(mesh_root, rounds=2)
    ensure_topics(settings)
    domain, refs = _register(settings, mesh_root)
    real = deciding.evaluate_update

    def exploding(candidate, context):  # type: ignore[no-untyped-def]
        if candidate.update.update_id.endswith("/explodes"):
            raise RuntimeError("numel: integer multiplication overflow (deep in a policy)")
        return real(candidate, context)

    monkeypatch.setattr(deciding, "evaluate_update", exploding)
    daemons.start("governance", GovernanceService(settings, [task]).run)
    good = list(initial_version(task).tensors)
    with EventProducer(settings) as producer:
        for update_id in ("explodes", "fine"):
            update = ModelUpdate(
                update_id=f"{domain}/{update_id}",
                task_id=task.id,
                round=1,
                base_version=0,
                domain=domain,
                data_products=refs,
                num_examples=10,
                tensors=good,
            )
            producer.produce(Topic.UPDATES, _sign(settings, mesh_root, update), key=task.id)
        producer.flush()
    wait_for(
        lambda: bool(_decisions(settings, f"{domain}/fine")),
        timeout=120,
        what="the next update's decision",
        check=daemons.check,
    )
    (exploded,) = _decisions(settings, f"{domain}/explodes")
    assert exploded.outcome == DecisionOutcome.REJECTED and exploded.policy == "evaluation_error"
    assert "RuntimeError" in exploded.reason
    assert _decisions(settings, f"{domain}/fine")[0].outcome == DecisionOutcome.ACCEPTED


def test_state_rebuild_skips_a_forged_task_and_a_version_that_does_not_fit(
    settings: MeshflSettings, mesh_root: Path, daemons: Threads
) -> None:
    """Before governance ever ran: the running id taken by a task of ``hidden = [2**40]``, and a version 7
    with the overflow shape. Governance starts, runs the task file's task from its own version 0."""
    task = hospital_task(mesh_root, rounds=2)
    ensure_topics(settings)
    domain, refs = _register(settings, mesh_root)
    forged_task = task.model_copy(update={"model": task.model.model_copy(update={"hidden": [2**40]})})
    forged_version = initial_version(task).model_copy(
        update={"version": 7, "round": 1, "tensors": _overflowing(task, domain, refs).tensors}
    )
    with EventProducer(settings) as producer:
        producer.produce(Topic.TASKS, forged_task, key=task.id)
        producer.produce(Topic.MODEL_VERSIONS, forged_version, key=task.id)
        producer.flush()
    daemons.start("governance", GovernanceService(settings, [task]).run)
    update = ModelUpdate(
        update_id=f"{domain}/after-forgery",
        task_id=task.id,
        round=1,
        base_version=0,
        domain=domain,
        data_products=refs,
        num_examples=10,
        tensors=list(initial_version(task).tensors),
    )
    with EventProducer(settings) as producer:
        producer.produce(Topic.UPDATES, _sign(settings, mesh_root, update), key=task.id)
        producer.flush()
    wait_for(
        lambda: bool(_decisions(settings, f"{domain}/after-forgery")),
        timeout=120,
        what="a decision",
        check=daemons.check,
    )
    (decision,) = _decisions(settings, f"{domain}/after-forgery")
    assert decision.outcome == DecisionOutcome.ACCEPTED, decision.reason
    versions = [e for e in events(settings, Topic.MODEL_VERSIONS) if getattr(e, "task_id", None) == task.id]
    assert [v.version for v in versions if v.version == 0]  # governance published its own version 0
