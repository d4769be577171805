"""Prometheus metrics and health probes for every meshfl daemon.

``METRICS`` holds the instruments (one registry of meshfl's own, so a process running several daemons
in threads, as the tests do, exposes one coherent set, labelled by task and domain). ``serve`` starts
the HTTP endpoint a daemon's ``--metrics-port`` asks for: ``/metrics`` in the Prometheus text format,
``/healthz`` (the process answers) and ``/readyz`` (connected to Kafka and its state rebuilt: what a
Kubernetes readiness probe or a systemd watchdog should wait for).
"""

from __future__ import annotations

from meshfl.metrics._instruments import METRICS, Metrics
from meshfl.metrics._kafka_stats import KafkaStats, stats_callback
from meshfl.metrics._server import Health, MetricsServer, serve

__all__ = ["METRICS", "Health", "KafkaStats", "Metrics", "MetricsServer", "serve", "stats_callback"]
