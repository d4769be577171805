"""What governance's committed transactions put on the bus, counted for ``/metrics``.

Counted from the producer's ``on_committed`` hook, so the counters agree with the decisions and
versions a read_committed reader finds on the log: an aborted transaction counts nothing.
"""

from __future__ import annotations

from meshfl.events import Event, GovernanceDecision, ModelVersion
from meshfl.metrics import METRICS
from meshfl.topics import Topic


def count_committed(topic: Topic, event: Event) -> None:
    if isinstance(event, GovernanceDecision):
        METRICS.decisions.labels(event.task_id, event.outcome.value, event.policy).inc()
    elif isinstance(event, ModelVersion):
        METRICS.versions.labels(event.task_id).inc()
        METRICS.round.labels(event.task_id).set(event.round)
        if event.privacy is not None:
            METRICS.epsilon.labels(event.task_id).set(event.privacy.epsilon)
