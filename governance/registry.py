"""The model registry: a task's global versions, read from the model-version topic.

There is no registry database: versions are events on a topic kept forever, so the registry is a
snapshot read (``versions``, ``get``, ``latest``), a follower (``watch``), and an export of any one
version to a ``.safetensors`` file that carries where it came from (``pull``). Only versions that
governance signed count: forged ones are logged and counted (``refused``), never listed or pulled.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from safetensors.torch import save_file

from meshfl.bus import read_all
from meshfl.errors import MeshflError
from meshfl.events import ModelVersion
from meshfl.identity.trust import EnvelopeVerifier
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.subscribe import version_weights, watch_versions
from meshfl.topics import Topic

log = get_logger("meshfl.registry")


class VersionNotFoundError(MeshflError, LookupError):
    """The registry holds no such task or version."""


def _metadata_only(version: ModelVersion) -> ModelVersion:
    return version.model_copy(update={"tensors": [], "server_state": []})


class ModelRegistry:
    """Read access to the published model versions of every task on the bus."""

    def __init__(self, settings: MeshflSettings, *, timeout: float = 10.0) -> None:
        self._settings = settings
        self._timeout = timeout
        self.refused = 0

    def _scan(self, task_id: str | None) -> Iterator[ModelVersion]:
        """Each signed version once (the first copy on the log), in log order."""
        seen: set[tuple[str, int]] = set()
        verifier = EnvelopeVerifier.for_governance_events(self._settings, reader="model-registry")
        versions = read_all(
            self._settings, Topic.MODEL_VERSIONS, timeout=self._timeout, chunk_signers=verifier.registry
        )
        for envelope in versions:
            version = envelope.event
            if not isinstance(version, ModelVersion) or (task_id is not None and version.task_id != task_id):
                continue
            if not verifier.accept(envelope):
                self.refused += 1
                continue
            key = (version.task_id, version.version)
            if key not in seen:
                seen.add(key)
                yield version

    def tasks(self) -> list[str]:
        """The ids of the tasks with at least one published version."""
        return sorted({v.task_id for v in self._scan(None)})

    def versions(self, task_id: str) -> list[ModelVersion]:
        """Metadata of every version of ``task_id`` by version number (``tensors`` left empty)."""
        return sorted((_metadata_only(v) for v in self._scan(task_id)), key=lambda v: v.version)

    def get(self, task_id: str, version: int) -> ModelVersion:
        """One version with its tensors; ``VersionNotFoundError`` if the log does not hold it."""
        for found in self._scan(task_id):
            if found.version == version:
                return found
        raise VersionNotFoundError(
            f"task {task_id!r} has no version {version} on {self._settings.topic_prefix}*"
        )

    def latest(self, task_id: str) -> ModelVersion | None:
        """The highest-numbered version of ``task_id`` with its tensors, or ``None``."""
        best: ModelVersion | None = None
        for found in self._scan(task_id):
            if best is None or found.version > best.version:
                best = found
        return best

    def watch(
        self,
        task_id: str,
        *,
        from_version: int = 0,
        timeout: float | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[ModelVersion]:
        """Past then new versions of ``task_id`` as they land (see ``meshfl.subscribe.watch_versions``)."""
        return watch_versions(self._settings, task_id, from_version=from_version, timeout=timeout, stop=stop)

    def pull(self, task_id: str, version: int | None, path: Path) -> ModelVersion:
        """Write a version's weights to ``path`` as safetensors with its provenance in the metadata.

        ``version=None`` pulls the latest. The metadata (``task``, ``version``, ``sha256``, ``parent``,
        ``round``, ``domains``, ``created_at``) lets anyone match the file against the log later.
        """
        found = self.latest(task_id) if version is None else self.get(task_id, version)
        if found is None:
            raise VersionNotFoundError(f"task {task_id!r} has no published version")
        weights = version_weights(found)
        metadata = {
            "task": found.task_id,
            "version": str(found.version),
            "sha256": found.sha256,
            "parent": "" if found.parent_version is None else str(found.parent_version),
            "round": str(found.round),
            "strategy": found.strategy.name,
            "domains": ",".join(found.contributing_domains),
            "created_at": found.created_at.isoformat(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            save_file({k: t.contiguous() for k, t in weights.items()}, str(path), metadata=metadata)
        except OSError as exc:
            raise MeshflError(f"cannot write {path}: {exc}") from exc
        log.info("model version pulled", task=task_id, version=found.version, path=str(path))
        return found
