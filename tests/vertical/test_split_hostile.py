"""One hostile split message (a tensor whose bytes do not match its shape, or of another dtype, signed
by a party that may send it) is refused: it never stops split governance or a split party, and the
honest parties still finish the epoch. What a party may not send (``test_split_forgery``) is refused
before that, by its signature."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from governance.vertical.coordinator import SplitCoordinator
from governance.vertical.recovery import Recovered, recover, trusted_events
from governance.vertical.service import SplitGovernance
from meshfl.errors import (
    BrokerError,
    BusError,
    ChunkError,
    ConfigError,
    TensorCodecError,
    TrainingStopped,
    stops_the_daemon,
)
from meshfl.events import Tensor, TensorDType
from meshfl.identity import Signer
from meshfl.identity.keys import generate_private_key
from meshfl.tensors import to_wire
from meshfl.topics import Topic
from meshfl.vertical.events import (
    SplitActivations,
    SplitCommand,
    SplitEpoch,
    SplitGradients,
    SplitLabelsAt,
    SplitReport,
)
from meshfl.vertical.spec import check_split_task

from .split_builders import split_task
from .test_split_protocol import Mesh

_BAD = Tensor(name="h", dtype=TensorDType.FLOAT32, shape=[16, 4], data=b"\x00" * 7)


def _started(
    tmp_path: Path, at: SplitLabelsAt, **overrides: object
) -> tuple[Mesh, SplitEpoch, SplitGovernance]:
    mesh = Mesh(split_task(labels_at=at, epochs=1, **overrides), tmp_path)
    mesh.align()
    start = next(e for _, e in mesh.queue if isinstance(e, SplitEpoch) and e.command == SplitCommand.START)
    keys = mesh.keys
    service = SplitGovernance(
        keys.settings(), [mesh.task], signer=keys.signer("governance"), trust=keys.trust()
    )
    service.coordinators[mesh.task.id] = mesh.coordinator
    return mesh, start, service


def data(mesh: Mesh, event: object) -> object:
    """The event signed by its sender, as governance's data consumer reads it."""
    return mesh.keys.envelope(mesh.keys.sign(event), Topic.SPLIT_ACTIVATIONS)  # type: ignore[arg-type]


def test_split_governance_refuses_malformed_and_foreign_dtype_activations(tmp_path: Path) -> None:
    mesh, start, service = _started(tmp_path, SplitLabelsAt.GOVERNANCE)
    rows = len(mesh.coordinator.current.batches[0])  # type: ignore[union-attr]
    common = {"task_id": mesh.task.id, "epoch": start.epoch, "attempt": start.attempt, "batch": 0}
    for tensor in (
        _BAD.model_copy(update={"shape": [rows, 4]}),
        Tensor(name="h", dtype=TensorDType.FLOAT64, shape=[rows, 4], data=b"\x00" * (8 * rows * 4)),
    ):
        for sender in ("d0", "d1", "d2"):
            hostile = SplitActivations(
                **common, phase="train", sender=sender, recipient="governance", tensor=tensor
            )
            assert service.on_data(data(mesh, hostile)) == []  # type: ignore[arg-type]
    mesh.run()  # the honest parties' copies still count: the epoch completes
    assert [v.version for v in mesh.versions()] == [1]


def test_split_governance_refuses_a_malformed_owner_gradient(tmp_path: Path) -> None:
    mesh, start, service = _started(tmp_path, SplitLabelsAt.DOMAIN)
    for party in mesh.parties.values():
        for _topic, event in party.start(start):
            if isinstance(event, SplitActivations):
                mesh.coordinator.on_activations(event, mesh.now)
            else:
                mesh.coordinator.on_report(event, mesh.now)  # type: ignore[arg-type]
    held = mesh.coordinator.top.held_batch  # type: ignore[union-attr]
    assert held is not None
    hostile = SplitGradients(
        task_id=mesh.task.id,
        epoch=start.epoch,
        attempt=start.attempt,
        batch=held,
        sender="d0",
        recipient="governance",
        tensor=_BAD,
    )
    assert service.on_data(data(mesh, hostile)) == []  # type: ignore[arg-type]
    assert mesh.coordinator.top.held_batch == held  # type: ignore[union-attr]


def test_a_split_party_refuses_a_malformed_gradient_and_top_output(tmp_path: Path) -> None:
    mesh, start, _ = _started(tmp_path, SplitLabelsAt.DOMAIN)
    owner = mesh.parties["d0"]
    owner.start(start)
    common = {"task_id": mesh.task.id, "epoch": start.epoch, "attempt": start.attempt, "batch": 0}
    gradient = SplitGradients(**common, sender="governance", recipient="d0", tensor=_BAD)
    top = SplitActivations(**common, phase="train", sender="governance", recipient="d0", tensor=_BAD)
    assert owner.on_gradient(gradient) == []
    assert owner.on_top_output(top) == []


def test_a_split_task_id_that_leaves_the_state_folder_is_refused() -> None:
    """The id names ``<domain>/.meshfl/split/<id>``: a task from the bus cannot point it elsewhere."""
    check_split_task(split_task())
    for hostile in ("../../../tmp/owned", "/etc", "..", "a/b", ""):
        with pytest.raises(ConfigError, match="task id"):
            check_split_task(split_task(id=hostile))


@pytest.mark.parametrize(
    "labels",
    [
        [Tensor(name="labels", dtype=TensorDType.INT64, shape=[240], data=b"\x00" * 9)],  # bytes too short
        to_wire({"labels": torch.full((240,), 7, dtype=torch.int64)}),  # classes the task does not have
        to_wire({"labels": torch.zeros(240)}),  # float labels
    ],
)
def test_a_hostile_aligned_report_in_the_log_does_not_stop_split_governance_at_start(labels) -> None:  # type: ignore[no-untyped-def]
    """Recovery takes the first ``aligned`` report of each party from the log: one written there by
    anyone, with labels that cannot be used, made every (re)start raise; now the task aligns again."""
    task = split_task()
    reports = {
        spec.domain: SplitReport(
            task_id=task.id,
            party=spec.domain,
            kind="aligned",
            session="s",
            rows=240,
            alignment_digest="d",
            labels=labels if spec.domain == task.labels.domain else [],
        )
        for spec in task.domains
    }
    coordinator = SplitCoordinator(task, Recovered(session="s", aligned=reports))
    out = coordinator.begin(0.0)
    assert [e.command for _, e in out if isinstance(e, SplitEpoch)] == [SplitCommand.ALIGN]
    assert coordinator.current is None


def test_recovery_ignores_commands_governance_and_reports_their_party_did_not_sign() -> None:
    """Anyone can write to split-control and split-versions: a forged ``complete`` (or a version of a far
    epoch) read at start-up ended the task, a forged ``aligned`` report was taken as its party's; only
    events signed by whoever must sign them count."""
    from .split_keys import SplitKeys

    keys = SplitKeys()
    task = split_task()
    start = SplitEpoch(task_id=task.id, command="start", session="s", epoch=1, attempt=1)
    align = SplitEpoch(task_id=task.id, command="align", session="s", epoch=0, attempt=0)
    forged_complete = SplitEpoch(task_id=task.id, command="complete", session="s", epoch=2, attempt=0)
    other = Signer("governance", generate_private_key()).sign(forged_complete)
    aligned = {
        d: SplitReport(task_id=task.id, party=d, kind="aligned", session="s", rows=240, alignment_digest="d")
        for d in ("d0", "d1", "d2")
    }
    honest = [keys.sign(aligned["d0"]), keys.sign(aligned["d1"])]
    forged_d2 = [
        aligned["d2"],  # unsigned
        keys.signer("d1").sign(aligned["d2"]),  # d1 speaking for d2
    ]
    registry = keys.registry()
    control = trusted_events(
        [keys.sign(align), keys.sign(start), forged_complete, other, *honest, *forged_d2], registry
    )
    state = recover(task.id, control, [])
    assert not state.complete and state.open_attempt == (1, 1)
    assert sorted(state.aligned) == ["d0", "d1"]


@pytest.mark.parametrize("raised", [KeyError("x"), TypeError("x"), IndexError("x"), ZeroDivisionError()])
def test_any_error_one_message_raises_is_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raised: Exception
) -> None:
    """Not only the errors foreseen: whatever a signed message makes the coordinator raise (a torch or
    pydantic error deep inside) refuses that message, and the daemon goes on."""
    mesh, start, service = _started(tmp_path, SplitLabelsAt.GOVERNANCE)

    calls: list[object] = []

    def boom(*args: object, **__: object) -> None:
        calls.append(args)
        raise raised

    monkeypatch.setattr(mesh.coordinator, "on_activations", boom)
    rows = len(mesh.coordinator.current.batches[0])  # type: ignore[union-attr]
    tensor = Tensor(name="h", dtype=TensorDType.FLOAT32, shape=[rows, 4], data=b"\x00" * (4 * rows * 4))
    event = SplitActivations(
        task_id=mesh.task.id,
        epoch=start.epoch,
        attempt=start.attempt,
        batch=0,
        phase="train",
        sender="d0",
        recipient="governance",
        tensor=tensor,
    )
    assert service.on_data(data(mesh, event)) == []  # type: ignore[arg-type]
    assert calls, "the message reached the coordinator"


def test_only_the_environment_stops_a_daemon() -> None:
    assert stops_the_daemon(BusError("the broker is gone"))
    assert stops_the_daemon(BrokerError("no broker"))
    assert stops_the_daemon(TrainingStopped("SIGTERM"))
    assert stops_the_daemon(KeyboardInterrupt())
    assert not stops_the_daemon(ChunkError("a chunk set that does not reassemble"))
    assert not stops_the_daemon(TensorCodecError("bytes do not match the shape"))
    assert not stops_the_daemon(KeyError("anything else"))
