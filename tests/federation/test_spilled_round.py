"""A round whose updates and versions are spilled to files (``meshfl.spill``) decides and aggregates
exactly as in memory, and leaves no file mapped but the parent it holds.

The threshold is lowered so that a ~50 KB model stands for the 1 GB one of ``bench/large_model.py``:
every update (chunked at 16 KiB) is assembled in an unnamed file, read in 4 KiB windows, and the
version governance publishes is kept in such a file as the next round's parent.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from governance.policies import FiniteValues, PolicyContext
from governance.policies.base import Candidate
from governance.rounds import aggregate_version
from governance.service import GovernanceService
from governance.strategies import ClientUpdate
from meshfl import spill
from meshfl.bus import EventProducer, ensure_topics
from meshfl.domain.config import load_domain
from meshfl.events import (
    DataProductRef,
    DecisionOutcome,
    GovernanceDecision,
    ModelSpec,
    ModelUpdate,
    ModelVersion,
    RoundPolicy,
)
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire, to_wire
from meshfl.topics import Topic
from tests.audit.audit_builders import perturbed
from tests.federation.conftest import EventSigners, Threads, events, hospital_task, wait_for

pytestmark = pytest.mark.kafka

DOMAINS = ["hospital-north", "hospital-south"]


def _mapped(directory: Path) -> list[str]:
    return [line for line in Path("/proc/self/maps").read_text().splitlines() if str(directory) in line]


def _versions(settings: MeshflSettings, task_id: str) -> dict[int, ModelVersion]:
    return {
        e.version: e
        for e in events(settings, Topic.MODEL_VERSIONS)
        if isinstance(e, ModelVersion) and e.task_id == task_id
    }


def _decisions(settings: MeshflSettings) -> dict[str, GovernanceDecision]:
    return {e.update_id: e for e in events(settings, Topic.DECISIONS) if isinstance(e, GovernanceDecision)}


def test_a_spilled_round_decides_and_aggregates_as_in_memory(
    settings: MeshflSettings,
    mesh_root: Path,
    daemons: Threads,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spill, "WINDOW_BYTES", 4096)
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    settings = settings.model_copy(
        update={"max_message_bytes": 16_384, "spill_bytes": 32_768, "spill_dir": spill_dir}
    )
    task = hospital_task(
        mesh_root,
        rounds=2,
        round_policy=RoundPolicy(min_domains=2),
        model=ModelSpec(architecture="mlp", input_dim=30, hidden=[128, 64], output_dim=2),
    )
    ensure_topics(settings)
    signers = EventSigners(settings, mesh_root)
    refs: dict[str, list[DataProductRef]] = {}
    with EventProducer(settings) as producer:
        for name in DOMAINS:
            descriptor = load_domain(mesh_root / name).descriptors()[0]
            producer.produce(Topic.CATALOG, signers.sign(descriptor), key=descriptor.id)
            refs[name] = [DataProductRef(id=descriptor.id, version=descriptor.version)]
        producer.flush()
    daemons.start("governance", GovernanceService(settings, [task]).run)
    wait_for(lambda: 0 in _versions(settings, task.id), timeout=120, what="version 0", check=daemons.check)
    parent = _versions(settings, task.id)[0]
    assert sum(len(t.data) for t in parent.tensors) > settings.spill_bytes  # the path under test
    weights = from_wire(parent.tensors)
    largest = max(weights.items(), key=lambda item: item[1].numel())[0]
    poisoned = weights[largest].clone()
    poisoned.view(-1)[::97] = float("nan")  # spread over several windows
    sent = {
        "hospital-north/ok": ("hospital-north", perturbed(weights, seed=1, scale=0.2), 40),
        "hospital-south/nan": ("hospital-south", {**weights, largest: poisoned}, 9),
        "hospital-south/ok": ("hospital-south", perturbed(weights, seed=2, scale=0.2), 25),
    }
    with EventProducer(settings) as producer:
        for update_id, (domain, tensors, examples) in sent.items():
            update = ModelUpdate(
                update_id=update_id, task_id=task.id, round=1, base_version=0, domain=domain,
                data_products=refs[domain], num_examples=examples, tensors=to_wire(tensors),
            )  # fmt: skip
            producer.produce(Topic.UPDATES, signers.sign(update), key=task.id)
            producer.flush()  # in this order on the log: the fold order
    wait_for(lambda: 1 in _versions(settings, task.id), timeout=180, what="version 1", check=daemons.check)

    decisions = _decisions(settings)
    assert decisions["hospital-north/ok"].outcome == DecisionOutcome.ACCEPTED
    assert decisions["hospital-south/ok"].outcome == DecisionOutcome.ACCEPTED
    rejected = decisions["hospital-south/nan"]
    context = PolicyContext(
        task=task, open_round=1, latest_version=0, global_weights=weights, expected={}, catalog={}
    )
    nan_update = ModelUpdate(
        update_id="x", task_id=task.id, round=1, base_version=0, domain="hospital-south", num_examples=9,
        tensors=to_wire(sent["hospital-south/nan"][1]),
    )  # fmt: skip
    in_memory = FiniteValues().evaluate(Candidate(nan_update, sent["hospital-south/nan"][1]), context)
    assert (rejected.outcome, rejected.policy, rejected.reason) == (
        DecisionOutcome.REJECTED,
        "finite_values",
        in_memory.reason,
    )
    accepted = [
        ClientUpdate(update_id, domain, tensors, num_examples=examples)
        for update_id, (domain, tensors, examples) in sent.items()
        if not update_id.endswith("nan")
    ]
    want = aggregate_version(task, parent, weights, {}, accepted, created_at=parent.created_at)
    version = _versions(settings, task.id)[1]
    assert version.contributing_updates == ["hospital-north/ok", "hospital-south/ok"]
    assert version.sha256 == want.sha256  # the very bytes of the in-memory fold

    # Files: none has a name; mapped is only what governance holds, the parent (version 1).
    del parent, version, want, weights, decisions
    gc.collect()
    assert [p.name for p in spill_dir.iterdir()] == []
    mapped = _mapped(spill_dir)
    assert len(mapped) == 1, mapped
