"""One split task as a domain runs it: its columns, its alignment (kept on local disk, never on the bus),
the live PSI session and the training party. The agent (``meshfl.vertical.agent``) feeds it events.

State under ``<domain dir>/.meshfl/split/<task id>/``: ``alignment-<session>.npz`` (each aligned
position's local row, and the digest) and ``parts/<sha256>.safetensors`` (the part of each version).
Parts are kept for the last ``[split] keep_versions`` versions (every command names its base version
and parts, so the domain learns which part is which version from the log): older ones, and those of
failed attempts, are deleted when a new epoch starts, and a prediction of a version whose part is
gone is refused with a ``refused`` report saying so.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from meshfl.domain.config import DomainConfig
from meshfl.errors import ConfigError, MeshflError
from meshfl.events import Event
from meshfl.logs import get_logger
from meshfl.tensors import to_wire
from meshfl.topics import Topic
from meshfl.vertical.aligner import Aligner, Alignment
from meshfl.vertical.events import (
    PRINCIPAL_SEPARATOR,
    SplitActivations,
    SplitAlignment,
    SplitCommand,
    SplitEpoch,
    SplitGradients,
    SplitLabelsAt,
    SplitPhase,
    SplitReport,
    SplitReportKind,
    SplitTask,
    principal_of,
)
from meshfl.vertical.local import CheckpointStore, LocalColumns, load_columns
from meshfl.vertical.party import SplitParty
from meshfl.vertical.predict import PredictionPart

log = get_logger("meshfl.vertical.runtime")

Outgoing = tuple[Topic, Event]
_MAX_EARLY = 256  # alignment messages kept for a session not started yet
_MAX_PREDICTIONS = 16  # prediction requests kept at once (the oldest is dropped)


def state_dir(config: DomainConfig, task_id: str) -> Path:
    return config.root / ".meshfl" / "split" / task_id


def _routed(events: list[Event]) -> list[Outgoing]:
    return [
        (Topic.SPLIT_ALIGNMENT if isinstance(event, SplitAlignment) else Topic.SPLIT_CONTROL, event)
        for event in events
    ]


class TaskRuntime:
    """A domain's side of one split task."""

    def __init__(self, config: DomainConfig, task: SplitTask, *, max_elements: int) -> None:
        self.config = config
        self.task = task
        self.domain = config.name
        self.root = state_dir(config, task.id)
        self.checkpoints = CheckpointStore(self.root / "parts")
        self.max_elements = max_elements
        self._columns: LocalColumns | None = None
        self.aligner: Aligner | None = None
        self.party: SplitParty | None = None
        self._early: deque[SplitAlignment] = deque(maxlen=_MAX_EARLY)
        # what the log already holds (read on start-up)
        self.latest: SplitEpoch | None = None
        self.sent_alignment: set[str] = set()
        self.reported: set[tuple[str, str, int, int]] = set()
        self.backlog: list[SplitAlignment] = []
        self.predictions: dict[str, PredictionPart] = {}
        self.versions: dict[int, str] = {}  # version -> this domain's part, as the commands say

    @property
    def columns(self) -> LocalColumns:
        if self._columns is None:
            self._columns = load_columns(self.config, self.task)
        return self._columns

    # --- alignment on disk --------------------------------------------------------------------------

    def _alignment_path(self, session: str) -> Path:
        return self.root / f"alignment-{session}.npz"

    def _save_alignment(self, alignment: Alignment) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f".alignment-{alignment.session}.partial.npz"
        np.savez(partial, local_index=alignment.local_index, digest=np.array(alignment.digest))
        partial.replace(self._alignment_path(alignment.session))

    def load_alignment(self, session: str) -> Alignment | None:
        path = self._alignment_path(session)
        if not path.is_file():
            return None
        with np.load(path) as stored:
            local_index = stored["local_index"].astype(np.int64)
            digest = str(stored["digest"])
        if local_index.size and (local_index.min() < 0 or local_index.max() >= len(self.columns.ids)):
            raise ConfigError(f"{path} names rows the data product no longer has")
        return Alignment(session=session, local_index=local_index, digest=digest)

    def aligned_report(self, alignment: Alignment) -> SplitReport:
        labels = []
        shares = self.task.labels.at == SplitLabelsAt.GOVERNANCE
        if self.task.labels.domain == self.domain and shares and self.columns.y is not None:
            labels = to_wire({"labels": self.columns.y[alignment.local_index]})
        return SplitReport(
            task_id=self.task.id,
            party=self.domain,
            kind=SplitReportKind.ALIGNED,
            session=alignment.session,
            rows=alignment.rows,
            alignment_digest=alignment.digest,
            labels=labels,
        )

    # --- start-up: act on what the log says --------------------------------------------------------

    def record(self, event: Event) -> None:
        """Note one event of the log read at start-up (nothing is sent while catching up)."""
        if isinstance(event, SplitEpoch) and event.command == SplitCommand.PREDICT:
            return  # a request of the past: its requester is gone
        if isinstance(event, SplitEpoch):
            self._note_version(event)
            self.latest = event
            if event.command == SplitCommand.ALIGN:
                self.sent_alignment.clear()
                self.backlog = []
        elif (
            isinstance(event, SplitAlignment)
            and self.latest is not None
            and event.session == self.latest.session
        ):
            if event.sender == self.domain:
                self.sent_alignment.add(event.step.value)
            elif event.recipient == self.domain:
                self.backlog.append(event)
        elif isinstance(event, SplitReport) and event.party == self.domain:
            self.reported.add((event.kind.value, event.session, event.epoch, event.attempt))

    def resume(self) -> list[Outgoing]:
        """After catching up: carry on from the latest command."""
        command = self.latest
        if command is None or command.command in (SplitCommand.ABORT, SplitCommand.COMPLETE):
            return []
        if command.command == SplitCommand.ALIGN:
            alignment = self.load_alignment(command.session)
            if alignment is not None:
                if ("aligned", command.session, 0, 0) in self.reported:
                    return []
                return [(Topic.SPLIT_CONTROL, self.aligned_report(alignment))]
            if self.sent_alignment:
                log.warning("alignment session lost on restart", task=self.task.id, session=command.session)
                return []  # the PSI key died with the process: governance re-aligns on its timeout
            out = self.on_command(command)
            for message in self.backlog:
                out += self.on_alignment(message)
            self.backlog = []
            return out
        if ("ready", command.session, command.epoch, command.attempt) in self.reported:
            # a previous process took part in this attempt; its batches in flight died with it, so this
            # one waits for the next attempt (governance fails this one on its timeout)
            log.info("waiting for the next attempt", task=self.task.id, epoch=command.epoch)
            return []
        return self.on_command(command)

    # --- live ----------------------------------------------------------------------------------------

    def _note_version(self, command: SplitEpoch) -> None:
        part = command.base_parts.get(self.domain)
        if command.base_version is not None and part is not None:
            self.versions.setdefault(command.base_version, part)

    def _retain(self) -> None:
        """Keep the parts of the last ``keep_versions`` versions, delete the others."""
        kept = sorted(self.versions)[-self.config.split.keep_versions :]
        self.versions = {number: self.versions[number] for number in kept}
        gone = self.checkpoints.retain(set(self.versions.values()))
        if gone:
            log.info("split parts deleted", task=self.task.id, parts=len(gone), kept_versions=kept)

    def on_command(self, command: SplitEpoch) -> list[Outgoing]:
        if command.command == SplitCommand.PREDICT:
            return self._predict(command)
        self._note_version(command)
        if command.command in (SplitCommand.START, SplitCommand.COMPLETE):
            self._retain()  # nothing of the new attempt is on disk yet
        if command.command == SplitCommand.ALIGN:
            self.party = None
            self.predictions.pop(command.session, None)  # a request that took the session loses it
            self.aligner = Aligner(
                self.task,
                self.domain,
                self.columns.ids,
                command.session,
                labels=self.columns.y,
                max_elements=self.max_elements,
            )
            out = _routed(self.aligner.start())
            for message in [m for m in self._early if m.session == command.session]:
                out += self.on_alignment(message)
            self._early.clear()
            return out + self._aligned()
        if command.command == SplitCommand.START:
            party = self.party
            if party is None or party.alignment.session != command.session:
                alignment = self.load_alignment(command.session)
                if alignment is None:
                    log.error(
                        "no local alignment for the session", task=self.task.id, session=command.session
                    )
                    return []
                party = SplitParty(self.task, self.domain, self.columns, alignment, self.checkpoints)
                self.party = party
            return party.start(command)
        if command.command == SplitCommand.ABORT and self.party is not None:
            self.party.abort(command)
        if command.command == SplitCommand.COMPLETE:
            self.party = None
        return []

    def _aligned(self) -> list[Outgoing]:
        aligner = self.aligner
        if aligner is None or aligner.result is None:
            return []
        self._save_alignment(aligner.result)
        log.info("split alignment done", task=self.task.id, domain=self.domain, rows=aligner.result.rows)
        self.aligner = None
        return []

    def _predict(self, command: SplitEpoch) -> list[Outgoing]:
        if command.session in self.predictions or PRINCIPAL_SEPARATOR not in command.requester:
            return []  # a requester is '<principal>~<tag>', never a party's own name
        if self._training_session(command.session):
            log.warning("prediction refused", task=self.task.id, request=command.session, reason="session")
            return []  # it would capture the training alignment's PSI messages and wedge it
        if not self.task.may_predict(principal_of(command.requester)):
            log.warning(
                "prediction refused", task=self.task.id, request=command.session, reason="not_allowed"
            )
            return []
        try:
            part = PredictionPart(
                self.task,
                self.domain,
                command,
                self.columns,
                self.checkpoints,
                max_elements=self.max_elements,
            )
        except (ValueError, ConfigError) as exc:
            reason = f"version {command.epoch}: {exc}"
            if command.base_parts.get(self.domain) not in self.versions.values():
                keep = self.config.split.keep_versions
                reason += f" (this domain keeps the parts of its last {keep} versions)"
            log.warning("prediction refused", task=self.task.id, request=command.session, reason=reason)
            refusal = SplitReport(
                task_id=self.task.id,
                party=self.domain,
                kind=SplitReportKind.REFUSED,
                session=command.session,
                epoch=command.epoch,
                reason=reason,
            )
            return [(Topic.SPLIT_CONTROL, refusal)]
        while len(self.predictions) >= _MAX_PREDICTIONS:
            self.predictions.pop(next(iter(self.predictions)))
        self.predictions[command.session] = part
        out = part.start()
        for message in [m for m in self._early if m.session == command.session]:
            out += part.on_alignment(message)
        return out

    def _training_session(self, session: str) -> bool:
        """Whether ``session`` names a training alignment (running, commanded or done here)."""
        if self.aligner is not None and self.aligner.session == session:
            return True
        if self.latest is not None and self.latest.session == session:
            return True
        return self._alignment_path(session).exists()

    def on_alignment(self, message: SplitAlignment) -> list[Outgoing]:
        if message.recipient != self.domain:
            return []
        prediction = self.predictions.get(message.session)
        if prediction is not None:
            try:
                return prediction.on_alignment(message)
            except MeshflError as exc:
                log.warning("prediction message refused", task=self.task.id, reason=str(exc))
                return []
        aligner = self.aligner
        if aligner is None or aligner.session != message.session:
            self._early.append(message)
            return []
        try:
            out = _routed(aligner.handle(message))
        except MeshflError as exc:
            log.warning(
                "alignment message refused", task=self.task.id, sender=message.sender, reason=str(exc)
            )
            return []
        if aligner.is_holder:  # the holder answers share requests after its own result
            result = aligner.result
            if result is not None and not self._alignment_path(result.session).exists():
                self._save_alignment(result)
            return out
        return out + self._aligned()

    def on_gradient(self, message: SplitGradients) -> list[Outgoing]:
        return [] if self.party is None else self.party.on_gradient(message)

    def on_top_output(self, message: SplitActivations) -> list[Outgoing]:
        if message.phase == SplitPhase.PREDICT:
            prediction = self.predictions.get(message.request_id)
            return [] if prediction is None else prediction.on_top_output(message)
        return [] if self.party is None else self.party.on_top_output(message)
