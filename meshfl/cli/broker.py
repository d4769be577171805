"""``meshfl broker``: run a real Apache Kafka cluster locally from Maven jars, no Docker needed.

``start`` prints the bootstrap servers as its last stdout line (``bootstrap: 127.0.0.1:9092``) so
scripts can take it with ``tail -1``. ``start --security scram|scram-tls`` runs Kafka with SASL
SCRAM-SHA-512 (and TLS) and its StandardAuthorizer; ``provision`` then creates a federation's
principals and ACLs (see ``meshfl.access``). Exit codes: 0 done, 1 the broker could not be started or
stopped (the reason on stderr), 2 bad settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import click
import typer

from meshfl.cli._common import BootstrapOption, PrefixOption, settings_from
from meshfl.errors import BrokerError, MeshflError

if TYPE_CHECKING:  # meshfl.broker loads pydantic and more: only when a command runs
    from meshfl.broker import LocalBroker

SECURITY_MODES = ["none", "scram", "scram-tls"]
"""The values of ``meshfl.broker.SecurityMode``, spelled here so that ``--help`` needs no import."""

app = typer.Typer(
    help="A local Apache Kafka broker (KRaft, from Maven jars; no Docker).", no_args_is_help=True
)

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the broker keeps its data (default: <MESHFL_DATA_DIR>/broker)."),
]


def _broker(
    data_dir: Path | None,
    port: int | None = None,
    brokers: int | None = None,
    heap: str = "512m",
    security: str | None = None,
    jit: str = "c1",
) -> LocalBroker:
    from meshfl.broker import LocalBroker, SecurityMode

    settings = settings_from()
    try:
        return LocalBroker(
            settings,
            data_dir=data_dir,
            port=port,
            brokers=brokers,
            heap=heap,
            jit=jit,
            security=None if security is None else SecurityMode(security),
        )
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
    jit: Annotated[
        str,
        typer.Option(
            click_type=click.Choice(["c1", "tiered"]),
            help="The JVM's JIT: c1 (least compile CPU; a local broker sharing its cores) or tiered "
            "(the JVM default, C2 too, for a long-running broker on cores of its own).",
        ),
    ] = "c1",
    security: Annotated[
        str | None,
        typer.Option(
            "--security",
            click_type=click.Choice(SECURITY_MODES),
            help="none, scram (SASL SCRAM-SHA-512 + ACLs) or scram-tls (and TLS with a generated CA); "
            "fixed when the data dir is first formatted (default: what it holds, else none).",
        ),
    ] = None,
) -> None:
    """Start the broker (or cluster); harmless when it already runs. The last line is the bootstrap."""
    broker = _broker(data_dir, port, brokers, heap, security, jit)
    try:
        bootstrap = broker.start(timeout=timeout)
    except BrokerError as exc:
        _fail(exc)
    status = broker.status()
    typer.echo(f"kafka {status.kafka_version}: {len(status.nodes)} node(s), data in {status.data_dir}")
    if status.security != "none":
        typer.echo(
            f"security {status.security}: admin client settings (MESHFL_KAFKA) in "
            f"{status.data_dir / 'security' / 'admin.json'}; `meshfl broker provision` adds principals"
        )
    typer.echo(f"bootstrap: {bootstrap}")


@app.command("provision")
def provision_command(
    domains_root: Annotated[
        Path | None, typer.Option("--domains", help="Folder of domains: one principal each (domain.toml).")
    ] = None,
    domain: Annotated[
        list[str] | None, typer.Option("--domain", help="A domain name to provision (repeatable).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Where the credentials files go (default: <broker data dir>/security/principals)."),
    ] = None,
    governance: Annotated[bool, typer.Option(help="Provision the governance principal.")] = True,
    auditor: Annotated[bool, typer.Option(help="Provision the read-only auditor.")] = True,
    data_dir: DataDirOption = None,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Create the SCRAM principals of a federation and their ACLs on a secured cluster.

    One principal a domain, one for governance, a read-only auditor; each gets a credentials file
    (librdkafka settings, mode 0600) for MESHFL_KAFKA. The admin is the local secured broker's, or
    whoever MESHFL_KAFKA names when it carries sasl.username (any secured Kafka cluster).
    """
    from meshfl.access import connected, federation, provision
    from meshfl.domain.config import discover_domains, load_domain

    settings = settings_from(bootstrap, topic_prefix)
    names = list(domain or [])
    try:
        if domains_root is not None:
            names += [load_domain(path).name for path in discover_domains(domains_root)]
        if "sasl.username" in settings.kafka:
            admin, default_out = settings, settings.data_dir / "principals"
        else:
            local = _broker(data_dir)
            if local.security() is None:
                raise BrokerError(
                    f"the local broker in {local.data_dir} is not secured: start one with "
                    "`meshfl broker start --security scram` (another --data-dir and --port), or give "
                    "an admin's SASL settings in MESHFL_KAFKA"
                )
            admin = connected(settings, local.client_config())
            default_out = local.data_dir / "security" / "principals"
        done = provision(admin, federation(admin, names, with_governance=governance, with_auditor=auditor),
                         out or default_out)  # fmt: skip
    except (MeshflError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for item in done:
        typer.echo(
            f"{item.role.value:<10} {item.principal}: {item.acls} ACLs, credentials {item.credentials_file}"
        )
    typer.echo(
        f'run a client as one: MESHFL_KAFKA="$(cat {(out or default_out) / "<principal>.json"})" meshfl ...'
    )


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
    typer.echo(f"security: {current.security}")
    for node in current.nodes:
        state = f"running, pid {node.pid}" if node.running else "stopped"
        typer.echo(f"node {node.node_id}: {node.address} (controller {node.controller_address}) {state}")
    typer.echo(f"bootstrap: {current.bootstrap}")
