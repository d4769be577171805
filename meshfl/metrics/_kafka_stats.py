"""librdkafka's own statistics turned into meshfl's metrics: bytes per topic and consumer lag.

With ``statistics.interval.ms`` set, librdkafka calls ``stats_cb`` with a JSON document (see its
STATISTICS.md): per topic and partition, ``txbytes`` / ``rxbytes`` (message bytes produced and
consumed since the client started) and ``consumer_lag`` (records behind the high watermark, -1 while
unknown). Counting at this level sees every byte the client moves, chunks and retries included,
without a hook in the hot path.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from meshfl.logs import get_logger
from meshfl.metrics._instruments import METRICS, Metrics

log = get_logger("meshfl.metrics")


class KafkaStats:
    """Folds successive statistics documents of one client into counters (by delta) and gauges."""

    def __init__(self, role: str, metrics: Metrics = METRICS) -> None:
        self._role = role
        self._metrics = metrics
        self._seen: dict[tuple[str, str], float] = {}  # (direction, topic) -> last total
        self._lock = threading.Lock()

    def __call__(self, document: str) -> None:
        try:
            stats = json.loads(document)
        except ValueError:
            log.warning("unreadable librdkafka statistics", role=self._role)
            return
        with self._lock:
            self._fold(stats)

    def _fold(self, stats: dict[str, Any]) -> None:
        for topic, info in (stats.get("topics") or {}).items():
            totals = {"out": 0.0, "in": 0.0}
            for partition, part in (info.get("partitions") or {}).items():
                if partition == "-1":  # librdkafka's internal "unassigned" partition
                    continue
                totals["out"] += float(part.get("txbytes", 0))
                totals["in"] += float(part.get("rxbytes", 0))
                lag = part.get("consumer_lag", -1)
                if isinstance(lag, int | float) and lag >= 0:
                    self._metrics.consumer_lag.labels(self._role, topic, partition).set(lag)
            for direction, total in totals.items():
                delta = total - self._seen.get((direction, topic), 0.0)
                if delta > 0:
                    counter = self._metrics.bytes_out if direction == "out" else self._metrics.bytes_in
                    counter.labels(self._role, topic).inc(delta)
                self._seen[(direction, topic)] = max(total, self._seen.get((direction, topic), 0.0))


def stats_callback(role: str) -> Callable[[str], None]:
    """The ``stats_cb`` of one client, labelled ``role`` (its client id)."""
    return KafkaStats(role)
