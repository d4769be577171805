"""One domain's split training of one task, as a state machine: commands, gradients and (at a label owner)
the top's outputs in; activations, gradients and reports out. No I/O: ``meshfl.vertical.agent`` moves
the events.

Per attempt of an epoch the domain restores its part from the base version's checkpoint (or the seeded
initial weights) with a fresh optimizer, sends the cut-layer activations of up to ``max_in_flight``
training batches ahead of their gradients (weight stashing keeps each batch's backward on its forward's
weights), then the held-out batches' activations, then a ``done`` report with its part's SHA-256.
Anything of another attempt, or a second copy of a batch, changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from meshfl.errors import ConfigError, TensorCodecError
from meshfl.events import Event
from meshfl.logs import get_logger
from meshfl.tensors import from_wire, to_wire
from meshfl.topics import Topic
from meshfl.vertical.aligner import Alignment
from meshfl.vertical.alignment import eval_batches, train_batches
from meshfl.vertical.events import (
    GOVERNANCE,
    SplitActivations,
    SplitEpoch,
    SplitGradients,
    SplitLabelsAt,
    SplitPhase,
    SplitReport,
    SplitReportKind,
    SplitTask,
)
from meshfl.vertical.local import CheckpointStore, LocalColumns, domain_spec
from meshfl.vertical.metrics import classification_metrics
from meshfl.vertical.spec import build_network, make_optimizer, part_seed, top_output_width
from meshfl.vertical.stash import StashedNetwork, StashError

log = get_logger("meshfl.vertical.party")

Outgoing = tuple[Topic, Event]


@dataclass
class _Attempt:
    epoch: int
    attempt: int
    batches: list[np.ndarray]
    evals: list[np.ndarray]
    next_batch: int = 0
    stepped: set[int] = field(default_factory=set)
    next_eval: int = 0
    head_train: set[int] = field(default_factory=set)
    head_eval: dict[int, torch.Tensor] = field(default_factory=dict)
    head_losses: list[float] = field(default_factory=list)
    done: bool = False


class SplitParty:
    """A domain's part of a split task: its bottom network and, at a label owner, the head."""

    def __init__(
        self,
        task: SplitTask,
        domain: str,
        columns: LocalColumns,
        alignment: Alignment,
        checkpoints: CheckpointStore,
    ) -> None:
        self.task = task
        self.domain = domain
        self.spec = domain_spec(task, domain)
        self.columns = columns
        self.alignment = alignment
        self.checkpoints = checkpoints
        self.owns_head = task.labels.domain == domain and task.labels.at == SplitLabelsAt.DOMAIN
        if self.owns_head and columns.y is None:
            raise ConfigError(f"{domain} owns the labels of {task.id} but read none")
        self._current: _Attempt | None = None
        self._seed = part_seed(task, domain, "dropout")
        self._build(None)

    # --- state ------------------------------------------------------------------------------------

    def _build(self, state: dict[str, torch.Tensor] | None) -> None:
        bottom = build_network(
            self.spec.bottom, len(self.spec.columns), seed=part_seed(self.task, self.domain)
        )
        head = None
        if self.owns_head:
            head = build_network(
                self.task.labels.head,
                top_output_width(self.task),
                seed=part_seed(self.task, self.domain, "head"),
            )
        if state is not None:
            bottom.load_state_dict(
                {k.removeprefix("bottom."): v for k, v in state.items() if k.startswith("bottom.")}
            )
            if head is not None:
                head.load_state_dict(
                    {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
                )
        self.bottom = StashedNetwork(
            bottom, make_optimizer(self.task, list(bottom.parameters())), max_stashed=self.task.max_in_flight
        )
        self.head: nn.Sequential | None = head
        self.head_optimizer = None if head is None else make_optimizer(self.task, list(head.parameters()))

    def part_state(self) -> dict[str, torch.Tensor]:
        state = {f"bottom.{k}": v for k, v in self.bottom.module.state_dict().items()}
        if self.head is not None:
            state.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return state

    @property
    def role(self) -> str:
        return "bottom+head" if self.owns_head else "bottom"

    @property
    def active(self) -> tuple[int, int] | None:
        current = self._current
        return None if current is None or current.done else (current.epoch, current.attempt)

    # --- commands ---------------------------------------------------------------------------------

    def start(self, command: SplitEpoch) -> list[Outgoing]:
        """Restore the base part, plan the epoch, report ready, and send the first batches (once)."""
        current = self._current
        if current is not None and (current.epoch, current.attempt) == (command.epoch, command.attempt):
            return []
        base = command.base_parts.get(self.domain)
        if command.base_version is not None and base is None:
            raise ConfigError(
                f"version {command.base_version} of {self.task.id} names no part of {self.domain}"
            )
        self._build(None if base is None else self.checkpoints.load(base))
        train_rows = command.train_rows
        self._current = _Attempt(
            epoch=command.epoch,
            attempt=command.attempt,
            batches=train_batches(train_rows, self.task.batch_size, seed=self.task.seed, epoch=command.epoch),
            evals=eval_batches(train_rows, command.test_rows, self.task.batch_size),
        )
        log.info(
            "split attempt started",
            task=self.task.id,
            domain=self.domain,
            epoch=command.epoch,
            attempt=command.attempt,
            batches=len(self._current.batches),
        )
        ready = self._report(SplitReportKind.READY, command.epoch, command.attempt)
        return [(Topic.SPLIT_CONTROL, ready), *self.pump()]

    def abort(self, command: SplitEpoch) -> None:
        current = self._current
        if current is not None and (current.epoch, current.attempt) == (command.epoch, command.attempt):
            self.bottom.drop()
            self._current = None

    # --- the pipeline -----------------------------------------------------------------------------

    def _activation(self, phase: SplitPhase, batch: int, tensor: torch.Tensor) -> SplitActivations:
        current = self._current
        assert current is not None
        event = SplitActivations(
            task_id=self.task.id,
            epoch=current.epoch,
            attempt=current.attempt,
            batch=batch,
            phase=phase,
            sender=self.domain,
            tensor=to_wire({"activations": tensor})[0],
        )
        return event

    def pump(self) -> list[Outgoing]:
        """Send what the window allows: training batches, then (all stepped) the held-out ones, then done."""
        current = self._current
        if current is None or current.done:
            return []
        out: list[Outgoing] = []
        while current.next_batch < len(current.batches) and len(self.bottom) < self.task.max_in_flight:
            batch = current.next_batch
            x = self.columns.rows(current.batches[batch], self.alignment.local_index)
            seed = self._seed + current.epoch * 1_000_003 + batch
            activation = self.bottom.forward(batch, x, seed=seed)
            out.append((Topic.SPLIT_ACTIVATIONS, self._activation(SplitPhase.TRAIN, batch, activation)))
            current.next_batch += 1
        if len(current.stepped) < len(current.batches):
            return out
        module = self.bottom.module
        while current.next_eval < len(current.evals):
            batch = current.next_eval
            x = self.columns.rows(current.evals[batch], self.alignment.local_index)
            module.eval()
            with torch.no_grad():
                activation = module(x)
            module.train()
            out.append((Topic.SPLIT_ACTIVATIONS, self._activation(SplitPhase.EVAL, batch, activation)))
            current.next_eval += 1
        if self.owns_head and (
            len(current.head_train) < len(current.batches) or len(current.head_eval) < len(current.evals)
        ):
            return out
        return out + self._finish(current)

    def _finish(self, current: _Attempt) -> list[Outgoing]:
        current.done = True
        sha = self.checkpoints.save(self.part_state())
        metrics: dict[str, float] = {}
        if self.owns_head:
            if current.head_losses:
                metrics["train_loss"] = float(np.mean(current.head_losses))
            if current.evals:
                probs = torch.cat([current.head_eval[i] for i in range(len(current.evals))])
                positions = np.concatenate(current.evals)
                metrics.update(classification_metrics(probs, self._labels(positions)))
        report = self._report(
            SplitReportKind.DONE, current.epoch, current.attempt, sha256=sha, metrics=metrics
        )
        log.info(
            "split attempt done", task=self.task.id, domain=self.domain, epoch=current.epoch, sha256=sha[:12]
        )
        return [(Topic.SPLIT_CONTROL, report)]

    def _labels(self, positions: np.ndarray) -> torch.Tensor:
        assert self.columns.y is not None
        return self.columns.y[torch.from_numpy(self.alignment.local_index[positions])]

    def _report(self, kind: SplitReportKind, epoch: int, attempt: int, **fields: object) -> SplitReport:
        report = SplitReport(
            task_id=self.task.id,
            party=self.domain,
            kind=kind,
            session=self.alignment.session,
            epoch=epoch,
            attempt=attempt,
            rows=self.alignment.rows,
            alignment_digest=self.alignment.digest,
            data_products=self.columns.data_products,
            **fields,  # type: ignore[arg-type]
        )
        return report

    def _mine(self, epoch: int, attempt: int) -> _Attempt | None:
        current = self._current
        if current is None or current.done or (current.epoch, current.attempt) != (epoch, attempt):
            return None
        return current

    def on_gradient(self, message: SplitGradients) -> list[Outgoing]:
        """Step the bottom on its gradient; a late, foreign or repeated gradient changes nothing."""
        current = self._mine(message.epoch, message.attempt)
        if current is None or message.recipient != self.domain or message.sender != GOVERNANCE:
            return []
        if message.batch in current.stepped or message.batch not in self.bottom:
            return []
        try:
            self.bottom.backward(message.batch, from_wire([message.tensor])[message.tensor.name])
        except (StashError, TensorCodecError) as exc:
            log.warning("split gradient refused", task=self.task.id, batch=message.batch, reason=str(exc))
            return []
        current.stepped.add(message.batch)
        return self.pump()

    def on_top_output(self, message: SplitActivations) -> list[Outgoing]:
        """Label owner: the head's step on a training batch (gradient back to governance), or the head's
        probabilities on a held-out one."""
        current = self._mine(message.epoch, message.attempt)
        if (
            current is None
            or not self.owns_head
            or message.sender != GOVERNANCE
            or message.recipient != self.domain
        ):
            return []
        assert self.head is not None and self.head_optimizer is not None
        try:
            h = from_wire([message.tensor])[message.tensor.name].to(torch.float32)
        except TensorCodecError as exc:
            log.warning("split top output refused", task=self.task.id, batch=message.batch, reason=str(exc))
            return []
        if message.phase == SplitPhase.TRAIN:
            if message.batch in current.head_train or not 0 <= message.batch < len(current.batches):
                return []
            positions = current.batches[message.batch]
            if h.ndim != 2 or h.shape[0] != len(positions):
                return []
            self.head.train()
            h = h.requires_grad_(True)
            self.head_optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(self.head(h), self._labels(positions))
            loss.backward()
            self.head_optimizer.step()
            current.head_train.add(message.batch)
            current.head_losses.append(float(loss.detach()))
            assert h.grad is not None
            gradient = SplitGradients(
                task_id=self.task.id,
                epoch=current.epoch,
                attempt=current.attempt,
                batch=message.batch,
                sender=self.domain,
                recipient=GOVERNANCE,
                tensor=to_wire({"gradient": h.grad.detach().contiguous()})[0],
            )
            return [(Topic.SPLIT_GRADIENTS, gradient), *self.pump()]
        if message.phase == SplitPhase.EVAL and 0 <= message.batch < len(current.evals):
            if message.batch in current.head_eval or h.shape[0] != len(current.evals[message.batch]):
                return []
            self.head.eval()
            with torch.no_grad():
                current.head_eval[message.batch] = torch.softmax(self.head(h), dim=1)
            self.head.train()
            return self.pump()
        return []
