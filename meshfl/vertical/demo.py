"""``meshfl demo --kind split``: the seed paper's vertical federation on the bundled breast-cancer data.

Three domains of ten columns (``meshfl.vertical.datasets``), both configurations at once in one
governance (labels shared with governance; labels kept by the label-owner domain), the three split
agents, over the broker; then the centralized baseline: the same total architecture trained in one
process on the pooled columns of the same aligned rows, same split, batches and budget.

Signed like every meshfl federation: governance's key pair is made in ``<out>/keys`` (unless one is
set), a key in every domain folder, each registered on the bus (``meshfl.identity.local``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from governance.vertical.service import SplitGovernance
from meshfl.bus import ensure_topics, read_all
from meshfl.errors import MeshflError
from meshfl.identity.local import provision_local
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from meshfl.vertical.agent import SplitAgent
from meshfl.vertical.alignment import aligned_order
from meshfl.vertical.central import aligned_pooled, train_central
from meshfl.vertical.datasets import breast_cancer_split, paper_task
from meshfl.vertical.events import SplitCommand, SplitEpoch, SplitLabelsAt, SplitModelVersion

PAPER = {"learning_rate": 1e-4, "epochs": 35, "batch_size": 256}
"""The paper's budget: Adam 1e-4, 35 epochs, batch 256 (2 batches an epoch on this small set)."""
DEFAULTS = {"learning_rate": 1e-3, "epochs": 35, "batch_size": 32}
"""meshfl's defaults for the small breast-cancer set, where the paper's budget leaves the model short."""


class SplitOutcome(BaseModel):
    configuration: str
    task_id: str
    roc_auc: float
    balanced_accuracy: float
    accuracy: float
    epochs: int
    seconds: float


class SplitSummary(BaseModel):
    rows_aligned: int
    rows_per_domain: dict[str, int]
    budget: dict[str, float]
    federated: list[SplitOutcome]
    centralized: list[SplitOutcome]

    def gap(self, configuration: str) -> float:
        fed = next(o for o in self.federated if o.configuration == configuration)
        central = next(o for o in self.centralized if o.configuration == configuration)
        return central.roc_auc - fed.roc_auc


def _outcome(
    configuration: str, task_id: str, metrics: dict[str, float], epochs: int, seconds: float
) -> SplitOutcome:
    return SplitOutcome(
        configuration=configuration,
        task_id=task_id,
        roc_auc=metrics.get("roc_auc", float("nan")),
        balanced_accuracy=metrics.get("balanced_accuracy", float("nan")),
        accuracy=metrics.get("accuracy", float("nan")),
        epochs=epochs,
        seconds=seconds,
    )


def run_split_demo(
    settings: MeshflSettings,
    out_dir: Path,
    *,
    paper_budget: bool = False,
    epochs: int | None = None,
    timeout: float = 1800.0,
    on_version: Callable[[SplitModelVersion], None] | None = None,
) -> SplitSummary:
    budget: dict[str, float] = dict(PAPER if paper_budget else DEFAULTS)
    if epochs is not None:
        budget["epochs"] = epochs
    data = breast_cancer_split(out_dir / "domains")
    configurations = {
        "labels at governance": SplitLabelsAt.GOVERNANCE,
        "label-owner domain": SplitLabelsAt.DOMAIN,
    }
    stamp = time.strftime("%H%M%S")
    tasks = {
        name: paper_task(data, task_id=f"breast-cancer-split-{at.value}-{stamp}", labels_at=at, **budget)  # type: ignore[arg-type]
        for name, at in configurations.items()
    }
    ensure_topics(settings)
    settings = provision_local(settings, out_dir / "keys", [data.root / name for name in data.domains])
    stop = threading.Event()
    errors: list[BaseException] = []
    runners = [SplitAgent(settings, data.root / name).run for name in data.domains]
    runners.append(SplitGovernance(settings, list(tasks.values()), exit_when_complete=True).run)

    def _guard(run: Callable[[threading.Event], int]) -> None:
        try:
            run(stop)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=_guard, args=(run,), daemon=True) for run in runners]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    finals: dict[str, SplitModelVersion] = {}
    seen: set[tuple[str, int]] = set()
    try:
        while len(finals) < len(tasks):
            if errors:
                raise errors[0]
            if time.monotonic() - started > timeout:
                raise MeshflError(f"the split demo did not finish within {timeout:.0f} s")
            for env in read_all(settings, Topic.SPLIT_VERSIONS):
                version = env.event
                if not isinstance(version, SplitModelVersion) or (version.task_id, version.version) in seen:
                    continue
                seen.add((version.task_id, version.version))
                if on_version is not None:
                    on_version(version)
                if version.epoch == int(budget["epochs"]):
                    finals[version.task_id] = version
            time.sleep(1.0)
        seconds = time.monotonic() - started
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    sessions = {
        env.event.task_id: env.event.session
        for env in read_all(settings, Topic.SPLIT_CONTROL)
        if isinstance(env.event, SplitEpoch) and env.event.command == SplitCommand.ALIGN
    }
    federated, centralized = [], []
    for name, task in tasks.items():
        final = finals[task.id]
        federated.append(_outcome(name, task.id, final.metrics, final.epoch, seconds))
        x, y = aligned_pooled(
            data.pooled_ids, data.pooled_x, data.pooled_y, aligned_order(data.pooled_ids, sessions[task.id])
        )
        central = train_central(task, x, y)
        centralized.append(_outcome(name, task.id, central.metrics, task.epochs, central.train_seconds))
    return SplitSummary(
        rows_aligned=len(data.pooled_ids),
        rows_per_domain={name: len(ids) for name, ids in data.ids.items()},
        budget=budget,
        federated=federated,
        centralized=centralized,
    )
