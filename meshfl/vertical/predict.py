"""Inference with a split model for new entity ids, along the training path: the requester anchors a
private set intersection with every domain (so no id travels and each domain learns only which of its
rows are asked for), each domain runs its bottom of the chosen version in eval mode on those rows,
governance its top, and the probabilities come back to the requester (from the label owner's head when
the labels live at a domain). Entities some domain lacks get no prediction.

``PredictionPart`` is a domain's side, ``PredictionRequest`` the requester's; both pure state machines.
"""

from __future__ import annotations

import numpy as np
import torch

from meshfl.events import Event
from meshfl.tensors import from_wire, to_wire
from meshfl.topics import Topic
from meshfl.vertical.aligner import Aligner
from meshfl.vertical.alignment import eval_batches
from meshfl.vertical.events import (
    GOVERNANCE,
    SplitActivations,
    SplitAlignment,
    SplitEpoch,
    SplitLabelsAt,
    SplitPhase,
    SplitTask,
)
from meshfl.vertical.local import CheckpointStore, LocalColumns, domain_spec
from meshfl.vertical.spec import build_network, part_seed, top_output_width

Outgoing = tuple[Topic, Event]


def predict_task(task: SplitTask, requester: str) -> SplitTask:
    """The task as the request's alignment sees it: the requester anchors it in the label holder's place."""
    return task.model_copy(update={"labels": task.labels.model_copy(update={"domain": requester})})


def _alignment_only(events: list[Event]) -> list[Outgoing]:
    return [(Topic.SPLIT_ALIGNMENT, e) for e in events if isinstance(e, SplitAlignment)]


class PredictionPart:
    """A domain's side of one prediction request."""

    def __init__(
        self,
        task: SplitTask,
        domain: str,
        command: SplitEpoch,
        columns: LocalColumns,
        checkpoints: CheckpointStore,
        *,
        max_elements: int,
    ) -> None:
        self.task = task
        self.domain = domain
        self.command = command
        self.columns = columns
        sha = command.base_parts.get(domain)
        if sha is None:
            raise ValueError(f"version {command.epoch} has no part of {domain}")
        state = checkpoints.load(sha)
        spec = domain_spec(task, domain)
        self.bottom = build_network(spec.bottom, len(spec.columns), seed=part_seed(task, domain))
        self.bottom.load_state_dict(
            {k.removeprefix("bottom."): v for k, v in state.items() if k.startswith("bottom.")}
        )
        self.bottom.eval()
        self.head = None
        if task.labels.at == SplitLabelsAt.DOMAIN and task.labels.domain == domain:
            self.head = build_network(
                task.labels.head, top_output_width(task), seed=part_seed(task, domain, "head")
            )
            self.head.load_state_dict(
                {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
            )
            self.head.eval()
        self.aligner = Aligner(
            predict_task(task, command.requester),
            domain,
            columns.ids,
            command.session,
            max_elements=max_elements,
        )
        self.sent = False

    def start(self) -> list[Outgoing]:
        return _alignment_only(self.aligner.start())

    def on_alignment(self, message: SplitAlignment) -> list[Outgoing]:
        out = _alignment_only(self.aligner.handle(message))
        result = self.aligner.result
        if result is None or self.sent:
            return out
        self.sent = True
        for batch, positions in enumerate(eval_batches(0, result.rows, self.task.batch_size)):
            x = self.columns.x[torch.from_numpy(result.local_index[positions])]
            with torch.no_grad():
                activation = self.bottom(x)
            out.append((Topic.SPLIT_ACTIVATIONS, self._activations(batch, GOVERNANCE, activation)))
        return out

    def _activations(self, batch: int, recipient: str, tensor: torch.Tensor) -> SplitActivations:
        return SplitActivations(
            task_id=self.task.id,
            epoch=self.command.epoch,
            attempt=0,
            batch=batch,
            phase=SplitPhase.PREDICT,
            sender=self.domain,
            recipient=recipient,
            request_id=self.command.session,
            tensor=to_wire({"activations": tensor.contiguous()})[0],
        )

    def on_top_output(self, message: SplitActivations) -> list[Outgoing]:
        """Label owner: the head's probabilities on governance's top output, to the requester."""
        if self.head is None or message.sender != GOVERNANCE:
            return []
        h = from_wire([message.tensor])[message.tensor.name].to(torch.float32)
        with torch.no_grad():
            probabilities = torch.softmax(self.head(h), dim=1)
        return [
            (Topic.SPLIT_ACTIVATIONS, self._activations(message.batch, self.command.requester, probabilities))
        ]


class PredictionRequest:
    """The requester's side: anchors the alignment of its ids, then gathers the probabilities."""

    def __init__(
        self, task: SplitTask, requester: str, ids: list[str], session: str, *, max_elements: int
    ) -> None:
        self.task = task
        self.requester = requester
        self.ids = ids
        self.session = session
        self.aligner = Aligner(
            predict_task(task, requester), requester, ids, session, max_elements=max_elements
        )
        self.source = task.labels.domain if task.labels.at == SplitLabelsAt.DOMAIN else GOVERNANCE
        self._batches: list[np.ndarray] | None = None
        self._probabilities: dict[int, torch.Tensor] = {}

    def start(self) -> list[Outgoing]:
        return _alignment_only(self.aligner.start())

    def on_alignment(self, message: SplitAlignment) -> list[Outgoing]:
        out = _alignment_only(self.aligner.handle(message))
        if self.aligner.result is not None and self._batches is None:
            self._batches = eval_batches(0, self.aligner.result.rows, self.task.batch_size)
        return out

    def on_probabilities(self, message: SplitActivations) -> None:
        if (
            message.request_id != self.session
            or message.recipient != self.requester
            or message.sender != self.source
        ):
            return
        if self._batches is None or not 0 <= message.batch < len(self._batches):
            return
        probabilities = from_wire([message.tensor])[message.tensor.name]
        if probabilities.shape[0] == len(self._batches[message.batch]):
            self._probabilities.setdefault(message.batch, probabilities)

    @property
    def done(self) -> bool:
        return self._batches is not None and len(self._probabilities) == len(self._batches)

    def predictions(self) -> dict[str, list[float]]:
        """Probabilities by entity id, for the entities every domain holds."""
        assert self._batches is not None and self.aligner.result is not None
        ordered = [self.ids[row] for row in self.aligner.result.local_index]
        probabilities = torch.cat([self._probabilities[b] for b in range(len(self._batches))])
        return {
            entity: [float(p) for p in row]
            for entity, row in zip(ordered, probabilities.tolist(), strict=True)
        }
