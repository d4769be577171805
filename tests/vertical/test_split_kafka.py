"""Split learning between daemons over the real broker: PSI alignment with rows only some domains hold,
both label configurations, no raw entity id anywhere on the bus, and predictions for new requests
along the same path (of the latest version, and of an older one), equal to the version computed in one
process. Every event is signed; on the same federation a forged task (unsigned, raw columns as the cut)
and an unsigned prediction request are ignored by every domain."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from governance.vertical.service import SplitGovernance
from governance.vertical.top import TopModel
from meshfl.bus import EventProducer, ensure_topics, read_all
from meshfl.domain.config import load_domain
from meshfl.identity.local import provision_local
from meshfl.identity.trust import governance_signer
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire
from meshfl.topics import Topic
from meshfl.vertical.agent import SplitAgent
from meshfl.vertical.datasets import breast_cancer_split, paper_task
from meshfl.vertical.events import (
    SplitAlignment,
    SplitCommand,
    SplitEpoch,
    SplitLabelsAt,
    SplitLayer,
    SplitModelVersion,
    SplitReport,
    SplitReportKind,
    SplitTask,
)
from meshfl.vertical.local import CheckpointStore, load_columns
from meshfl.vertical.requests import request_predictions
from meshfl.vertical.runtime import state_dir
from meshfl.vertical.spec import build_network
from tests.federation.conftest import Threads, wait_for

from .bus_scan import raw_bytes_of_every_topic

pytestmark = pytest.mark.kafka


def _versions(settings: MeshflSettings, task_id: str) -> list[SplitModelVersion]:
    return [
        env.event
        for env in read_all(settings, Topic.SPLIT_VERSIONS)
        if isinstance(env.event, SplitModelVersion) and env.event.task_id == task_id
    ]


@pytest.mark.parametrize("at", [SplitLabelsAt.GOVERNANCE, SplitLabelsAt.DOMAIN])
def test_split_training_over_the_bus(
    at: SplitLabelsAt, settings: MeshflSettings, tmp_path: Path, daemons: Threads
) -> None:
    data = breast_cancer_split(tmp_path / "domains", missing_fraction=0.03)
    task = paper_task(
        data, task_id=f"split-{at.value}", labels_at=at, epochs=2, batch_size=64, learning_rate=1e-2
    )
    ensure_topics(settings)
    settings = provision_local(settings, tmp_path / "keys", [data.root / name for name in data.domains])
    for name in data.domains:
        daemons.start(f"split-{name}", SplitAgent(settings, data.root / name).run)
    governance = SplitGovernance(settings, [task])
    daemons.start("split-governance", governance.run)
    wait_for(
        lambda: len(_versions(settings, task.id)) == 2,
        timeout=240,
        what="two split versions",
        check=daemons.check,
    )
    versions = _versions(settings, task.id)
    assert [v.version for v in versions] == [1, 2]
    assert versions[-1].metrics["roc_auc"] > 0.9
    assert versions[0].parent_version is None and versions[1].parent_version == 1
    for version in versions:
        assert [p.party for p in version.parts] == data.domains
    # the alignment found exactly the patients every domain holds, in every domain
    aligned = [
        env.event
        for env in read_all(settings, Topic.SPLIT_CONTROL)
        if isinstance(env.event, SplitReport) and env.event.kind == SplitReportKind.ALIGNED
    ]
    assert sorted(r.party for r in aligned) == sorted(data.domains)
    assert {r.rows for r in aligned} == {len(data.pooled_ids)}
    assert len(data.pooled_ids) < min(len(ids) for ids in data.ids.values())
    # meshfl predict's path: new requests for ids, some held by every domain, some not, one unknown
    held_by_some = sorted(set(data.ids[data.domains[0]]) - set(data.pooled_ids))[:3]
    requested = [*data.pooled_ids[:12], *held_by_some, "patient-unknown"]
    signer = governance_signer(settings)
    if at == SplitLabelsAt.GOVERNANCE:
        _forge(settings, task, versions[-1])
    # the latest version, and (labels at governance) the older one: each domain kept its part
    for version in versions[-1:] if at == SplitLabelsAt.DOMAIN else versions:
        predictions = request_predictions(settings, task, version, requested, timeout=180, signer=signer)
        assert sorted(predictions) == sorted(data.pooled_ids[:12])
        expected = _in_process(task, version, data.root, data.pooled_ids[:12])
        for entity, probabilities in predictions.items():
            assert torch.allclose(torch.tensor(probabilities), expected[entity], atol=1e-5)
    if at == SplitLabelsAt.GOVERNANCE:  # nobody answered the forgeries: no PSI, no report for them
        answered = [
            env.event
            for topic in (Topic.SPLIT_ALIGNMENT, Topic.SPLIT_CONTROL)
            for env in read_all(settings, topic)
            if isinstance(env.event, SplitAlignment | SplitReport)
            and (env.event.task_id == "split-forged" or env.event.session == "forged-request")
        ]
        assert answered == []

    # no raw id on the bus, training and predicting: no patient id in any topic's keys, values, headers
    everything = raw_bytes_of_every_topic(settings)
    assert len(everything) > 100_000
    leaked = [entity for ids in data.ids.values() for entity in ids if entity.encode() in everything]
    assert leaked == []


def _forge(settings: MeshflSettings, task: SplitTask, version: SplitModelVersion) -> None:
    """What anyone with write access can publish: a task asking for the raw columns and labels, and a
    prediction request, both unsigned (the agents would have answered them before signatures)."""
    raw = task.model_copy(
        update={
            "id": "split-forged",
            "domains": [
                d.model_copy(update={"bottom": [], "cut_width": len(d.columns)}) for d in task.domains
            ],
            "top": [SplitLayer(kind="linear", out_features=2)],
        }
    )
    request = SplitEpoch(
        task_id=task.id,
        command=SplitCommand.PREDICT,
        session="forged-request",
        epoch=version.version,
        attempt=0,
        base_version=version.version,
        base_parts={part.party: part.sha256 for part in version.parts},
        requester="attacker~x",
    )
    with EventProducer(settings) as producer:  # no signer
        producer.produce(Topic.TASKS, raw, key=raw.id)
        producer.produce(Topic.SPLIT_CONTROL, request, key=task.id)


def _in_process(
    task: SplitTask, version: SplitModelVersion, root: Path, ids: list[str]
) -> dict[str, torch.Tensor]:
    """The same version computed here from the parts on the domains' disks: what predict must return."""
    cuts, head = [], None
    for spec in task.domains:
        config = load_domain(root / spec.domain)
        columns = load_columns(config, task)
        part = next(p for p in version.parts if p.party == spec.domain)
        state = CheckpointStore(state_dir(config, task.id) / "parts").load(part.sha256)
        bottom = build_network(spec.bottom, len(spec.columns), seed=0)
        bottom.load_state_dict(
            {k.removeprefix("bottom."): v for k, v in state.items() if k.startswith("bottom.")}
        )
        rows = torch.tensor([columns.ids.index(entity) for entity in ids])
        cuts.append(bottom.eval()(columns.x[rows]))
        if task.labels.at == SplitLabelsAt.DOMAIN and spec.domain == task.labels.domain:
            head = build_network(task.labels.head, 32, seed=0)
            head.load_state_dict(
                {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
            )
    top = TopModel(task, from_wire(version.top))
    with torch.no_grad():
        output = top.evaluate([cut.detach() for cut in cuts])
        probabilities = torch.softmax(output if head is None else head.eval()(output), dim=1)
    return dict(zip(ids, probabilities, strict=True))


def test_an_alignment_message_above_the_message_limit_crosses_the_bus(settings: MeshflSettings) -> None:
    """A PSI request of 35,000 ids is ~1.2 MB: chunked by the producer, reassembled as one event."""
    from meshfl.bus import EventConsumer, EventProducer
    from meshfl.vertical.events import SplitAlignment, SplitAlignStep
    from meshfl.vertical.psi import new_client

    ensure_topics(settings)
    client = new_client([f"patient-{i}" for i in range(35_000)])
    assert len(client.request) > settings.max_message_bytes
    message = SplitAlignment(
        task_id="t",
        session="s",
        step=SplitAlignStep.COLLECT_REQUEST,
        sender="a",
        recipient="b",
        setup=b"",
        payload=client.request,
    )
    with EventConsumer(settings, [Topic.SPLIT_ALIGNMENT], from_beginning=True) as consumer:
        with EventProducer(settings) as producer:
            producer.produce(Topic.SPLIT_ALIGNMENT, message, key="t")
        env = None
        for _ in range(100):
            env = consumer.poll(1.0)
            if env is not None:
                break
    assert env is not None and isinstance(env.event, SplitAlignment)
    assert bytes(env.event.payload) == client.request
