"""Round readiness with a fixed clock, and FedBuff's buffer rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from governance.policies import RoundReadiness, buffer_ready, buffer_size, round_ready, round_target
from meshfl.events import RoundPolicy

OPENED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return OPENED + timedelta(seconds=seconds)


def test_target_prefers_target_domains_then_expected_then_minimum() -> None:
    assert round_target(RoundPolicy(min_domains=2, target_domains=4), expected_domains=6) == 4
    assert round_target(RoundPolicy(min_domains=2), expected_domains=6) == 6
    assert round_target(RoundPolicy(min_domains=2)) == 2
    assert round_target(RoundPolicy(min_domains=3, target_domains=1)) == 3  # never below the minimum


def test_target_reached_early_closes_before_the_deadline() -> None:
    policy = RoundPolicy(min_domains=2, target_domains=3, deadline_seconds=60)
    readiness = round_ready(policy, accepted=3, opened_at=OPENED, now=_at(5), pending_domains=["hr"])
    assert readiness.ready and readiness
    assert readiness.reason == "target reached: 3 of 3 domains"


def test_waiting_before_the_deadline_reports_the_time_left() -> None:
    policy = RoundPolicy(min_domains=2, deadline_seconds=60)
    readiness = round_ready(policy, accepted=2, opened_at=OPENED, now=_at(20), expected_domains=4)
    assert not readiness.ready and not readiness
    assert readiness.reason == "waiting: 2 of 4 domains, deadline in 40s"


def test_deadline_passed_with_the_minimum_closes_and_names_stragglers() -> None:
    policy = RoundPolicy(min_domains=2, deadline_seconds=60)
    readiness = round_ready(
        policy,
        accepted=2,
        opened_at=OPENED,
        now=_at(60),
        expected_domains=4,
        pending_domains=["ops", "hr"],
    )
    assert readiness.ready
    assert readiness.reason == "deadline passed with 2 of 4 domains; stragglers: hr, ops"
    assert readiness.stragglers_note == "stragglers: hr, ops"


def test_deadline_passed_below_the_minimum_keeps_waiting() -> None:
    policy = RoundPolicy(min_domains=3, deadline_seconds=60)
    readiness = round_ready(
        policy, accepted=2, opened_at=OPENED, now=_at(90), expected_domains=5, pending_domains=["hr"]
    )
    assert not readiness.ready
    assert readiness.reason.startswith("waiting: deadline passed 30s ago with 2 of 5 domains")
    assert "below min_domains 3" in readiness.reason
    assert readiness.stragglers_note == "stragglers: hr"


def test_without_a_deadline_a_round_waits_for_its_target() -> None:
    policy = RoundPolicy(min_domains=1)
    waiting = round_ready(policy, accepted=2, opened_at=OPENED, now=_at(10**6), expected_domains=3)
    assert not waiting.ready
    assert waiting.reason == "waiting: 2 of 3 domains, no deadline"
    assert round_ready(policy, accepted=3, opened_at=OPENED, now=_at(1), expected_domains=3).ready


def test_no_update_never_closes_a_round() -> None:
    policy = RoundPolicy(min_domains=0, deadline_seconds=1)
    assert not round_ready(policy, accepted=0, opened_at=OPENED, now=_at(100)).ready


def test_many_stragglers_are_summarized() -> None:
    pending = [f"d{i:02d}" for i in range(14)]
    readiness = round_ready(
        RoundPolicy(min_domains=1, deadline_seconds=1),
        accepted=1,
        opened_at=OPENED,
        now=_at(2),
        expected_domains=15,
        pending_domains=pending,
    )
    assert readiness.stragglers_note.endswith("d09 (+4 more)")


def test_buffer_ready_every_k_updates() -> None:
    policy = RoundPolicy(buffer_size=3)
    assert buffer_size(policy) == 3
    assert buffer_ready(policy, 2) == RoundReadiness(False, "waiting: buffer holds 2 of 3 updates")
    assert buffer_ready(policy, 3) == RoundReadiness(True, "buffer full: 3 of 3 updates")
    assert buffer_ready(policy, 4).ready


def test_buffer_size_defaults_to_the_minimum_domains() -> None:
    assert buffer_size(RoundPolicy(min_domains=2)) == 2
    assert buffer_size(RoundPolicy(min_domains=0)) == 1
    assert buffer_ready(RoundPolicy(), 1).ready
