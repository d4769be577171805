"""The agent's update flush outlasts the producer's delivery timeout, whatever ``MESHFL_KAFKA`` sets.

A flush that gave up while the update was still in flight would let it land after the agent read the
log back, found nothing, and trained and published the round again: two different updates, one id.
"""

from __future__ import annotations

import pytest

from meshfl.domain.published import publish_timeout
from meshfl.settings import MeshflSettings


@pytest.fixture(autouse=True)
def _no_kafka_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHFL_KAFKA", raising=False)  # it would merge into the settings under test


@pytest.mark.parametrize(
    ("kafka", "at_least"),
    [
        ({}, 300.0),
        ({"message.timeout.ms": 900_000}, 900.0),
        ({"delivery.timeout.ms": "1200000"}, 1200.0),
        ({"message.timeout.ms": 0}, float("inf")),
    ],
)
def test_the_flush_outlasts_the_delivery_timeout(kafka: dict, at_least: float) -> None:
    settings = MeshflSettings(kafka=kafka)
    assert publish_timeout(settings) >= at_least
    assert publish_timeout(settings) > at_least or at_least == float("inf")
