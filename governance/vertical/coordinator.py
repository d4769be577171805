"""Governance's coordination of one split task, as a state machine: reports, activations and the label
owner's gradients in; commands, gradients, top outputs, decisions and versions out. No I/O: the service
moves the events and the clock comes in as an argument.

Life of a task: ``align`` (a fresh session) until every domain reports the same row count and digest;
then per epoch an attempt: ``start`` with the base version, wait for every party's ``ready``, step the top
on each training batch in batch order as soon as every domain's activations for it are in, evaluate the
held-out batches, and once every party is ``done`` publish the epoch's ``SplitModelVersion``. A party
silent for ``batch_timeout_seconds`` in the middle of an attempt fails it: a rejection decision naming
who was missing, ``abort``, and a new attempt from the same base once everyone is ready again.
Activations and gradients are keyed by (epoch, attempt, phase, batch, sender): the first copy counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from governance.vertical.messages import (
    Outgoing,
    attempt_rejection,
    epoch_command,
    gradient_messages,
    owner_activation,
    split_version,
)
from governance.vertical.prediction import SplitPredictions
from governance.vertical.recovery import Recovered
from governance.vertical.top import TopModel
from meshfl.errors import TensorCodecError
from meshfl.events import TensorDType
from meshfl.logs import get_logger
from meshfl.tensors import from_wire
from meshfl.topics import Topic
from meshfl.vertical.alignment import eval_batches, split_rows, train_batches
from meshfl.vertical.events import (
    GOVERNANCE,
    SplitActivations,
    SplitCommand,
    SplitGradients,
    SplitLabelsAt,
    SplitPhase,
    SplitReport,
    SplitReportKind,
    SplitTask,
)
from meshfl.vertical.metrics import classification_metrics

log = get_logger("meshfl.governance.vertical")

ALIGNMENT_TIMEOUT_FACTOR = 10.0


@dataclass
class _Attempt:
    epoch: int
    attempt: int
    batches: list[np.ndarray]
    evals: list[np.ndarray]
    ready: set[str] = field(default_factory=set)
    done: dict[str, SplitReport] = field(default_factory=dict)
    train: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    evaluated: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    next_batch: int = 0
    next_eval: int = 0
    losses: list[float] = field(default_factory=list)
    probabilities: list[torch.Tensor] = field(default_factory=list)


class SplitCoordinator:
    """One split task at governance."""

    def __init__(self, task: SplitTask, recovered: Recovered) -> None:
        self.task = task
        self.domains = [d.domain for d in task.domains]
        self.owner = task.labels.domain if task.labels.at == SplitLabelsAt.DOMAIN else None
        self.recovered = recovered
        self.session: str | None = None
        self.aligned: dict[str, SplitReport] = {}
        self.rows = 0
        self.labels: torch.Tensor | None = None
        self.latest = recovered.latest
        self.complete = recovered.complete
        self.top: TopModel | None = None
        self.current: _Attempt | None = None
        self._attempts = dict(recovered.attempts)
        self._last_progress = 0.0
        self._align_started = 0.0
        self.predictions = SplitPredictions(task, recovered.versions)

    # --- start and alignment ----------------------------------------------------------------------

    def begin(self, now: float) -> list[Outgoing]:
        """What to publish after (re)start: resume an aligned task, or align it first."""
        if self.complete:
            return []
        out: list[Outgoing] = []
        recovered = self.recovered
        if recovered.open_attempt is not None:
            epoch, attempt = recovered.open_attempt
            out += self._decide(epoch, attempt, [], "attempt abandoned: governance restarted mid-epoch")
            out.append(self._command(SplitCommand.ABORT, epoch, attempt, reason="governance restarted"))
        if recovered.session is not None and self._accept_alignment(recovered.session, recovered.aligned):
            return out + self._next_epoch(now)
        return out + self._align(now)

    def _align(self, now: float) -> list[Outgoing]:
        self.session = uuid.uuid4().hex
        self.aligned = {}
        self._align_started = now
        log.info("split alignment requested", task=self.task.id, session=self.session)
        return [self._command(SplitCommand.ALIGN, 0, 0)]

    def _accept_alignment(self, session: str, reports: dict[str, SplitReport]) -> bool:
        if set(reports) != set(self.domains):
            return False
        if len({(r.rows, r.alignment_digest) for r in reports.values()}) != 1:
            return False
        rows = next(iter(reports.values())).rows
        labels = None
        if self.owner is None:
            shared = reports[self.task.labels.domain].labels
            try:  # a report from the log: its bytes, shape and values are checked before use
                labels = from_wire(shared).get("labels") if shared else None
            except TensorCodecError:
                return False
            if labels is None or labels.shape != (rows,) or labels.is_floating_point() or labels.is_complex():
                return False
            if rows and not (int(labels.min()) >= 0 and int(labels.max()) < self.task.num_classes):
                return False
        self.session, self.aligned, self.rows, self.labels = session, dict(reports), rows, labels
        return True

    def on_aligned(self, report: SplitReport, now: float) -> list[Outgoing]:
        if self.session is None or self.current is not None or report.session != self.session:
            return []
        if report.party not in self.domains or report.party in self.aligned:
            return []
        self.aligned[report.party] = report
        if set(self.aligned) != set(self.domains):
            return []
        pending = dict(self.aligned)
        session = self.session
        self.aligned = {}
        if self._accept_alignment(session, pending):
            log.info("split alignment done", task=self.task.id, rows=self.rows)
            return self._next_epoch(now)
        counts = {party: r.rows for party, r in sorted(pending.items())}
        reason = f"alignment session {session} disagrees (rows {counts}) or lacks the shared labels"
        return self._decide(0, 0, [], reason) + self._align(now)

    # --- epochs -----------------------------------------------------------------------------------

    def _parties(self) -> list[str]:
        return list(self.domains)

    def _next_epoch(self, now: float) -> list[Outgoing]:
        epoch = 1 if self.latest is None else self.latest.epoch + 1
        if epoch > self.task.epochs:
            self.complete = True
            return [self._command(SplitCommand.COMPLETE, epoch - 1, 0, reason="all epochs done")]
        attempt = self._attempts.get(epoch, 0) + 1
        self._attempts[epoch] = attempt
        train_rows, test_rows = split_rows(self.rows, self.task.test_fraction)
        state = None if self.latest is None else from_wire(self.latest.top)
        self.top = TopModel(self.task, state)
        self.current = _Attempt(
            epoch=epoch,
            attempt=attempt,
            batches=train_batches(train_rows, self.task.batch_size, seed=self.task.seed, epoch=epoch),
            evals=eval_batches(train_rows, test_rows, self.task.batch_size),
        )
        self._last_progress = now
        log.info("split attempt started", task=self.task.id, epoch=epoch, attempt=attempt)
        return [self._command(SplitCommand.START, epoch, attempt, train_rows=train_rows, test_rows=test_rows)]

    def _command(self, command: SplitCommand, epoch: int, attempt: int, **fields: object) -> Outgoing:
        return epoch_command(self.task.id, self.latest, self.session, command, epoch, attempt, **fields)

    def _decide(self, epoch: int, attempt: int, missing: Sequence[str], reason: str) -> list[Outgoing]:
        log.warning("split attempt failed", task=self.task.id, epoch=epoch, attempt=attempt, reason=reason)
        return [attempt_rejection(self.task.id, epoch, attempt, missing, reason)]

    def _gradients(self, batch: int, slices: list[torch.Tensor]) -> list[Outgoing]:
        current = self.current
        assert current is not None
        return gradient_messages(self.task.id, current.epoch, current.attempt, batch, self.domains, slices)

    def _to_owner(self, phase: SplitPhase, batch: int, output: torch.Tensor) -> Outgoing:
        current = self.current
        assert current is not None and self.owner is not None
        return owner_activation(
            self.task.id, current.epoch, current.attempt, phase, batch, self.owner, output
        )

    def on_report(self, report: SplitReport, now: float) -> list[Outgoing]:
        if report.task_id != self.task.id or self.complete or report.kind == SplitReportKind.REFUSED:
            return []
        if report.kind == SplitReportKind.ALIGNED:
            return self.on_aligned(report, now)
        current = self.current
        if current is None or (report.epoch, report.attempt) != (current.epoch, current.attempt):
            return []
        if report.party not in self.domains or report.session != self.session:
            return []
        if report.kind == SplitReportKind.READY:
            if report.party in current.ready:
                return []
            current.ready.add(report.party)
            self._last_progress = now
            return self._advance(now)  # activations may have come in before the last ready
        if report.kind == SplitReportKind.DONE and report.sha256 and report.party not in current.done:
            current.done[report.party] = report
            self._last_progress = now
            return self._advance(now)
        return []

    def _expected_rows(self, phase: SplitPhase, batch: int) -> int | None:
        current = self.current
        assert current is not None
        plan = current.batches if phase == SplitPhase.TRAIN else current.evals
        return len(plan[batch]) if 0 <= batch < len(plan) else None

    def on_activations(self, message: SplitActivations, now: float) -> list[Outgoing]:
        if message.phase == SplitPhase.PREDICT and message.recipient == GOVERNANCE:
            return self.predictions.on_activations(message)
        current = self.current
        if current is None or message.task_id != self.task.id or message.recipient != GOVERNANCE:
            return []
        if (message.epoch, message.attempt) != (
            current.epoch,
            current.attempt,
        ) or message.sender not in self.domains:
            return []
        if message.phase not in (SplitPhase.TRAIN, SplitPhase.EVAL):
            return []
        rows = self._expected_rows(message.phase, message.batch)
        width = self.task.domains[self.domains.index(message.sender)].cut_width
        if rows is None or list(message.tensor.shape) != [rows, width]:
            return []
        if message.tensor.dtype != TensorDType.FLOAT32:
            return []  # the top is float32: another dtype would fail its step after the batch is taken
        slot = current.train if message.phase == SplitPhase.TRAIN else current.evaluated
        done_below = current.next_batch if message.phase == SplitPhase.TRAIN else current.next_eval
        if message.batch < done_below:
            return []  # late copy of a batch already stepped
        batch = slot.setdefault(message.batch, {})
        if message.sender in batch:
            return []
        batch[message.sender] = from_wire([message.tensor])[message.tensor.name]
        self._last_progress = now
        return self._advance(now)

    def on_owner_gradient(self, message: SplitGradients, now: float) -> list[Outgoing]:
        current, top = self.current, self.top
        if current is None or top is None or self.owner is None or message.sender != self.owner:
            return []
        if message.recipient != GOVERNANCE or (message.epoch, message.attempt) != (
            current.epoch,
            current.attempt,
        ):
            return []
        if top.held_batch != message.batch:
            return []
        grad = from_wire([message.tensor])[message.tensor.name]
        try:
            slices = top.backward_from_owner(message.batch, grad)
        except ValueError as exc:
            log.warning("split owner gradient refused", task=self.task.id, reason=str(exc))
            return []
        self._last_progress = now
        out = self._gradients(message.batch, slices)
        current.next_batch += 1
        return out + self._advance(now)

    def _inputs(self, received: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [received[domain] for domain in self.domains]

    def _advance(self, now: float) -> list[Outgoing]:
        """Do every step the received batches allow, in batch order."""
        current, top = self.current, self.top
        assert current is not None and top is not None
        out: list[Outgoing] = []
        if len(current.ready) < len(self.domains):
            return out
        while current.next_batch < len(current.batches) and top.held_batch is None:
            received = current.train.get(current.next_batch, {})
            if len(received) < len(self.domains):
                break
            batch = current.next_batch
            del current.train[batch]
            if self.owner is None:
                assert self.labels is not None
                labels = self.labels[torch.from_numpy(current.batches[batch])]
                slices, loss = top.train_on_labels(self._inputs(received), labels)
                current.losses.append(loss)
                out += self._gradients(batch, slices)
                current.next_batch += 1
            else:
                output = top.forward_for_owner(batch, self._inputs(received))
                out.append(self._to_owner(SplitPhase.TRAIN, batch, output))
        if current.next_batch < len(current.batches):
            return out
        while current.next_eval < len(current.evals):
            received = current.evaluated.get(current.next_eval, {})
            if len(received) < len(self.domains):
                break
            batch = current.next_eval
            del current.evaluated[batch]
            output = top.evaluate(self._inputs(received))
            if self.owner is None:
                current.probabilities.append(torch.softmax(output, dim=1))
            else:
                out.append(self._to_owner(SplitPhase.EVAL, batch, output))
            current.next_eval += 1
        if current.next_eval < len(current.evals) or set(current.done) != set(self.domains):
            return out
        return out + self._publish(now)

    def _publish(self, now: float) -> list[Outgoing]:
        current, top = self.current, self.top
        assert current is not None and top is not None
        metrics: dict[str, float] = {}
        if self.owner is None:
            if current.losses:
                metrics["train_loss"] = float(np.mean(current.losses))
            if current.evals:
                assert self.labels is not None
                positions = torch.from_numpy(np.concatenate(current.evals))
                metrics.update(
                    classification_metrics(torch.cat(current.probabilities), self.labels[positions])
                )
        else:
            metrics.update(current.done[self.owner].metrics)
        version = split_version(
            self.task.id,
            self.latest,
            self.session,
            current.epoch,
            current.attempt,
            train_rows=sum(len(b) for b in current.batches),
            top_state=top.state(),
            done=current.done,
            parties=self.domains,
            owner=self.owner,
            metrics=metrics,
        )
        log.info("split version published", task=self.task.id, version=version.version, metrics=metrics)
        self.latest = version
        self.predictions.add_version(version)
        self.current = None
        self.top = None
        return [(Topic.SPLIT_VERSIONS, version), *self._next_epoch(now)]

    # --- time -------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Outgoing]:
        """Fail an attempt (or an alignment) that stopped making progress."""
        if self.complete:
            return []
        timeout = self.task.batch_timeout_seconds
        current = self.current
        if current is None:
            if self.session is not None and now - self._align_started > timeout * ALIGNMENT_TIMEOUT_FACTOR:
                missing = sorted(set(self.domains) - set(self.aligned))
                reason = f"alignment session {self.session} timed out; missing {missing}"
                return self._decide(0, 0, missing, reason) + self._align(now)
            return []
        if len(current.ready) < len(self.domains) or now - self._last_progress <= timeout:
            return []
        missing = self._missing(current)
        reason = (
            f"epoch {current.epoch} attempt {current.attempt} failed: no progress for {timeout:.0f} s"
            f" at batch {current.next_batch}/{len(current.batches)}; waiting for {missing}"
        )
        out = self._decide(current.epoch, current.attempt, missing, reason)
        out.append(self._command(SplitCommand.ABORT, current.epoch, current.attempt, reason=reason))
        self.current = None
        self.top = None
        return out + self._next_epoch(now)

    def _missing(self, current: _Attempt) -> list[str]:
        if current.next_batch < len(current.batches):
            if self.top is not None and self.top.held_batch is not None and self.owner is not None:
                return [self.owner]
            received = current.train.get(current.next_batch, {})
        elif current.next_eval < len(current.evals):
            received = current.evaluated.get(current.next_eval, {})
        else:
            received = current.done
        return sorted(set(self.domains) - set(received))
