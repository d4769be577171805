"""Test hooks for the fault-matrix tests: kill or fail the process at a named point. Inert by default.

``MESHFL_KILL_AT`` and ``MESHFL_FAIL_AT`` are read once, at import. Each is a comma-separated list of
``point`` or ``point:n`` (the n-th time the point is reached, 1 by default). Unset (production), every
hook is one dict lookup that finds nothing. Points:

=========================== ==========================================================================
``governance.after-consume`` an update is decided, its round not yet closed (transaction open)
``governance.mid-aggregation`` a round's version is computed, not yet produced
``governance.before-commit`` the version and decisions are produced, the transaction not committed
``governance.during-abort``  a transaction failed; about to abort it
``governance.commit``        (``FAIL_AT`` only) the commit raises ``BusError``: drives the abort path
``producer.chunk``           a chunk of a chunked event was queued (agent mid chunked upload)
``agent.before-progress``    an agent's update is on the log, its ``AgentProgress`` not yet written
=========================== ==========================================================================

``KILL_AT`` sends SIGKILL to the process itself (no cleanup, like ``kill -9``); ``FAIL_AT`` raises
``BusError`` as a failed Kafka call would.
"""

from __future__ import annotations

import os
import signal

from meshfl.errors import BusError


def _parse(value: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, count = item.partition(":")
        points[name] = int(count) if count else 1
    return points


_KILL = _parse(os.environ.get("MESHFL_KILL_AT", ""))
_FAIL = _parse(os.environ.get("MESHFL_FAIL_AT", ""))
_KILL_SEEN: dict[str, int] = {}
_FAIL_SEEN: dict[str, int] = {}


def _reached(table: dict[str, int], seen: dict[str, int], point: str) -> bool:
    target = table.get(point)
    if target is None:
        return False
    seen[point] = count = seen.get(point, 0) + 1
    return count == target


def armed(point: str) -> bool:
    """Whether a hook is set for ``point`` (to prepare what a realistic crash there needs)."""
    return point in _KILL or point in _FAIL


def kill_point(point: str) -> None:
    """SIGKILL this process if ``MESHFL_KILL_AT`` names ``point`` (at its n-th passage)."""
    if _KILL and _reached(_KILL, _KILL_SEEN, point):
        os.kill(os.getpid(), signal.SIGKILL)


def fail_point(point: str) -> None:
    """Raise ``BusError`` if ``MESHFL_FAIL_AT`` names ``point`` (at its n-th passage)."""
    if _FAIL and _reached(_FAIL, _FAIL_SEEN, point):
        raise BusError(f"injected failure at {point} (MESHFL_FAIL_AT)")
