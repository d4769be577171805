"""The heartbeat thread outlives a beat that cannot be built (the agent changes its state meanwhile)."""

from __future__ import annotations

import threading

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshfl.domain.heartbeats import send_heartbeats
from meshfl.events import DomainHeartbeat
from meshfl.identity import Signer
from meshfl.settings import MeshflSettings


def test_a_beat_that_raises_is_skipped_and_the_thread_keeps_beating() -> None:
    stop = threading.Event()
    calls = 0

    def beat() -> DomainHeartbeat:
        nonlocal calls
        calls += 1
        if calls >= 3:
            stop.set()
        raise RuntimeError("dictionary changed size during iteration")

    settings = MeshflSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="hb.")
    send_heartbeats(settings, Signer("d", Ed25519PrivateKey.generate()), beat, 0.01, stop, "d")
    assert calls == 3  # it went on after the first failure, and stopped when asked
