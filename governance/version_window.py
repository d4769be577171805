"""The recent versions of an asynchronous task, read back from the log when the service starts.

FedBuff takes each buffered update's delta against the version it trained from (Nguyen et al., AISTATS
2022, arXiv:2106.06639), so governance holds the weights of the last ``max_staleness`` versions before the
latest one (``TaskState.recent``, kept up to date as versions are published). Older updates are withdrawn
from the buffer, so nothing older is ever needed: memory is ``(max_staleness + 1) x model``. A restarted
service reads that window from the model-versions topic, the same bytes the domains trained on and the
audit replay uses, so a restart aggregates exactly what an uninterrupted service would have.
"""

from __future__ import annotations

import torch

from governance.log_checks import decode_version
from governance.log_state import LogState
from governance.rounds import window_floor
from governance.state_topic import read_versions
from meshfl.events import ModelVersion, TrainingTask
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings

log = get_logger("meshfl.governance")


def read_window(
    settings: MeshflSettings, task: TrainingTask, latest: ModelVersion, log_state: LogState
) -> dict[int, dict[str, torch.Tensor]]:
    """Weights of ``task``'s versions in ``[latest - max_staleness, latest)``, by version number.

    Read where ``log_state.version_from`` says they lie (the start-up read recorded it), not by a scan
    of every version. The first copy of a version on the log wins (as for the latest version); a
    version that cannot be found or decoded is left out, and an update based on it is then withdrawn
    as too stale to aggregate.
    """
    floor = max(window_floor(task, latest.version), 0)
    wanted = {(task.id, number) for number in range(floor, latest.version)}
    found: dict[int, dict[str, torch.Tensor]] = {}
    for (_task, number), env in read_versions(settings, log_state, wanted, {task.id: task}).items():
        assert isinstance(env.event, ModelVersion)
        decoded = decode_version(env.event, task)
        if isinstance(decoded, str):
            log.error("window version cannot be decoded", task=task.id, version=number, error=decoded)
            continue
        found[number] = decoded[0]
    missing = sorted(n for _t, n in wanted - {(task.id, n) for n in found})
    if missing:
        log.warning("window versions not found", task=task.id, versions=missing)
    return found
