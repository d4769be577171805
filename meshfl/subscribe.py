"""Follow a task's global model versions as they land: the data scientist's side of the registry.

The model-version topic is the registry (kept forever), so subscribing is reading it from the start
and then waiting at its end. ``subscribe`` yields ``(version, state_dict)`` ready for
``model.load_state_dict``; ``watch_versions`` yields the ``ModelVersion`` events themselves. Each
version's tensors are checked against its recorded SHA-256 before they are handed out, and only
versions governance signed (its key pinned in settings) are seen at all: a forged version is logged,
counted and skipped.

    import meshfl
    for version, state in meshfl.subscribe("digits-mlp", timeout=60):
        model.load_state_dict(state)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import torch

from meshfl.bus import EventConsumer
from meshfl.errors import TensorCodecError
from meshfl.events import ModelVersion
from meshfl.identity.trust import EnvelopeVerifier
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings, load_settings
from meshfl.tensors import from_wire, tensors_sha256
from meshfl.topics import Topic

log = get_logger("meshfl.subscribe")

_POLL_SECONDS = 0.5


def watch_versions(
    settings: MeshflSettings,
    task_id: str,
    *,
    from_version: int = 0,
    timeout: float | None = None,
    stop: threading.Event | None = None,
) -> Iterator[ModelVersion]:
    """Every version of ``task_id`` numbered ``from_version`` or above, each once, oldest first.

    Past versions come first (read from the start of the topic), then new ones as they are
    published. Ends when ``stop`` is set or, with ``timeout``, after that many seconds without a new
    version; otherwise it follows the topic forever. A version is yielded only once even if the log
    holds it twice.
    """
    seen: set[int] = set()
    verifier = EnvelopeVerifier.for_governance_events(settings, reader="subscribe")
    last_news = time.monotonic()
    with EventConsumer(settings, [Topic.MODEL_VERSIONS], from_beginning=True, dead_letters=False) as consumer:
        while stop is None or not stop.is_set():
            envelope = consumer.poll(_POLL_SECONDS)
            if envelope is None:
                if timeout is not None and time.monotonic() - last_news > timeout:
                    return
                continue
            version = envelope.event
            if (
                not isinstance(version, ModelVersion)
                or version.task_id != task_id
                or version.version < from_version
                or version.version in seen
                or not verifier.accept(envelope)
            ):
                continue
            seen.add(version.version)
            last_news = time.monotonic()
            log.debug("model version received", task=task_id, version=version.version)
            yield version


def version_weights(version: ModelVersion) -> dict[str, torch.Tensor]:
    """The version's tensors as a state dict, after checking them against the recorded SHA-256."""
    if tensors_sha256(version.tensors) != version.sha256:
        raise TensorCodecError(
            f"version {version.version} of {version.task_id}: its tensors do not match its sha256 "
            f"{version.sha256[:16]} (run `meshfl audit replay --task {version.task_id}`)"
        )
    return from_wire(version.tensors)


def subscribe(
    task_id: str,
    *,
    settings: MeshflSettings | None = None,
    from_version: int = 0,
    timeout: float | None = None,
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Yield ``(version number, state_dict)`` for each version of ``task_id`` (see ``watch_versions``).

    ``settings`` default to ``load_settings()`` (``MESHFL_*`` variables, ``meshfl.toml``).
    Raises ``TensorCodecError`` on a version whose tensors do not match its hash.
    """
    resolved = settings if settings is not None else load_settings()
    for version in watch_versions(resolved, task_id, from_version=from_version, timeout=timeout):
        yield version.version, version_weights(version)
