"""Replay protection: the signing time against the record time, and each sequence once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from meshfl.errors import SignatureError
from meshfl.identity import ReplayGuard, Signer
from tests.identity.identity_builders import update


def test_window_and_sequence(retail: Signer) -> None:
    guard = ReplayGuard(timedelta(minutes=15))
    signature = retail.sign(update()).signature
    assert signature is not None
    guard.check(signature, signature.timestamp + timedelta(seconds=2))
    with pytest.raises(SignatureError, match="already seen") as info:
        guard.check(signature, signature.timestamp + timedelta(seconds=3))  # the same event written again
    assert info.value.policy == "replay"
    old = retail.sign(update()).signature
    assert old is not None
    with pytest.raises(SignatureError, match="outside the 900 s window"):
        guard.check(old, old.timestamp + timedelta(hours=1))  # an old signed event written today
    # a reader catching up after downtime: old record, old signature, both the same age: accepted
    late = retail.sign(update()).signature
    assert late is not None
    guard.check(late, late.timestamp)
    guard.reset()
    guard.check(signature, signature.timestamp)  # re-reading the log from a committed offset


def test_memory_is_bounded(retail: Signer) -> None:
    guard = ReplayGuard(timedelta(seconds=1))
    first = retail.sign(update()).signature
    assert first is not None
    guard.check(first, None)
    for step in range(1, 3000):
        later = first.model_copy(
            update={"sequence": first.sequence + step, "timestamp": first.timestamp + timedelta(seconds=step)}
        )
        guard.check(later, None)
    assert len(guard._seen) < 2048
