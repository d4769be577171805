"""``meshfl domain``: run a domain agent."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated

import typer

from meshfl.cli._common import BootstrapOption, MetricsPortOption, PrefixOption, settings_from, with_metrics
from meshfl.cli._daemon import run_daemon

app = typer.Typer(
    help="Domain agents: publish data products, train locally, publish updates.", no_args_is_help=True
)


@app.command("run")
def run(
    domain: Annotated[Path, typer.Option("--domain", "-d", help="The domain's folder (with domain.toml).")],
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 5.0,
    threads: Annotated[
        int | None, typer.Option(help="torch intra-op threads (default: the domain's [training] threads).")
    ] = None,
    simulate_delay: Annotated[
        float, typer.Option(help="Extra seconds per local training, to try stragglers and async mode.")
    ] = 0.0,
    metrics_port: MetricsPortOption = None,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Run the domain agent until SIGTERM/SIGINT; it stops after its current step."""
    from meshfl.domain.agent import DomainAgent
    from meshfl.metrics import Health

    settings = with_metrics(settings_from(bootstrap, topic_prefix), metrics_port)
    health = Health()

    def _run(stop: threading.Event) -> int:
        agent = DomainAgent(
            settings,
            domain,
            heartbeat_interval=heartbeat,
            threads=threads,
            simulate_delay=simulate_delay,
            health=health,
        )
        return agent.run(stop)

    run_daemon(f"domain:{domain.name}", _run, metrics_port=metrics_port, health=health)


@app.command("split")
def split(
    domain: Annotated[Path, typer.Option("--domain", "-d", help="The domain's folder (with domain.toml).")],
    threads: Annotated[int, typer.Option(help="torch intra-op threads.")] = 1,
    simulate_delay: Annotated[
        float, typer.Option(help="Extra seconds per training batch, to try stragglers and faults.")
    ] = 0.0,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Run the domain's side of every vertical (split-learning) task naming it, until SIGTERM/SIGINT.

    Its events are signed with the domain's key (``keys/signing.key``); governance's public key must be
    pinned (MESHFL_GOVERNANCE_PUBLIC_KEY): every task, command and gradient is checked against it."""
    from meshfl.vertical.agent import SplitAgent

    settings = settings_from(bootstrap, topic_prefix)

    def _run(stop: threading.Event) -> int:
        agent = SplitAgent(settings, domain, threads=threads, step_delay=simulate_delay)
        return agent.run(stop)

    run_daemon(f"split:{domain.name}", _run)
