"""``meshfl demo``: run the example federation end to end and compare it with centralized training."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer

from meshfl.cli._common import BootstrapOption, settings_from
from meshfl.cli._console import LazyConsole
from meshfl.errors import MeshflError

if TYPE_CHECKING:
    from rich.table import Table

console = LazyConsole(stderr=False)
SECURE_DEMO_PORT = 9192
"""Client port of the demo's own secured broker (beside a plain one on 9092)."""


def _table(rows: list[list[str]], total: int, task_id: str) -> Table:
    from rich.table import Table

    done = int(rows[-1][0]) if rows else 0
    table = Table(title=f"meshfl federation: {task_id}", caption=f"{done}/{total} rounds")
    for column in ("round", "version", "domains in", "test accuracy", "test loss", "round time"):
        table.add_column(column, justify="right" if column != "domains in" else "left")
    for row in rows:
        table.add_row(*row)
    return table


def demo(
    task_file: Annotated[Path, typer.Option("--task", help="Task file to federate.")] = Path(
        "domains/tasks/digits.toml"
    ),
    domains_root: Annotated[Path, typer.Option("--domains", help="Folder of example domains.")] = Path(
        "domains"
    ),
    rounds: Annotated[int | None, typer.Option(help="Override the task's number of rounds.")] = None,
    mode: Annotated[
        str | None,
        typer.Option(click_type=click.Choice(["sync", "async"]), help="sync (rounds) or async (FedBuff)."),
    ] = None,
    slow_domain: Annotated[
        str | None, typer.Option(help="Make one domain a straggler (--slow-delay s more per update).")
    ] = None,
    slow_delay: Annotated[float, typer.Option(help="The straggler's extra seconds per update.")] = 1.0,
    out: Annotated[Path, typer.Option(help="Folder for logs, the plot and the task used.")] = Path(
        "out/demo"
    ),
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the summary as JSON here.")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 900.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log the demo's own steps.")] = False,
    kind: Annotated[
        str,
        typer.Option(
            click_type=click.Choice(["horizontal", "split"]),
            help="horizontal (FedAvg over the task file) or split (vertical learning on breast cancer).",
        ),
    ] = "horizontal",
    paper_budget: Annotated[
        bool, typer.Option(help="--kind split: the paper's Adam 1e-4, 35 epochs, batch 256.")
    ] = False,
    bootstrap: BootstrapOption = None,
    topic_prefix: Annotated[
        str | None, typer.Option(help="Topic prefix (default: a fresh one per run, so runs never mix).")
    ] = None,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="Run secured: SCRAM + TLS, one principal per domain, governance and the demo's reader, "
            "with ACLs. Without --bootstrap it starts its own secured broker (port 9192); with one, "
            "MESHFL_KAFKA must carry the cluster admin's SASL settings.",
        ),
    ] = False,
) -> None:
    """Start a local broker if none is given, the governance service and one agent per domain, run the
    federation with live progress, train the centralized baseline, and print the comparison."""
    from meshfl.demo import RoundRecord, plan_demo, plot_summary, run_demo
    from meshfl.events import FederationMode
    from meshfl.logs import configure_logging

    prefix = topic_prefix or f"meshfl.demo-{time.strftime('%Y%m%d-%H%M%S')}."
    settings = settings_from(bootstrap, prefix)
    if not verbose:  # the daemons' logs go to files under --out; keep this terminal for the table
        configure_logging(settings.log_format, "WARNING")
    if "bootstrap_servers" not in settings.model_fields_set:
        from meshfl.broker import LocalBroker, SecurityMode

        what = "secured (SCRAM + TLS) " if secure else ""
        console.print(
            f"[bold]No broker given: starting a local {what}Apache Kafka broker (first run resolves jars)."
        )
        try:
            if secure:
                from meshfl.access import connected

                local = LocalBroker(
                    settings, data_dir=settings.data_dir / "broker-secure", port=SECURE_DEMO_PORT,
                    security=SecurityMode.SCRAM_TLS,
                )  # fmt: skip
                local.start()
                settings = connected(settings, local.client_config())
            else:
                settings = settings.model_copy(update={"bootstrap_servers": LocalBroker(settings).start()})
        except MeshflError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    elif secure and "sasl.username" not in settings.kafka:
        console.print(
            "[red]error:[/red] --secure on a given broker needs its admin's SASL settings in MESHFL_KAFKA "
            "(e.g. the security/admin.json of `meshfl broker start --security scram-tls`)"
        )
        raise typer.Exit(2)
    console.print(
        f"broker [cyan]{settings.bootstrap_servers}[/cyan], topics [cyan]{settings.topic_prefix}*[/cyan]"
        + (" [green]secured: a principal per process, ACLs[/green]" if secure else "")
    )
    if kind == "split":
        from meshfl.cli.demo_split import split_demo

        split_demo(settings, out, json_path, paper_budget=paper_budget, epochs=rounds, timeout=timeout)
        return
    try:
        plan = plan_demo(
            domains_root=domains_root,
            task_file=task_file,
            out_dir=out,
            rounds=rounds,
            mode=None if mode is None else FederationMode(mode),
        )
        plan.slow_domain = slow_domain
        plan.slow_delay = slow_delay
        if secure:
            from meshfl.demo import secure_plan

            settings = secure_plan(settings, plan)
        from rich.live import Live

        rows: list[list[str]] = []
        with Live(
            _table(rows, plan.task.rounds, plan.task.id), console=console.get(), refresh_per_second=4
        ) as live:

            def on_version(record: RoundRecord) -> None:
                rows.append(
                    [
                        str(record.round),
                        str(record.version),
                        str(len(record.domains)) if record.domains else "initial model",
                        f"{record.accuracy:.4f}",
                        f"{record.loss:.4f}",
                        f"{record.wall_seconds:.2f} s",
                    ]
                )
                live.update(_table(rows, plan.task.rounds, plan.task.id))

            summary = run_demo(settings, plan, on_version=on_version)
    except MeshflError as exc:
        console.print(f"[red]demo failed:[/red] {exc}\nlogs: {out / 'logs'}")
        raise typer.Exit(1) from exc
    plot = out / "accuracy.png"
    plot_summary(summary, plot)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary.model_dump(mode="json"), indent=2))
    console.print(
        f"\n[bold]federated[/bold] test accuracy {summary.federated_accuracy:.4f} "
        f"after {len(summary.rounds)} versions in {summary.federation_seconds:.1f} s "
        f"({len(summary.domains)} domains, {summary.mode})\n"
        f"[bold]centralized[/bold] baseline, same model and budget: {summary.centralized_accuracy:.4f}\n"
        f"federated / centralized = [bold]{summary.ratio_to_centralized:.3f}[/bold]\n"
        f"plot: {plot}" + (f"\nsummary: {json_path}" if json_path else "")
    )
    counts = ", ".join(f"{d} {summary.accepted_updates.get(d, 0)}" for d in summary.domains)
    console.print(f"accepted updates per domain: {counts}")
    pinned = settings.governance_public_key or f"{out / 'keys' / 'governance.pub'}"
    console.print(
        f"audit it: MESHFL_GOVERNANCE_PUBLIC_KEY={pinned} meshfl audit replay --task {summary.task_id} "
        f"--topic-prefix {summary.topic_prefix}"
    )
