"""What governance needs to resume a split task, read from the log (the log is the state).

The latest version says which epoch is complete and holds the top's tensors; the latest ``align``
command and the ``aligned`` reports of its session give the rows (and, with labels at governance, the
shared labels); a ``start`` without a version or an ``abort`` after it is an attempt left open by a
crash, to be abandoned with a decision and retried under a higher attempt number.

Commands and versions are governance's own: with its key pinned, one not signed by it is ignored (a
forged ``complete`` or a version of epoch 10**9 would end the task; a forged top would stop each start).
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.vertical.coordinator import Recovered
from meshfl.bus import read_all
from meshfl.errors import SignatureError
from meshfl.events import Event
from meshfl.identity import TrustRegistry
from meshfl.identity.trust import governance_public_key
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from meshfl.vertical.events import (
    GOVERNANCE,
    SplitCommand,
    SplitEpoch,
    SplitModelVersion,
    SplitReport,
    SplitReportKind,
)

log = get_logger("meshfl.governance.vertical")


def recover(task_id: str, control: Iterable[Event], versions: Iterable[Event]) -> Recovered:
    """Fold a task's control events and versions (each in log order) into its recovered state."""
    state = Recovered()
    for event in versions:
        newer = isinstance(event, SplitModelVersion) and event.task_id == task_id
        if newer and (state.latest is None or event.version > state.latest.version):
            state.latest = event
    aligned: dict[str, dict[str, SplitReport]] = {}
    started: tuple[int, int] | None = None
    closed: set[tuple[int, int]] = set()
    for event in control:
        if isinstance(event, SplitEpoch) and event.task_id == task_id:
            if event.command == SplitCommand.ALIGN:
                state.session = event.session
            elif event.command == SplitCommand.START:
                state.attempts[event.epoch] = max(state.attempts.get(event.epoch, 0), event.attempt)
                started = (event.epoch, event.attempt)
            elif event.command == SplitCommand.ABORT:
                closed.add((event.epoch, event.attempt))
            elif event.command == SplitCommand.COMPLETE:
                state.complete = True
        elif (
            isinstance(event, SplitReport)
            and event.task_id == task_id
            and event.kind == SplitReportKind.ALIGNED
        ):
            aligned.setdefault(event.session, {}).setdefault(event.party, event)
    if state.session is not None:
        state.aligned = aligned.get(state.session, {})
    done_epoch = 0 if state.latest is None else state.latest.epoch
    if started is not None and started not in closed and started[0] > done_epoch:
        state.open_attempt = started
    return state


def governance_signed(events: Iterable[Event], public_key: Ed25519PublicKey) -> list[Event]:
    """The events, less the commands and versions that governance's key did not sign."""
    registry = TrustRegistry(public_key)
    kept: list[Event] = []
    for event in events:
        if isinstance(event, SplitEpoch | SplitModelVersion):
            try:
                registry.verify(event, sender=GOVERNANCE)
            except SignatureError as exc:
                log.warning(
                    "split event not signed by governance ignored", policy=exc.policy, reason=exc.reason
                )
                continue
        kept.append(event)
    return kept


def read_recovered(settings: MeshflSettings, task_ids: Iterable[str]) -> dict[str, Recovered]:
    """``recover`` every task from one snapshot of the control and version topics."""
    control = [env.event for env in read_all(settings, Topic.SPLIT_CONTROL)]
    versions = [env.event for env in read_all(settings, Topic.SPLIT_VERSIONS)]
    if settings.governance_public_key:
        key = governance_public_key(settings)
        control, versions = governance_signed(control, key), governance_signed(versions, key)
    return {task_id: recover(task_id, control, versions) for task_id in task_ids}
