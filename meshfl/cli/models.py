"""``meshfl models``: the model registry from the data scientist's chair: list, pull, watch.

Exit codes: 0 done, 1 no such task or version (or the bus failed), 2 bad settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from meshfl.cli._common import BootstrapOption, PrefixOption, settings_from
from meshfl.errors import MeshflError

if TYPE_CHECKING:
    from governance.registry import ModelRegistry
    from meshfl.events import ModelVersion
    from meshfl.settings import MeshflSettings

app = typer.Typer(
    help="Model versions: list them, pull one as safetensors, watch new ones land.", no_args_is_help=True
)
console = Console()

TaskOption = Annotated[str, typer.Option("--task", "-t", help="Task id.")]


def _registry(settings: MeshflSettings) -> ModelRegistry:
    """The registry, imported when a command runs (it needs torch; ``--help`` does not)."""
    from governance.registry import ModelRegistry

    return ModelRegistry(settings)


def _fail(exc: MeshflError) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1) from exc


def _row(version: ModelVersion) -> list[str]:
    privacy = f"eps {version.privacy.epsilon:.3g}" if version.privacy else "-"
    return [
        str(version.version),
        str(version.round),
        "-" if version.parent_version is None else str(version.parent_version),
        ", ".join(version.contributing_domains) or "-",
        version.sha256[:12],
        version.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        privacy,
    ]


def _summary(version: ModelVersion) -> dict[str, object]:
    return version.model_dump(mode="json", exclude={"tensors", "server_state"})


@app.command("list")
def list_versions(
    task: TaskOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Every published version of a task."""
    settings = settings_from(bootstrap, topic_prefix)
    try:
        versions = _registry(settings).versions(task)
    except MeshflError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps([_summary(v) for v in versions], indent=2))
        return
    table = Table(title=f"model versions of {task}", caption=f"{len(versions)} versions")
    for column in ("version", "round", "parent", "domains", "sha256", "created at (UTC)", "privacy"):
        table.add_column(column, justify="right" if column in ("version", "round", "parent") else "left")
    for version in versions:
        table.add_row(*_row(version))
    console.print(table)


@app.command("pull")
def pull(
    task: TaskOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="The .safetensors file to write.")],
    version: Annotated[int | None, typer.Option("--version", "-v", help="Version (default: latest).")] = None,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Write one version's weights as safetensors, with task, version, sha256 and parent in its metadata."""
    settings = settings_from(bootstrap, topic_prefix)
    try:
        found = _registry(settings).pull(task, version, out)
    except MeshflError as exc:
        _fail(exc)
    console.print(f"version {found.version} of {task} ({found.sha256[:12]}) written to {out}")


@app.command("watch")
def watch(
    task: TaskOption,
    from_version: Annotated[int, typer.Option("--from-version", help="Skip versions below this.")] = 0,
    timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without a new version.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Print each version of a task as it lands (past versions first); Ctrl-C to stop."""
    settings = settings_from(bootstrap, topic_prefix)
    try:
        for version in _registry(settings).watch(task, from_version=from_version, timeout=timeout):
            if as_json:
                typer.echo(json.dumps(_summary(version)))
            else:
                version_, round_, parent, domains, sha, created, privacy = _row(version)
                console.print(
                    f"v{version_} round {round_} parent {parent} sha256 {sha} {created} "
                    f"privacy {privacy} domains {domains}"
                )
    except KeyboardInterrupt:
        return
    except MeshflError as exc:
        _fail(exc)
