"""``meshfl governance``: run the governance service."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated

import typer

from meshfl.cli._common import BootstrapOption, MetricsPortOption, PrefixOption, settings_from, with_metrics
from meshfl.cli._daemon import run_daemon

app = typer.Typer(help="The governance service: policies, aggregation, model versions.", no_args_is_help=True)


@app.command("run")
def run(
    tasks: Annotated[list[Path], typer.Option("--tasks", "-t", help="Task file(s) (TOML) to run.")],
    service_id: Annotated[
        str, typer.Option(help="Names the consumer group and transactional id.")
    ] = "governance",
    exit_when_complete: Annotated[
        bool, typer.Option(help="Exit once every task has run all rounds.")
    ] = False,
    metrics_port: MetricsPortOption = None,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Consume model updates, decide on each, aggregate rounds and publish global model versions; coordinate
    vertical (split-learning) tasks beside them."""
    from governance.vertical.both import run_governance
    from meshfl.domain.tasks import load_any_task_file
    from meshfl.metrics import Health

    settings = with_metrics(settings_from(bootstrap, topic_prefix), metrics_port)
    health = Health()

    def _run(stop: threading.Event) -> int:
        loaded = [load_any_task_file(path) for path in tasks]
        return run_governance(
            settings,
            loaded,
            stop,
            service_id=service_id,
            exit_when_complete=exit_when_complete,
            health=health,
        )

    run_daemon("governance", _run, metrics_port=metrics_port, health=health)
