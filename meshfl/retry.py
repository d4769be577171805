"""One retry policy for every transient failure: exponential backoff with jitter, a deadline, and SIGTERM.

Built on tenacity. Every retry loop in meshfl goes through ``retrying``: it backs off (jittered, so
restarted daemons do not retry in lockstep), gives up at its deadline by re-raising the last error, and
stops at once when the process is asked to stop (``SHUTDOWN``, set by the daemon runner's SIGTERM
handler), because its waits are ``SHUTDOWN.wait`` rather than ``time.sleep``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_any,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from meshfl.logs import get_logger

log = get_logger("meshfl.retry")

SHUTDOWN = threading.Event()
"""Set when the process must stop (SIGTERM/SIGINT): every retry gives up at its next attempt."""


class _StopOnShutdown(stop_base):
    def __call__(self, retry_state: RetryCallState) -> bool:
        return SHUTDOWN.is_set()


def retrying(
    what: str,
    *,
    retry_on: Callable[[BaseException], bool],
    deadline: float,
    initial: float = 0.05,
    max_wait: float = 2.0,
    sleep: Callable[[float], object] | None = None,
    quiet: bool = False,
) -> Retrying:
    """A tenacity ``Retrying`` for ``what``: retries errors ``retry_on`` accepts until ``deadline`` s.

    ``sleep`` replaces the wait (e.g. a producer's ``poll`` to serve callbacks while waiting); by
    default waits end early on ``SHUTDOWN``. The last error is re-raised when it gives up. ``quiet``
    logs each retry at debug level: for waits that are the normal course (backpressure).
    """

    def _log(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        (log.debug if quiet else log.warning)(
            "retrying", what=what, attempt=state.attempt_number, error=str(error)
        )

    return Retrying(
        retry=retry_if_exception(retry_on),
        stop=stop_any(stop_after_delay(deadline), _StopOnShutdown()),
        wait=wait_exponential(multiplier=initial, max=max_wait) + wait_random(0, initial),
        sleep=sleep if sleep is not None else SHUTDOWN.wait,
        before_sleep=_log,
        reraise=True,
    )
