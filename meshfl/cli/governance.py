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
    instance_id: Annotated[
        str | None,
        typer.Option(
            help="This member of the service's group (static membership; default: the service id). "
            "Instances with different ids share the tasks by partition; a restart with the same id "
            "resumes at once."
        ),
    ] = None,
    exit_when_complete: Annotated[
        bool, typer.Option(help="Exit once every task has run all rounds.")
    ] = False,
    threads: Annotated[
        int, typer.Option(min=1, help="torch intra-op threads (1: the checks and the fold are memory-bound).")
    ] = 1,
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
            instance_id=instance_id,
            exit_when_complete=exit_when_complete,
            health=health,
            threads=threads,
        )

    run_daemon("governance", _run, metrics_port=metrics_port, health=health)


@app.command("status")
def status(bootstrap: BootstrapOption = None, topic_prefix: PrefixOption = None) -> None:
    """Each task's state from the log: waiting, running, complete, or failed with the reason.

    Exit code 0, or 4 when a task failed (a round its strategy could not aggregate).
    """
    from governance.task_status import TaskPhase, task_statuses
    from meshfl.bus import read_all
    from meshfl.topics import Topic

    settings = settings_from(bootstrap, topic_prefix)

    def _events(topic: Topic) -> list:
        return [env.event for env in read_all(settings, topic)]

    statuses = task_statuses(_events(Topic.TASKS), _events(Topic.MODEL_VERSIONS), _events(Topic.DECISIONS))
    for s in statuses:
        version = "-" if s.version is None else str(s.version)
        line = f"{s.task_id}\t{s.phase.value}\tversion {version}\tof {s.rounds} rounds"
        typer.echo(f"{line}\t{s.reason}" if s.reason else line)
    if any(s.phase == TaskPhase.FAILED for s in statuses):
        raise typer.Exit(4)
