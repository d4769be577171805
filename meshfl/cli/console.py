"""``meshfl console``: serve the live, read-only governance console."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from meshfl.cli._common import BootstrapOption, MetricsPortOption, PrefixOption, settings_from, with_metrics
from meshfl.cli._daemon import run_daemon


def console(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the web page.")] = 8080,
    replay_interval: Annotated[
        float, typer.Option(help="Seconds between replays of the tasks whose versions changed.")
    ] = 5.0,
    metrics_port: MetricsPortOption = None,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Follow the bus and serve a live page: domains, catalog, tasks, decisions, versions, DP budget.

    Read-only (an auditor's credentials suffice); the page's server also answers /metrics, /healthz
    and /readyz.
    """
    from meshfl.extras import MissingExtraError, require

    try:
        require("starlette", "console")
        require("uvicorn", "console")
    except MissingExtraError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    from meshfl.console import run_console
    from meshfl.metrics import Health

    settings = with_metrics(settings_from(bootstrap, topic_prefix), metrics_port)
    health = Health()

    def _run(stop: threading.Event) -> int:
        return run_console(
            settings, stop, host=host, port=port, replay_interval=replay_interval, health=health
        )

    run_daemon("console", _run, metrics_port=metrics_port, health=health)
