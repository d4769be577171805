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
from governance.rounds import window_floor
from meshfl.bus import read_all
from meshfl.events import ModelVersion, TrainingTask
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

log = get_logger("meshfl.governance")


def read_window(
    settings: MeshflSettings, task: TrainingTask, latest: ModelVersion
) -> dict[int, dict[str, torch.Tensor]]:
    """Weights of ``task``'s versions in ``[latest - max_staleness, latest)``, by version number.

    The first copy of a version on the log wins (as for the latest version); a version that cannot be
    decoded is left out, and an update based on it is then withdrawn as too stale to aggregate.
    """
    floor = window_floor(task, latest.version)
    if floor >= latest.version:
        return {}
    found: dict[int, dict[str, torch.Tensor]] = {}
    for env in read_all(settings, Topic.MODEL_VERSIONS):
        version = env.event
        if not isinstance(version, ModelVersion) or version.task_id != task.id:
            continue
        if not floor <= version.version < latest.version or version.version in found:
            continue
        decoded = decode_version(version, task)
        if isinstance(decoded, str):
            log.error(
                "window version cannot be decoded", task=task.id, version=version.version, error=decoded
            )
            continue
        found[version.version] = decoded[0]
    return found
