"""``meshfl broker``: run a real Apache Kafka cluster locally from Maven jars, no Docker needed.

``start`` prints the bootstrap servers as its last stdout line (``bootstrap: 127.0.0.1:9092``) so
scripts can take it with ``tail -1``. Exit codes: 0 done, 1 the broker could not be started or
stopped (the reason on stderr), 2 bad settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from meshfl.broker import LocalBroker
from meshfl.cli._common import settings_from
from meshfl.errors import BrokerError

app = typer.Typer(
    help="A local Apache Kafka broker (KRaft, from Maven jars; no Docker).", no_args_is_help=True
)

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the broker keeps its data (default: <MESHFL_DATA_DIR>/broker)."),
]


def _broker(
    data_dir: Path | None, port: int | None = None, brokers: int | None = None, heap: str = "512m"
) -> LocalBroker:
    settings = settings_from()
    try:
        return LocalBroker(settings, data_dir=data_dir, port=port, brokers=brokers, heap=heap)
    except BrokerError as exc:
        _fail(exc)


def _fail(exc: BrokerError) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1) from exc


@app.command("start")
def start(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            "-p",
            help="Client port of node 1; node i uses port+2(i-1) and the next one "
            "for its controller (default 9092, or what the data dir was made with).",
        ),
    ] = None,
    brokers: Annotated[
        int | None,
        typer.Option("--brokers", "-n", help="Nodes in the cluster, 1-5 (3 for replication tests)."),
    ] = None,
    data_dir: DataDirOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the cluster to answer.")] = 90.0,
    heap: Annotated[str, typer.Option(help="Java heap of each node (-Xmx).")] = "512m",
) -> None:
    """Start the broker (or cluster); harmless when it already runs. The last line is the bootstrap."""
    broker = _broker(data_dir, port, brokers, heap)
    try:
        bootstrap = broker.start(timeout=timeout)
    except BrokerError as exc:
        _fail(exc)
    status = broker.status()
    typer.echo(f"kafka {status.kafka_version}: {len(status.nodes)} node(s), data in {status.data_dir}")
    typer.echo(f"bootstrap: {bootstrap}")


@app.command("stop")
def stop(
    node: Annotated[
        int | None, typer.Option("--node", help="Stop only this node id (1..n) of a cluster.")
    ] = None,
    kill: Annotated[bool, typer.Option("--kill", help="SIGKILL at once, as a crash would.")] = False,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the data dir.")] = False,
    grace: Annotated[float, typer.Option(help="Seconds of clean shutdown before SIGKILL.")] = 30.0,
    data_dir: DataDirOption = None,
) -> None:
    """Stop the broker: SIGTERM, a clean shutdown, SIGKILL after --grace seconds."""
    broker = _broker(data_dir)
    try:
        if purge and node is not None:
            raise BrokerError("--purge deletes the whole cluster; it cannot go with --node")
        if purge:
            broker.purge()
        else:
            broker.stop(node, kill=kill, grace=grace)
    except BrokerError as exc:
        _fail(exc)
    what = f"node {node}" if node is not None else "broker"
    typer.echo(f"{what} stopped" + (f"; deleted {broker.data_dir}" if purge else ""))


@app.command("status")
def status(
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Whether the broker runs, its address, pids and data dir."""
    broker = _broker(data_dir)
    try:
        current = broker.status()
    except BrokerError as exc:
        _fail(exc)
    if as_json:
        typer.echo(current.model_dump_json(indent=2))
        return
    typer.echo(f"state: {current.state}")
    typer.echo(f"data dir: {current.data_dir}")
    if current.bootstrap is None:
        typer.echo("no cluster formatted here yet; `meshfl broker start` makes one")
        return
    typer.echo(f"kafka: {current.kafka_version}, cluster id {current.cluster_id}")
    for node in current.nodes:
        state = f"running, pid {node.pid}" if node.running else "stopped"
        typer.echo(f"node {node.node_id}: {node.address} (controller {node.controller_address}) {state}")
    typer.echo(f"bootstrap: {current.bootstrap}")
