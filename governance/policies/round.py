"""When to close a round (sync) or flush the buffer (async): pure functions of counts and a clock.

Sync: a round closes as soon as its target is reached (``target_domains``, else the number of domains
expected, else ``min_domains``), or at the deadline if at least ``min_domains`` are in; the domains
still missing then are named as stragglers, which is what an operator wants to read. Below
``min_domains`` a round never closes: it waits (an aggregate of too few updates is neither useful nor,
with DP, private enough). Async: FedBuff [Nguyen et al., 2022, "Federated Learning with Buffered
Asynchronous Aggregation", arXiv:2106.06639] aggregates every K accepted updates.

The clock is passed in (``now``), so readiness is replayable and testable without sleeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from governance.policies.base import summarize
from meshfl.events import RoundPolicy


@dataclass(frozen=True)
class RoundReadiness:
    """Whether to aggregate now; truthy exactly when ``ready`` (so ``if round_ready(...)`` reads right)."""

    ready: bool
    reason: str
    stragglers_note: str = ""

    def __bool__(self) -> bool:
        return self.ready


def round_target(policy: RoundPolicy, expected_domains: int | None = None) -> int:
    """How many accepted updates close a round early; never below ``min_domains``."""
    if policy.target_domains is not None:
        target = policy.target_domains
    elif expected_domains is not None:
        target = expected_domains
    else:
        target = policy.min_domains
    return max(target, policy.min_domains, 1)


def _stragglers(pending_domains: Sequence[str]) -> str:
    if not pending_domains:
        return ""
    return f"stragglers: {summarize(sorted(pending_domains), limit=10)}"


def round_ready(
    policy: RoundPolicy,
    *,
    accepted: int,
    opened_at: datetime,
    now: datetime,
    expected_domains: int | None = None,
    pending_domains: Sequence[str] = (),
) -> RoundReadiness:
    """Whether the open round can be aggregated now, and why (or why not) in words.

    ``pending_domains`` are the expected domains with no accepted update yet; they are named in the
    reason and in ``stragglers_note`` when the deadline closes the round without them.
    """
    target = round_target(policy, expected_domains)
    minimum = max(policy.min_domains, 1)
    stragglers = _stragglers(pending_domains)
    if accepted >= target:
        return RoundReadiness(True, f"target reached: {accepted} of {target} domains", stragglers)
    deadline = (
        opened_at + timedelta(seconds=policy.deadline_seconds)
        if policy.deadline_seconds is not None
        else None
    )
    if deadline is not None and now >= deadline:
        late = (now - deadline).total_seconds()
        if accepted >= minimum:
            reason = f"deadline passed with {accepted} of {target} domains"
            return RoundReadiness(True, f"{reason}; {stragglers}" if stragglers else reason, stragglers)
        reason = (
            f"waiting: deadline passed {late:.0f}s ago with {accepted} of {target} domains, "
            f"below min_domains {minimum}"
        )
        return RoundReadiness(False, f"{reason}; {stragglers}" if stragglers else reason, stragglers)
    if deadline is None:
        reason = f"waiting: {accepted} of {target} domains, no deadline"
    else:
        left = (deadline - now).total_seconds()
        reason = f"waiting: {accepted} of {target} domains, deadline in {left:.0f}s"
    return RoundReadiness(False, reason, stragglers)


def buffer_size(policy: RoundPolicy) -> int:
    """FedBuff's K: ``buffer_size`` when set, else ``min_domains`` (at least 1: aggregate every update)."""
    return policy.buffer_size if policy.buffer_size > 0 else max(policy.min_domains, 1)


def buffer_ready(policy: RoundPolicy, accepted_in_buffer: int) -> RoundReadiness:
    """Async mode: aggregate when the buffer holds K accepted updates."""
    k = buffer_size(policy)
    if accepted_in_buffer >= k:
        return RoundReadiness(True, f"buffer full: {accepted_in_buffer} of {k} updates")
    return RoundReadiness(False, f"waiting: buffer holds {accepted_in_buffer} of {k} updates")
