"""``meshfl models``: the model registry from the data scientist's chair: list, pull, watch.

Exit codes: 0 done, 1 no such task or version (or the bus failed), 2 bad settings.
"""

from __future__ import annotations

import json
import threading
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from meshfl.cli._common import BootstrapOption, PrefixOption, settings_from
from meshfl.cli._console import LazyConsole
from meshfl.errors import MeshflError

if TYPE_CHECKING:
    from governance.registry import ModelRegistry
    from meshfl.events import ModelVersion
    from meshfl.settings import MeshflSettings

app = typer.Typer(
    help="Model versions: list, pull (safetensors or ONNX), watch, sync to MLflow.", no_args_is_help=True
)
console = LazyConsole()

TaskOption = Annotated[str, typer.Option("--task", "-t", help="Task id.")]


class PullFormat(StrEnum):
    SAFETENSORS = "safetensors"
    ONNX = "onnx"


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
    from rich.table import Table

    table = Table(title=f"model versions of {task}", caption=f"{len(versions)} versions")
    for column in ("version", "round", "parent", "domains", "sha256", "created at (UTC)", "privacy"):
        table.add_column(column, justify="right" if column in ("version", "round", "parent") else "left")
    for version in versions:
        table.add_row(*_row(version))
    console.print(table)


@app.command("pull")
def pull(
    task: TaskOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write.")],
    version: Annotated[int | None, typer.Option("--version", "-v", help="Version (default: latest).")] = None,
    format_: Annotated[
        PullFormat, typer.Option("--format", "-f", help="safetensors (weights) or onnx (the whole model).")
    ] = PullFormat.SAFETENSORS,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Write one version: its weights as safetensors, or the whole model as ONNX (``--format onnx``),
    with task, version, sha256 and parent in the file's metadata."""
    settings = settings_from(bootstrap, topic_prefix)
    try:
        registry = _registry(settings)
        if format_ is PullFormat.SAFETENSORS:
            found = registry.pull(task, version, out)
        else:
            from meshfl.interop import export_onnx, task_of

            found = registry.latest(task) if version is None else registry.get(task, version)
            if found is None:
                raise MeshflError(f"task {task!r} has no published version")
            export_onnx(task_of(settings, task), found, out)
    except MeshflError as exc:
        _fail(exc)
    console.print(
        f"version {found.version} of {task} ({found.sha256[:12]}) written to {out} ({format_.value})"
    )


@app.command("sync")
def sync(
    task: TaskOption,
    mlflow: Annotated[str, typer.Option("--mlflow", help="MLflow tracking URI, e.g. sqlite:///mlflow.db.")],
    registry_uri: Annotated[
        str | None, typer.Option("--registry-uri", help="MLflow registry URI (default: the tracking URI).")
    ] = None,
    artifacts: Annotated[
        str | None,
        typer.Option(help="Artifact location of a new MLflow experiment (e.g. file:///srv/mlflow)."),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep registering new versions (a daemon).")
    ] = False,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Register every version of a task in an MLflow model registry (loadable with mlflow.pytorch)."""
    from meshfl.interop import MlflowSync

    settings = settings_from(bootstrap, topic_prefix)
    try:
        syncer = MlflowSync(settings, mlflow, registry_uri=registry_uri, artifact_location=artifacts)
        if not follow:
            result = syncer.sync(task)
            registered, already = result.registered or "-", result.already or "-"
            console.print(f"{task}: registered versions {registered}; already there: {already}")
            return
    except MeshflError as exc:
        _fail(exc)
    from meshfl.cli._daemon import run_daemon

    def _run(stop: threading.Event) -> int:
        syncer.sync(task)
        syncer.follow(task, stop)
        return 0

    run_daemon("models-sync", _run)


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
