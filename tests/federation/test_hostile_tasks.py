"""Tasks written to the bus by anyone are checked like task files; an agent stays up and stoppable.

The attacks: a task redefined with ``hidden = [2**40]`` crash-looped every agent on allocation, and
``local_epochs = 10**9`` made agents train forever and ignore SIGTERM. Here an attacker publishes such
tasks with a version 0 each; the agent refuses them (logged, counted, never trained), and while it
trains a long but admitted task it still stops within moments of SIGTERM.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

from governance.rounds import initial_version
from meshfl.bus import EventProducer, ensure_topics
from meshfl.events import (
    AgentStatus,
    DomainHeartbeat,
    ModelSpec,
    ModelUpdate,
    ModelVersion,
    StrategySpec,
    Tensor,
    TensorDType,
)
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.federation.conftest import EventSigners, Processes, events, hospital_task, wait_for

pytestmark = pytest.mark.kafka


def _bogus_version(task_id: str) -> ModelVersion:
    tensor = Tensor(name="layers.0.weight", dtype=TensorDType.FLOAT32, shape=[2**62, 2**62, 0], data=b"")
    return ModelVersion(
        task_id=task_id,
        version=0,
        parent_version=None,
        round=0,
        strategy=StrategySpec(),
        tensors=[tensor],
        sha256="0" * 64,
    )


def test_agent_refuses_hostile_tasks_and_stops_on_sigterm_while_training(
    settings: MeshflSettings, mesh_root: Path, processes: Processes, tmp_path: Path
) -> None:
    domain_dir = tmp_path / "hospital-north"
    shutil.copytree(mesh_root / "hospital-north", domain_dir)
    toml = domain_dir / "domain.toml"
    toml.write_text(toml.read_text().replace("[training]\n", "[training]\nmax_local_epochs = 1000\n", 1))
    base = hospital_task(mesh_root)
    huge = base.model_copy(
        update={"id": "attack-huge", "model": base.model.model_copy(update={"hidden": [2**40]})}
    )
    forever = base.model_copy(update={"id": "attack-forever", "local_epochs": 10**9})
    slow = base.model_copy(update={"id": "slow-but-fine", "local_epochs": 1000, "batch_size": 1})
    overflow = base.model_copy(update={"id": "a-version-overflow"})  # sorted first: tried before slow
    assert isinstance(huge.model, ModelSpec)
    ensure_topics(settings)
    # Signed by governance (a compromised or careless one): without a signature the agent would not even
    # look at them (tests/federation/test_forgery.py); signed, its own configuration still refuses them.
    sign = EventSigners(settings, mesh_root).sign
    with EventProducer(settings) as producer:
        for task in (huge, forever, slow, overflow):
            producer.produce(Topic.TASKS, sign(task), key=task.id)
        producer.produce(Topic.MODEL_VERSIONS, sign(_bogus_version(huge.id)), key=huge.id)
        producer.produce(Topic.MODEL_VERSIONS, sign(_bogus_version(forever.id)), key=forever.id)
        producer.produce(Topic.MODEL_VERSIONS, sign(_bogus_version(overflow.id)), key=overflow.id)
        producer.produce(Topic.MODEL_VERSIONS, sign(initial_version(slow)), key=slow.id)
        producer.flush()

    agent = processes.start("agent", "domain", "run", "--domain", str(domain_dir))

    def training() -> bool:
        assert agent.poll() is None, processes.log("agent")[-4000:]
        return any(
            isinstance(e, DomainHeartbeat) and e.status == AgentStatus.TRAINING
            for e in events(settings, Topic.HEARTBEATS)
        )

    wait_for(training, timeout=180, what="the agent training the admitted task")
    log = processes.log("agent")
    assert "task refused by this domain" in log and "attack-huge" in log and "attack-forever" in log
    assert "cannot train from this version; skipped" in log and "a-version-overflow" in log
    began = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    code = agent.wait(timeout=120)
    processes.procs.pop("agent")
    assert code == 0, processes.log("agent")[-4000:]
    stopped_in = time.monotonic() - began
    # 1,000 epochs of one-row batches take many minutes; the stop is seen at the next batch.
    assert stopped_in < 60, stopped_in
    assert "training stopped on request" in processes.log("agent")
    assert not [e for e in events(settings, Topic.UPDATES) if isinstance(e, ModelUpdate)]
