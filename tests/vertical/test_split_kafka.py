"""Split learning between daemons over the real broker: PSI alignment with rows only some domains hold,
both label configurations, and no raw entity id anywhere on the bus."""

from __future__ import annotations

from pathlib import Path

import pytest

from governance.vertical.service import SplitGovernance
from meshfl.bus import ensure_topics, read_all
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from meshfl.vertical.agent import SplitAgent
from meshfl.vertical.datasets import breast_cancer_split, paper_task
from meshfl.vertical.events import SplitLabelsAt, SplitModelVersion, SplitReport, SplitReportKind
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
    for name in data.domains:
        daemons.start(f"split-{name}", SplitAgent(settings, data.root / name).run)
    governance = SplitGovernance(settings, [task], exit_when_complete=True)
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
    # no raw id on the bus: not one patient id, in any topic's keys, values or headers
    everything = raw_bytes_of_every_topic(settings)
    assert len(everything) > 100_000
    leaked = [entity for ids in data.ids.values() for entity in ids if entity.encode() in everything]
    assert leaked == []
