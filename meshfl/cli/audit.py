"""``meshfl audit``: verify a federation from its log (replay), trace a version (lineage), report, export.

Exit codes: 0 every version reproduces (replay) or done; 1 a version does not reproduce or tampering
was found; 2 the audit could not be carried out (no such task, unreadable file, bus down, bad settings).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from meshfl.cli._common import BootstrapOption, PrefixOption, settings_from
from meshfl.cli._console import LazyConsole
from meshfl.errors import MeshflError

if TYPE_CHECKING:  # governance.audit needs torch: imported by the commands that run, not by --help
    from rich.table import Table
    from rich.tree import Tree

    from governance.audit import Lineage, LoggedEvent, ReplayResult
    from meshfl.settings import MeshflSettings

app = typer.Typer(
    help="Audit a federation from the log: replay, lineage, report, export.", no_args_is_help=True
)
console = LazyConsole()
errors = LazyConsole(stderr=True)

TaskOption = Annotated[str, typer.Option("--task", "-t", help="Task id.")]
FileOption = Annotated[
    Path | None, typer.Option("--file", "-f", help="Read an export file instead of the bus.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def _fail(exc: MeshflError) -> NoReturn:
    errors.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2) from exc


def _events(settings: MeshflSettings, task: str, file: Path | None) -> list[LoggedEvent]:
    from governance.audit import events_from_bus, events_from_file

    return events_from_file(file) if file is not None else events_from_bus(settings, task)


def _trust(settings: MeshflSettings) -> dict[str, Any]:
    """The replay's trust anchor: governance's pinned key (a ``ConfigError`` without one)."""
    from meshfl.identity.trust import governance_public_key

    return {
        "governance_key": governance_public_key(settings),
        "window_seconds": settings.signature_window_seconds,
    }


def _signed(settings: MeshflSettings, events: list[LoggedEvent]) -> list[LoggedEvent]:
    """Only the events their senders signed (what lineage and the report may rely on)."""
    from governance.audit import check_signatures

    return check_signatures(events, **_trust(settings)).trusted


def _first_version_since(events: list[LoggedEvent], task: str, since: datetime) -> int:
    """The first version published at or after ``since`` (broker time), to start a replay there."""
    from governance.audit import TaskLog

    index = TaskLog.of(events, task)
    stamps = {n: copies[0].timestamp_ms for n, copies in index.versions.items()}
    cutoff = since.timestamp() * 1000
    later = [n for n, stamp in stamps.items() if stamp >= cutoff]
    return min(later) if later else max(stamps, default=0) + 1


def _replay_table(result: ReplayResult) -> Table:
    from rich.table import Table

    table = Table(
        title=f"replay of {result.task_id}", caption=f"{result.events_read} events, {result.seconds:.2f} s"
    )
    for column in ("version", "round", "contributing domains", "strategy", "sha256", "hash match"):
        table.add_column(column, justify="right" if column in ("version", "round") else "left")
    for check in result.versions:
        match = "[green]yes[/green]" if check.reproduced and check.self_hash_ok else "[red]NO[/red]"
        table.add_row(
            str(check.version),
            str(check.round),
            ", ".join(check.contributing_domains) or "-",
            check.strategy,
            check.published_sha256[:12],
            match,
        )
    return table


@app.command("replay")
def replay_command(
    task: TaskOption,
    from_version: Annotated[int, typer.Option("--from-version", help="First version to verify.")] = 0,
    to_version: Annotated[int | None, typer.Option("--to-version", help="Last version to verify.")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Verify the versions published from this time on (UTC).")
    ] = None,
    file: FileOption = None,
    as_json: JsonOption = False,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Recompute every version from the accepted updates and compare each SHA-256 with the published one."""
    from rich.progress import Progress

    from governance.audit import replay

    settings = settings_from(bootstrap, topic_prefix)
    secret = settings.dp_key()
    try:
        split = _split_result(settings, task) if file is None else None
        if split is not None:
            _print_result(split, as_json)
        events = _events(settings, task, file)
        if since is not None:
            from_version = max(from_version, _first_version_since(_signed(settings, events), task, since))
        if as_json:
            result = replay(
                events,
                task,
                from_version=from_version,
                to_version=to_version,
                dp_secret=secret,
                **_trust(settings),
            )
        else:
            with Progress(console=errors.get(), transient=True) as progress:
                bar = progress.add_task("replaying", total=None)
                result = replay(
                    events,
                    task,
                    from_version=from_version,
                    to_version=to_version,
                    dp_secret=secret,
                    on_progress=lambda done, total: progress.update(bar, completed=done, total=total),
                    **_trust(settings),
                )
    except MeshflError as exc:
        _fail(exc)
    _print_result(result, as_json)


def _split_result(settings: MeshflSettings, task: str) -> ReplayResult | None:
    """A vertical task's replay (``governance.vertical.replay``), or None for a horizontal task."""
    from governance.vertical.replay import find_split_task, replay_split, split_events

    split_task = find_split_task(settings, task)
    if split_task is None:
        return None
    return replay_split(split_task, split_events(settings, task), **_trust(settings))


def _print_result(result: ReplayResult, as_json: bool) -> NoReturn:
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        console.print(_replay_table(result))
        for finding in result.findings:
            colour = "red" if finding.severity == "error" else "yellow"
            console.print(f"[{colour}]{finding.severity}[/{colour}] {finding.kind}: {finding.message}")
        verdict = "[green]every version reproduces[/green]" if result.ok else "[red]verification FAILED[/red]"
        console.print(verdict)
    raise typer.Exit(0 if result.ok else 1)


def _tree(tree: Lineage) -> Tree:
    from rich.tree import Tree

    root = Tree(f"[bold]{tree.task_id}[/bold] v{tree.version}: domains {', '.join(tree.domains) or '-'}")
    for node in tree.chain:
        parent = "task seed" if node.parent_version is None else f"parent v{node.parent_version}"
        branch = root.add(
            f"v{node.version} round {node.round} ({parent}, {node.strategy}, {node.sha256[:12]})"
        )
        for update in node.updates:
            products = (
                ", ".join(f"{p.id} v{p.version}" for p in update.data_products) or "no declared product"
            )
            branch.add(
                f"{update.domain}: update {update.update_id} @ {update.partition}/{update.offset}, "
                f"{update.num_examples} examples, trained on {products}"
            )
        for excluded in node.excluded:
            branch.add(
                f"[yellow]excluded[/yellow] {excluded.domain} {excluded.update_id}: "
                f"{excluded.policy}: {excluded.reason}"
            )
    return root


@app.command("lineage")
def lineage_command(
    task: TaskOption,
    version: Annotated[int | None, typer.Option("--version", "-v", help="Version (default: latest).")] = None,
    file: FileOption = None,
    as_json: JsonOption = False,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """The tree from a version back to the first: parents, updates, domains, data products, exclusions."""
    from governance.audit import TaskLog, lineage

    settings = settings_from(bootstrap, topic_prefix)
    try:
        tree = lineage(TaskLog.of(_signed(settings, _events(settings, task, file)), task), version)
    except MeshflError as exc:
        _fail(exc)
    if as_json:
        typer.echo(tree.model_dump_json(indent=2))
    else:
        console.print(_tree(tree))


@app.command("report")
def report_command(
    task: TaskOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write index.html into.")],
    file: FileOption = None,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """A self-contained HTML report: replay verdict, lineage, metrics plots, rejections, DP budget."""
    from governance.audit import TaskLog, replay, write_report

    settings = settings_from(bootstrap, topic_prefix)
    secret = settings.dp_key()
    try:
        events = _events(settings, task, file)
        index = TaskLog.of(_signed(settings, events), task)
        trust = _trust(settings)
        result = (
            replay(events, task, dp_secret=secret, **trust) if secret or index.task.privacy is None else None
        )
        path = write_report(index, out, result)
    except MeshflError as exc:
        _fail(exc)
    console.print(f"report written to {path}")


@app.command("export")
def export_command(
    task: TaskOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="The .avro file to write.")],
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Write the task's events (tasks, updates, decisions, versions, catalog) to an Avro container file."""
    from governance.audit import export_task

    settings = settings_from(bootstrap, topic_prefix)
    try:
        count = export_task(settings, task, out)
    except MeshflError as exc:
        _fail(exc)
    console.print(f"{count} events of {task} written to {out}")
