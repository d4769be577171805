"""A domain keeps the parts of its last ``[split] keep_versions`` versions (what ``meshfl predict
--version`` needs) and deletes older ones and those of failed attempts; a prediction of a version
whose part is gone is refused with a report saying so, not left to time out."""

from __future__ import annotations

from pathlib import Path

import torch

from meshfl.domain.config import load_domain
from meshfl.vertical.datasets import breast_cancer_split, paper_task
from meshfl.vertical.events import SplitCommand, SplitEpoch, SplitLabelsAt, SplitReport, SplitReportKind
from meshfl.vertical.runtime import TaskRuntime


def test_parts_of_old_versions_are_deleted_and_their_predictions_refused(tmp_path: Path) -> None:
    data = breast_cancer_split(tmp_path / "domains")
    name = data.domains[0]
    config = load_domain(data.root / name)
    config = config.model_copy(update={"split": config.split.model_copy(update={"keep_versions": 3})})
    task = paper_task(
        data, task_id="versions", labels_at=SplitLabelsAt.GOVERNANCE, epochs=10, predictors=["analyst"]
    )
    runtime = TaskRuntime(config, task, max_elements=1000)  # type: ignore[arg-type]
    parts: dict[int, str] = {}
    failed = runtime.checkpoints.save({"w": torch.full((2,), -1.0)})  # a failed attempt's part
    for version in range(1, 7):  # epoch v trains its part, governance publishes version v, v+1 starts
        parts[version] = runtime.checkpoints.save({"w": torch.full((2,), float(version))})
        start = SplitEpoch(
            task_id=task.id,
            command=SplitCommand.START,
            session="s",
            epoch=version + 1,
            attempt=1,
            base_version=version,
            base_parts={name: parts[version]},
        )
        runtime.on_command(start)  # no alignment on disk: nothing is trained, the parts are sorted out
    kept = sorted(p.stem for p in runtime.checkpoints.root.glob("*.safetensors"))
    assert kept == sorted(parts[v] for v in (4, 5, 6))
    assert failed not in kept
    predict = SplitEpoch(
        task_id=task.id,
        command=SplitCommand.PREDICT,
        session="p",
        epoch=2,
        attempt=0,
        base_version=2,
        base_parts={name: parts[2]},
        requester="analyst~p",
    )
    out = runtime.on_command(predict)
    refusal = out[0][1]
    assert isinstance(refusal, SplitReport) and refusal.kind == SplitReportKind.REFUSED
    assert refusal.session == "p" and "last 3 versions" in refusal.reason
