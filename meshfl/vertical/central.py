"""The same split model in one process, without the bus: the centralized baseline of the demo and the
in-process baseline of ``bench/split.py``.

``CentralSplit`` composes the very networks a split task defines (each domain's bottom on its block of
the pooled columns, the top, and the label owner's head), seeded as in the federation; ``train_central``
trains it on the same aligned rows with the same batches per epoch and one Adam per part.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from governance.vertical.top import TOP_PARTY
from meshfl.vertical.alignment import eval_batches, split_rows, train_batches
from meshfl.vertical.events import SplitLabelsAt, SplitTask
from meshfl.vertical.metrics import classification_metrics
from meshfl.vertical.spec import build_network, make_optimizer, part_seed, top_input_width, top_output_width


class CentralSplit(nn.Module):
    """Bottoms, top and head of a split task as one module over the pooled columns."""

    def __init__(self, task: SplitTask) -> None:
        super().__init__()
        self.widths = [len(d.columns) for d in task.domains]
        self.bottoms = nn.ModuleList(
            build_network(d.bottom, len(d.columns), seed=part_seed(task, d.domain)) for d in task.domains
        )
        self.top = build_network(task.top, top_input_width(task), seed=part_seed(task, TOP_PARTY, "top"))
        self.head: nn.Module = nn.Identity()
        if task.labels.at == SplitLabelsAt.DOMAIN:
            self.head = build_network(
                task.labels.head, top_output_width(task), seed=part_seed(task, task.labels.domain, "head")
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = torch.split(x, self.widths, dim=1)
        cut = torch.cat([bottom(block) for bottom, block in zip(self.bottoms, blocks, strict=True)], dim=1)
        return self.head(self.top(cut))

    def parts(self) -> list[nn.Module]:
        return [*self.bottoms, self.top, self.head]


@dataclass(frozen=True)
class CentralResult:
    metrics: dict[str, float]
    train_seconds: float
    rows_trained: int

    @property
    def rows_per_second(self) -> float:
        return self.rows_trained / self.train_seconds if self.train_seconds > 0 else 0.0


def train_central(
    task: SplitTask, x: torch.Tensor, y: torch.Tensor, *, epochs: int | None = None
) -> CentralResult:
    """Train on ``x``/``y`` given in aligned order (test rows last); metrics on the held-out rows."""
    model = CentralSplit(task)
    optimizers = [make_optimizer(task, list(p.parameters())) for p in model.parts() if list(p.parameters())]
    train_rows, test_rows = split_rows(len(x), task.test_fraction)
    rows = 0
    started = time.perf_counter()
    for epoch in range(1, (epochs or task.epochs) + 1):
        model.train()
        for positions in train_batches(train_rows, task.batch_size, seed=task.seed, epoch=epoch):
            index = torch.from_numpy(positions)
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            for opt in optimizers:
                opt.step()
            rows += len(positions)
    seconds = time.perf_counter() - started
    metrics: dict[str, float] = {}
    if test_rows:
        model.eval()
        with torch.no_grad():
            probs = torch.cat(
                [
                    torch.softmax(model(x[torch.from_numpy(b)]), dim=1)
                    for b in eval_batches(train_rows, test_rows, task.batch_size)
                ]
            )
        metrics = classification_metrics(probs, y[train_rows:])
    return CentralResult(metrics=metrics, train_seconds=seconds, rows_trained=rows)


def aligned_pooled(
    ids: list[str], x: np.ndarray, y: np.ndarray, order: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled rows in the federation's aligned order."""
    row_of = {entity: row for row, entity in enumerate(ids)}
    index = np.array([row_of[entity] for entity in order], dtype=np.int64)
    return torch.from_numpy(x[index].astype(np.float32)), torch.from_numpy(y[index].astype(np.int64))
