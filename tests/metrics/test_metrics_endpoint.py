"""The metrics endpoint and the librdkafka statistics fold, without Kafka."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry

from meshfl.metrics import Health, KafkaStats, Metrics, serve


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_probes_and_exposition() -> None:
    metrics = Metrics(CollectorRegistry())
    health = Health()
    server = serve(0, health, host="127.0.0.1", metrics=metrics)
    try:
        assert _get(server.port, "/healthz") == (200, "ok\n")
        assert _get(server.port, "/readyz") == (503, "starting\n")
        health.set_ready()
        assert _get(server.port, "/readyz") == (200, "ready\n")
        health.set_not_ready("lost the broker")
        assert _get(server.port, "/readyz") == (503, "lost the broker\n")
        metrics.decisions.labels("t", "accepted", "update_checks").inc(3)
        status, body = _get(server.port, "/metrics")
        assert status == 200
        assert 'meshfl_decisions_total{outcome="accepted",policy="update_checks",task="t"} 3.0' in body
        assert _get(server.port, "/nope")[0] == 404
    finally:
        server.close()


def _stats(rx: int, tx: int, lag: int) -> str:
    return json.dumps(
        {
            "name": "c#consumer-1",
            "topics": {
                "p.model-updates": {
                    "partitions": {
                        "0": {"rxbytes": rx, "txbytes": tx, "consumer_lag": lag},
                        "-1": {"rxbytes": 10**9, "txbytes": 10**9, "consumer_lag": -1},
                    }
                }
            },
        }
    )


def _value(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_statistics_fold_into_counters_by_delta_and_lag_gauges() -> None:
    metrics = Metrics(CollectorRegistry())
    stats = KafkaStats("gov-updates", metrics)
    labels = {"role": "gov-updates", "topic": "p.model-updates"}
    stats(_stats(rx=1000, tx=0, lag=7))
    stats(_stats(rx=1500, tx=20, lag=0))
    stats("not json")  # logged, ignored
    assert _value(metrics, "meshfl_bytes_in_total", labels) == 1500
    assert _value(metrics, "meshfl_bytes_out_total", labels) == 20
    assert _value(metrics, "meshfl_consumer_lag", {**labels, "partition": "0"}) == 0
    assert _value(metrics, "meshfl_consumer_lag", {**labels, "partition": "-1"}) is None
