"""Replay protection: a signed event is fresh when its signing time is near the time the log took
it, and its (signer, sequence) has not been seen before.

The window is measured against the Kafka record timestamp, not the reader's clock, so a reader that
catches up on old records after downtime does not refuse them, while an attacker who writes a copy of
an old signed event today is refused: its signature is dated then, its record now. Within the window
the sequence memory catches the copy; entries older than the window are forgotten, as the window
alone refuses them. Pure: no I/O.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from meshfl.errors import SignatureError
from meshfl.events import Signature

__all__ = ["ReplayGuard"]


class ReplayGuard:
    def __init__(self, window: timedelta) -> None:
        self._window = window
        self._seen: dict[tuple[str, int], datetime] = {}
        self._checks = 0

    def reset(self) -> None:
        """Forget every sequence (after re-reading the log from a committed offset)."""
        self._seen.clear()

    def check(self, signature: Signature, record_time: datetime | None) -> None:
        """Raise ``SignatureError("replay", ...)`` for a stale or repeated signature, else remember it."""
        if record_time is not None and abs(record_time - signature.timestamp) > self._window:
            raise SignatureError(
                "replay",
                f"signed at {signature.timestamp:%Y-%m-%dT%H:%M:%S}Z but written to the log at "
                f"{record_time:%Y-%m-%dT%H:%M:%S}Z: outside the {self._window.total_seconds():.0f} s window",
            )
        key = (signature.signer, signature.sequence)
        if key in self._seen:
            raise SignatureError(
                "replay", f"sequence {signature.sequence} of {signature.signer!r} was already seen"
            )
        self._seen[key] = signature.timestamp
        self._checks += 1
        if self._checks % 1024 == 0:
            self._forget_before(max(self._seen.values()) - 2 * self._window)

    def _forget_before(self, horizon: datetime) -> None:
        self._seen = {key: when for key, when in self._seen.items() if when >= horizon}
