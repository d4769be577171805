"""The instruments, named by Prometheus conventions (``meshfl_<what>_<unit>``, counters ``_total``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every meshfl instrument in one registry; ``METRICS`` is the process-wide instance."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # governance
        self.decisions = Counter(
            "meshfl_decisions",
            "Governance decisions on model updates.",
            ["task", "outcome", "policy"],
            registry=r,
        )
        self.versions = Counter("meshfl_versions", "Global model versions published.", ["task"], registry=r)
        self.round = Gauge("meshfl_round", "Round of the latest published version.", ["task"], registry=r)
        self.epsilon = Gauge(
            "meshfl_dp_epsilon_spent", "Differential-privacy epsilon spent so far.", ["task"], registry=r
        )
        self.decode_seconds = Histogram(
            "meshfl_decode_seconds",
            "Time to decode one consumed event.",
            ["role"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.check_seconds = Histogram(
            "meshfl_check_seconds",
            "Time to run the policies on one update.",
            ["task"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.aggregate_seconds = Histogram(
            "meshfl_aggregate_seconds",
            "Time to aggregate one version.",
            ["task"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # bus, every role
        self.bytes_in = Counter(
            "meshfl_bytes_in", "Bytes consumed from Kafka.", ["role", "topic"], registry=r
        )
        self.bytes_out = Counter(
            "meshfl_bytes_out", "Bytes produced to Kafka.", ["role", "topic"], registry=r
        )
        self.consumer_lag = Gauge(
            "meshfl_consumer_lag",
            "Records behind the high watermark.",
            ["role", "topic", "partition"],
            registry=r,
        )
        self.chunk_sets_pending = Gauge(
            "meshfl_chunk_sets_pending",
            "Chunked payloads waiting for their last chunk.",
            ["role"],
            registry=r,
        )
        self.round_held_bytes = Gauge(
            "meshfl_governance_round_held_bytes",
            "Bytes an open round holds in governance: accepted update tensors not yet folded "
            "(kind=updates) and the float64 running sums (kind=sums).",
            ["task", "kind"],
            registry=r,
        )
        self.round_held_bytes_max = Gauge(
            "meshfl_governance_round_held_bytes_max",
            "Most bytes of accepted update tensors an open round held at once since the start.",
            ["task"],
            registry=r,
        )
        self.dead_letters = Counter(
            "meshfl_dead_letters", "Records sent to the dead-letter topic.", ["role"], registry=r
        )
        # domain agents
        self.rounds_trained = Counter(
            "meshfl_agent_rounds_trained", "Rounds of local training done.", ["domain", "task"], registry=r
        )
        self.updates_published = Counter(
            "meshfl_agent_updates_published", "Model updates published.", ["domain", "task"], registry=r
        )
        self.training_seconds = Histogram(
            "meshfl_agent_training_seconds",
            "Local training time per round.",
            ["domain", "task"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.refused = Counter(
            "meshfl_events_refused",
            "Events from the bus refused (unsigned, forged, invalid).",
            ["role", "reason"],
            registry=r,
        )
        # console
        self.console_events = Counter("meshfl_console_events", "Events folded by the console.", registry=r)
        self.console_clients = Gauge(
            "meshfl_console_stream_clients", "Browsers following the live stream.", registry=r
        )


METRICS = Metrics()
