"""Options every command shares: where the bus is and how to log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from meshfl.errors import ConfigError

if TYPE_CHECKING:
    from meshfl.settings import MeshflSettings

BootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap", "-b", help="Kafka bootstrap servers (default: MESHFL_BOOTSTRAP_SERVERS or config)."
    ),
]
PrefixOption = Annotated[str | None, typer.Option("--topic-prefix", help="Prefix of meshfl topics.")]
MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve Prometheus /metrics, /healthz and /readyz on this port (0: any free port).",
    ),
]
STATISTICS_INTERVAL_MS = 5_000
"""How often librdkafka reports bytes and consumer lag to the metrics when a daemon serves them."""


def with_metrics(settings: MeshflSettings, metrics_port: int | None) -> MeshflSettings:
    """Settings whose Kafka clients report statistics, when the daemon serves metrics."""
    if metrics_port is None or settings.statistics_interval_ms:
        return settings
    return settings.model_copy(update={"statistics_interval_ms": STATISTICS_INTERVAL_MS})


def settings_from(bootstrap: str | None = None, topic_prefix: str | None = None) -> MeshflSettings:
    """Load settings and configure logging; a bad config ends the command with a clear message.

    Imported here, not at the top: ``meshfl --help`` needs neither (see ``bench/startup.py``).
    """
    from meshfl.logs import configure_logging
    from meshfl.settings import load_settings

    try:
        settings = load_settings(bootstrap_servers=bootstrap, topic_prefix=topic_prefix)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(settings.log_format, settings.log_level)
    return settings
