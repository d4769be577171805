"""Every kind of bad update gets a published decision naming the policy, and the service stays up."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
import torch
from confluent_kafka import Producer

from governance.rounds import initial_version
from governance.service import GovernanceService
from meshfl.bus import EventProducer, ensure_topics
from meshfl.domain.config import load_domain
from meshfl.errors import ConfigError
from meshfl.events import (
    DataProductRef,
    DecisionOutcome,
    GovernanceDecision,
    ModelUpdate,
    ModelVersion,
    StrategySpec,
    TrainingTask,
)
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire, to_wire
from meshfl.topics import Topic, topic_name
from tests.federation.conftest import HOSPITALS, EventSigners, Threads, events, hospital_task, wait_for

pytestmark = pytest.mark.kafka


def _update(
    task: TrainingTask, domain: str, refs: list[DataProductRef], state: dict, **fields: object
) -> ModelUpdate:
    values: dict[str, object] = {
        "update_id": f"{domain}/{fields.pop('tag', 'u')}",  # bound to its domain
        "task_id": task.id,
        "round": 1,
        "base_version": 0,
        "domain": domain,
        "data_products": refs,
        "num_examples": 100,
        "metrics": {},
        "tensors": to_wire(state),
    }
    values.update(fields)
    return ModelUpdate.model_validate(values)


def test_each_bad_update_is_rejected_with_a_decision(
    settings: MeshflSettings, mesh_root: Path, daemons: Threads, signers: EventSigners
) -> None:
    task = hospital_task(mesh_root, rounds=3)
    ensure_topics(settings)
    hospital = load_domain(mesh_root / "hospital-north")
    descriptor = hospital.descriptors()[0]
    refs = [DataProductRef(id=descriptor.id, version=descriptor.version)]
    with EventProducer(settings) as producer:
        producer.produce(Topic.CATALOG, signers.sign(descriptor), key=descriptor.id)
        producer.flush()

    daemons.start("governance", GovernanceService(settings, [task]).run)
    good = {k: v.clone() for k, v in from_wire(initial_version(task).tensors).items()}
    name = sorted(good)[0]
    nan_state = {k: v.clone() for k, v in good.items()}
    nan_state[name].view(-1)[0] = math.nan
    wrong_shape = dict(good)
    wrong_shape[name] = torch.zeros(3, 3)
    huge_examples = {"num_examples": 0}
    domain = hospital.name

    cases = {
        "known_domain": _update(task, "nobody-domain", refs, good, tag="unknown"),
        "data_contract": _update(
            task, domain, [DataProductRef(id="no-such-product", version="1")], good, tag="dp"
        ),
        "known_task": _update(task, domain, refs, good, tag="task", task_id="no-such-task"),
        "task_and_round": _update(task, domain, refs, good, tag="round", round=7, base_version=6),
        "tensor_spec": _update(task, domain, refs, wrong_shape, tag="shape"),
        "finite_values": _update(task, domain, refs, nan_state, tag="nan"),
        "min_examples": _update(task, domain, refs, good, tag="examples", **huge_examples),
    }
    accepted_first = _update(task, domain, refs, good, tag="ok")
    duplicate = _update(task, domain, refs, good, tag="ok")  # same update id again

    with EventProducer(settings) as producer:
        for update in [*cases.values(), accepted_first, duplicate]:  # each signed by its domain
            producer.produce(Topic.UPDATES, signers.sign(update), key=task.id)
        producer.flush()
    # Garbage bytes on the updates topic: dead-lettered, never a crash.
    raw = Producer(settings.client_config())
    raw.produce(topic_name(settings, Topic.UPDATES), value=b"\x00not avro at all", key=task.id.encode())
    raw.flush(10)

    def decisions() -> list[GovernanceDecision]:
        return [e for e in events(settings, Topic.DECISIONS) if isinstance(e, GovernanceDecision)]

    wait_for(
        lambda: len(decisions()) >= len(cases) + 2, timeout=60, what="all decisions", check=daemons.check
    )
    by_update = {}
    for decision in decisions():
        by_update.setdefault(decision.update_id, []).append(decision)
    for policy, update in cases.items():
        (decision,) = by_update[update.update_id]
        assert decision.outcome == DecisionOutcome.REJECTED, (policy, decision)
        assert decision.policy == policy, (policy, decision.reason)
        assert decision.reason
    first, second = by_update[accepted_first.update_id]
    assert first.outcome == DecisionOutcome.ACCEPTED
    assert (second.outcome, second.policy) == (DecisionOutcome.REJECTED, "duplicate")

    dead = list(events_raw(settings))
    assert any(b"not avro" in value for value in dead)
    daemons.check()  # the service is still alive: no error recorded
    assert all(thread.is_alive() for thread in daemons.threads)


def events_raw(settings: MeshflSettings) -> list[bytes]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.client_config(), "group.id": "t-dlq", "enable.auto.commit": False})
    topic = topic_name(settings, Topic.DEAD_LETTERS)
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, low)])
        out: list[bytes] = []
        while len(out) < high - low:
            msg = consumer.poll(5)
            if msg is None:
                break
            if msg.error() is None:
                out.append(msg.value())
        return out
    finally:
        consumer.close()


def test_a_strategy_that_cannot_aggregate_waits_and_the_service_stays_up(
    settings: MeshflSettings, mesh_root: Path, daemons: Threads
) -> None:
    """Bulyan needs n >= 4f + 3 updates; with three hospitals it refuses, and the service keeps going."""
    task = hospital_task(mesh_root, strategy=StrategySpec(name="bulyan", params={"num_byzantine": 1}))
    daemons.start("governance", GovernanceService(settings, [task]).run)
    for name in HOSPITALS:
        daemons.start_agent(settings, mesh_root / name)

    def accepted() -> int:
        return sum(
            1
            for e in events(settings, Topic.DECISIONS)
            if isinstance(e, GovernanceDecision) and e.outcome == DecisionOutcome.ACCEPTED
        )

    wait_for(lambda: accepted() == 3, timeout=120, what="three accepted updates", check=daemons.check)
    versions = [e for e in events(settings, Topic.MODEL_VERSIONS) if isinstance(e, ModelVersion)]
    assert [v.version for v in versions] == [0]
    failed = [
        e
        for e in events(settings, Topic.DECISIONS)
        if isinstance(e, GovernanceDecision) and e.policy == "aggregation_error"
    ]
    assert failed == []  # TooFewUpdates waits; it is not a failed round
    daemons.check()
    assert all(thread.is_alive() for thread in daemons.threads)


def test_a_bad_task_stops_the_service_before_it_touches_the_bus(mesh_root: Path) -> None:
    task = hospital_task(mesh_root, strategy=StrategySpec(name="no-such-strategy"))
    unreachable = MeshflSettings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(ConfigError, match="no-such-strategy"):
        GovernanceService(unreachable, [task]).run(threading.Event())
