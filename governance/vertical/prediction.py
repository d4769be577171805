"""Governance's side of ``meshfl predict`` for one split task: the top of the requested version on the
domains' bottom activations of the request's rows, its output to the requester (labels at governance:
the probabilities) or to the label owner (whose head finishes them).

Any version governance holds can be asked for (the last ``MAX_VERSIONS`` of the task, tops from the
log); a request for another one is answered with a ``refused`` report saying why, so the requester
does not wait for its timeout. Requests are verified before they get here (``meshfl.vertical.trust``):
signed by the requester's principal. Pure: events in, events out.
"""

from __future__ import annotations

import torch

from governance.vertical.top import TopModel
from meshfl.events import Event, TensorDType
from meshfl.logs import get_logger
from meshfl.tensors import from_wire, to_wire
from meshfl.topics import Topic
from meshfl.vertical.events import (
    GOVERNANCE,
    PRINCIPAL_SEPARATOR,
    SplitActivations,
    SplitEpoch,
    SplitLabelsAt,
    SplitModelVersion,
    SplitPhase,
    SplitReport,
    SplitReportKind,
    SplitTask,
    principal_of,
)

log = get_logger("meshfl.governance.vertical")

Outgoing = tuple[Topic, Event]
MAX_PREDICTIONS = 16
"""Requests served at once (the oldest is dropped)."""
MAX_VERSIONS = 256
"""Versions whose top governance keeps for prediction (a split top is small: the newest are kept)."""


class SplitPredictions:
    """The prediction requests of one split task, and the versions they may ask for."""

    def __init__(self, task: SplitTask, versions: dict[int, SplitModelVersion]) -> None:
        self.task = task
        self.domains = [d.domain for d in task.domains]
        self.owner = task.labels.domain if task.labels.at == SplitLabelsAt.DOMAIN else None
        self.versions: dict[int, SplitModelVersion] = {}
        for version in versions.values():
            self.add_version(version)
        self._open: dict[str, tuple[SplitEpoch, TopModel, dict[int, dict[str, torch.Tensor]]]] = {}

    def add_version(self, version: SplitModelVersion) -> None:
        self.versions[version.version] = version
        while len(self.versions) > MAX_VERSIONS:
            del self.versions[min(self.versions)]

    def _refuse(self, command: SplitEpoch, reason: str) -> list[Outgoing]:
        log.warning("prediction refused", task=self.task.id, request=command.session, reason=reason)
        report = SplitReport(
            task_id=self.task.id,
            party=GOVERNANCE,
            kind=SplitReportKind.REFUSED,
            session=command.session,
            epoch=command.epoch,
            reason=reason,
        )
        return [(Topic.SPLIT_CONTROL, report)]

    def on_request(self, command: SplitEpoch) -> list[Outgoing]:
        """A request for version ``command.epoch``: the top waits for the domains' activations."""
        if command.task_id != self.task.id or command.session in self._open:
            return []
        if PRINCIPAL_SEPARATOR not in command.requester:
            return []  # a requester is '<principal>~<tag>', never a party's own name
        if not self.task.may_predict(principal_of(command.requester)):
            log.warning(
                "prediction refused", task=self.task.id, request=command.session, reason="not_allowed"
            )
            return []  # silent to a stranger: a refusal would tell it the task exists
        version = self.versions.get(command.epoch)
        if version is None:
            held = f"{min(self.versions)}-{max(self.versions)}" if self.versions else "none"
            return self._refuse(command, f"governance holds no version {command.epoch} (held: {held})")
        if command.base_parts != {p.party: p.sha256 for p in version.parts}:
            return self._refuse(command, f"the parts named are not those of version {command.epoch}")
        while len(self._open) >= MAX_PREDICTIONS:
            self._open.pop(next(iter(self._open)))
        self._open[command.session] = (command, TopModel(self.task, from_wire(version.top)), {})
        return []

    def on_activations(self, message: SplitActivations) -> list[Outgoing]:
        """A domain's bottom activations of one batch of a request; the top's output once all are in."""
        entry = self._open.get(message.request_id)
        if entry is None or message.sender not in self.domains:
            return []
        command, top, pending = entry
        width = self.task.domains[self.domains.index(message.sender)].cut_width
        if len(message.tensor.shape) != 2 or message.tensor.shape[1] != width:
            return []
        if message.tensor.dtype != TensorDType.FLOAT32:
            return []
        batch = pending.setdefault(message.batch, {})
        batch.setdefault(message.sender, from_wire([message.tensor])[message.tensor.name])
        if len(batch) < len(self.domains) or len({int(t.shape[0]) for t in batch.values()}) != 1:
            return []
        del pending[message.batch]
        output = top.evaluate([batch[domain] for domain in self.domains])
        recipient = command.requester if self.owner is None else self.owner
        tensor = torch.softmax(output, dim=1) if self.owner is None else output
        event = SplitActivations(
            task_id=self.task.id,
            epoch=command.epoch,
            attempt=0,
            batch=message.batch,
            phase=SplitPhase.PREDICT,
            sender=GOVERNANCE,
            recipient=recipient,
            request_id=command.session,
            tensor=to_wire({"output": tensor.contiguous()})[0],
        )
        return [(Topic.SPLIT_ACTIVATIONS, event)]
