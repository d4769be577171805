"""Private brokers for tests, on ports of their own even on a machine shared with other programs.

``free_port_block`` finds ports free at the moment it looks; a program outside the test run (another
CI job, a daemon) can bind one of them before the JVM does, and the start then fails with "held by
another program". A private broker's ports are arbitrary, so the start is retried on a fresh block in
a fresh data directory; any other failure is the test's to report.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from meshfl.broker import LocalBroker, free_port_block
from meshfl.errors import BrokerError

PORT_TRIES = 3
_TAKEN = ("held by another program", "already in use by another program")


def start_private_broker(
    data_dir: Path, make: Callable[[Path, int], LocalBroker], *, ports: int = 2, timeout: float = 180.0
) -> tuple[LocalBroker, str]:
    """Start ``make(data_dir, first_port)``; return it and its bootstrap servers.

    A broker whose start fails is stopped (killed) before this returns or raises.
    """
    for attempt in range(1, PORT_TRIES + 1):
        broker = make(data_dir, free_port_block(ports))
        try:
            return broker, broker.start(timeout=timeout)
        except BrokerError as exc:
            broker.stop(kill=True)
            if attempt == PORT_TRIES or not any(reason in str(exc) for reason in _TAKEN):
                raise
            shutil.rmtree(data_dir, ignore_errors=True)
    raise AssertionError("unreachable")
