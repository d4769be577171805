"""What governance needs to resume a split task, read from the log (the log is the state).

The latest version says which epoch is complete and holds the top's tensors; the latest ``align``
command and the ``aligned`` reports of its session give the rows (and, with labels at governance, the
shared labels); a ``start`` without a version or an ``abort`` after it is an attempt left open by a
crash, to be abandoned with a decision and retried under a higher attempt number.

Nothing read is trusted unsigned (``trusted_events``): commands and versions must be governance's own
(a forged ``complete`` or a version of epoch 10**9 would end the task; a forged top would stop each
start), an ``aligned`` report its party's, with the key governance registered for it (a forged one,
with the right row count and digest, would be taken as the party's and could bring wrong labels).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from meshfl.bus import read_all
from meshfl.errors import SignatureError
from meshfl.events import Event
from meshfl.identity import TrustRegistry
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from meshfl.vertical.events import (
    SplitCommand,
    SplitEpoch,
    SplitModelVersion,
    SplitReport,
    SplitReportKind,
)

log = get_logger("meshfl.governance.vertical")


@dataclass
class Recovered:
    """What the log says about a task (``governance.vertical.recovery``)."""

    session: str | None = None
    aligned: dict[str, SplitReport] = field(default_factory=dict)
    latest: SplitModelVersion | None = None
    versions: dict[int, SplitModelVersion] = field(default_factory=dict)  # the first copy of each
    attempts: dict[int, int] = field(default_factory=dict)  # epoch -> highest attempt started
    open_attempt: tuple[int, int] | None = None
    complete: bool = False


def recover(task_id: str, control: Iterable[Event], versions: Iterable[Event]) -> Recovered:
    """Fold a task's control events and versions (each in log order) into its recovered state."""
    state = Recovered()
    for event in versions:
        if not isinstance(event, SplitModelVersion) or event.task_id != task_id:
            continue
        state.versions.setdefault(event.version, event)
        if state.latest is None or event.version > state.latest.version:
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


def trusted_events(events: Iterable[Event], registry: TrustRegistry) -> list[Event]:
    """The commands, reports and versions among ``events`` that are signed by whoever must sign them
    (governance for commands and versions, the party for a report) with a key ``registry`` trusts."""
    kept: list[Event] = []
    for event in events:
        if not isinstance(event, SplitEpoch | SplitModelVersion | SplitReport):
            continue
        try:
            registry.verify(event)
        except SignatureError as exc:
            log.warning(
                "split event in the log not trusted: ignored",
                event_type=type(event).__name__,
                policy=exc.policy,
                reason=exc.reason,
            )
            continue
        kept.append(event)
    return kept


def read_recovered(
    settings: MeshflSettings, task_ids: Iterable[str], registry: TrustRegistry
) -> dict[str, Recovered]:
    """``recover`` every task from one snapshot of the control and version topics (trusted events only)."""
    wanted = set(task_ids)

    def _read(topic: Topic) -> list[Event]:
        events = [env.event for env in read_all(settings, topic)]
        return trusted_events([e for e in events if getattr(e, "task_id", None) in wanted], registry)

    control, versions = _read(Topic.SPLIT_CONTROL), _read(Topic.SPLIT_VERSIONS)
    return {task_id: recover(task_id, control, versions) for task_id in wanted}
