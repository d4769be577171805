"""One governance process for both kinds of task: the horizontal ``GovernanceService`` and the split
``SplitGovernance`` side by side, sharing the stop signal and the audit trail (the same topics of
decisions and tasks). The first to fail stops the other; the exit code is the worst of the two."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from meshfl.events import TrainingTask
from meshfl.identity import Signer
from meshfl.logs import get_logger
from meshfl.metrics import Health
from meshfl.settings import MeshflSettings
from meshfl.vertical.events import SplitTask

log = get_logger("meshfl.governance")


def run_governance(
    settings: MeshflSettings,
    tasks: Sequence[TrainingTask | SplitTask],
    stop: threading.Event,
    *,
    service_id: str = "governance",
    instance_id: str | None = None,
    exit_when_complete: bool = False,
    signer: Signer | None = None,
    health: Health | None = None,
    threads: int = 1,
) -> int:
    """Run the services the tasks need until ``stop`` (or, with ``exit_when_complete``, all are done).

    ``health`` turns ready when the horizontal service has rebuilt its state (at once without one)."""
    from governance.service import GovernanceService

    horizontal = [task for task in tasks if isinstance(task, TrainingTask)]
    vertical = [task for task in tasks if isinstance(task, SplitTask)]
    runs: list[Callable[[threading.Event], int]] = []
    if horizontal or not vertical:
        runs.append(
            GovernanceService(
                settings,
                horizontal,
                service_id=service_id,
                instance_id=instance_id,
                exit_when_complete=exit_when_complete,
                health=health,
                threads=threads,
            ).run
        )
    elif health is not None:
        health.set_ready()
    if vertical:  # split learning needs the vertical extra: imported only when a vertical task is run
        from governance.vertical.service import SplitGovernance

        if signer is None and settings.governance_private_key is not None:
            from meshfl.identity.trust import governance_signer

            signer = governance_signer(settings)  # split events signed like every governance event
        runs.append(
            SplitGovernance(
                settings, vertical, signer=signer, exit_when_complete=exit_when_complete, threads=threads
            ).run
        )
    if len(runs) == 1:
        return runs[0](stop)
    codes: list[int] = []
    errors: list[BaseException] = []

    def _thread(run: Callable[[threading.Event], int]) -> None:
        try:
            codes.append(run(stop))
        except BaseException as exc:  # handed to the caller below, never swallowed
            errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=_thread, args=(run,), name=f"governance-{i}") for i, run in enumerate(runs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return max(codes, default=0)
