"""The agent's liveness beats: a thread of their own, on a producer of their own (never transactional,
so a beat never waits for an update or a progress commit)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from meshfl.bus import EventProducer
from meshfl.errors import MeshflError
from meshfl.events import DomainHeartbeat
from meshfl.identity import Signer
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, client_name

log = get_logger("meshfl.domain")


def send_heartbeats(
    settings: MeshflSettings,
    signer: Signer,
    beat: Callable[[], DomainHeartbeat],
    interval: float,
    stop: threading.Event,
    domain: str,
) -> None:
    """Publish ``beat()`` every ``interval`` seconds until ``stop``; a beat not delivered is logged."""
    producer = EventProducer(
        settings, client_id=client_name(settings, f"agent-{domain}-heartbeat"), signer=signer
    )
    try:
        while not stop.is_set():
            try:
                event = beat()
            except Exception as exc:  # built from state the agent changes meanwhile: skip one, keep beating
                log.warning("heartbeat not built", domain=domain, error=f"{type(exc).__name__}: {exc}")
            else:
                try:
                    producer.produce(Topic.HEARTBEATS, event, key=event.domain)
                    producer.flush(timeout=10)
                except MeshflError as exc:
                    log.warning("heartbeat not delivered", domain=event.domain, error=str(exc))
            stop.wait(interval)
    finally:
        producer.close()


def meshfl_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meshfl")
    except PackageNotFoundError:
        return "0+unknown"
