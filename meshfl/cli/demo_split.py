"""``meshfl demo --kind split``: run ``meshfl.vertical.demo`` and print its comparison table."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from meshfl.cli._console import LazyConsole
from meshfl.errors import MeshflError
from meshfl.settings import MeshflSettings

console = LazyConsole(stderr=False)


def split_demo(
    settings: MeshflSettings,
    out: Path,
    json_path: Path | None,
    *,
    paper_budget: bool,
    epochs: int | None,
    timeout: float,
) -> None:
    from meshfl.vertical.demo import run_split_demo
    from meshfl.vertical.events import SplitModelVersion

    def on_version(version: SplitModelVersion) -> None:
        auc = version.metrics.get("roc_auc")
        shown = "-" if auc is None else f"{auc:.4f}"
        console.print(
            f"  {version.task_id} epoch {version.epoch} (attempt {version.attempt}): test ROC AUC {shown}"
        )

    console.print(
        "[bold]split learning[/bold]: breast cancer, 3 domains x 10 columns, both label configurations"
    )
    try:
        summary = run_split_demo(
            settings,
            out / "split",
            paper_budget=paper_budget,
            epochs=epochs,
            timeout=timeout,
            on_version=on_version,
        )
    except MeshflError as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    from rich.table import Table

    budget = summary.budget
    table = Table(
        title="meshfl split learning vs centralized (test rows, from probabilities)",
        caption=(
            f"{summary.rows_aligned} patients aligned by PSI of {summary.rows_per_domain}; Adam lr "
            f"{budget['learning_rate']:g}, {int(budget['epochs'])} epochs, batch {int(budget['batch_size'])}"
        ),
    )
    for column in ("configuration", "model", "ROC AUC", "balanced accuracy", "accuracy", "seconds"):
        table.add_column(column, justify="left" if column in ("configuration", "model") else "right")
    for fed, central in zip(summary.federated, summary.centralized, strict=True):
        for label, outcome in (("split over Kafka", fed), ("centralized", central)):
            table.add_row(
                outcome.configuration,
                label,
                f"{outcome.roc_auc:.4f}",
                f"{outcome.balanced_accuracy:.4f}",
                f"{outcome.accuracy:.4f}",
                f"{outcome.seconds:.1f}",
            )
    console.print(table)
    for fed in summary.federated:
        console.print(
            f"{fed.configuration}: centralized - split ROC AUC = {summary.gap(fed.configuration):+.4f}"
        )
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary.model_dump(mode="json"), indent=2))
        console.print(f"summary: {json_path}")
