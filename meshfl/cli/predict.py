"""``meshfl predict``: inference with a vertical (split) model for new entity ids, across the domains."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from meshfl.cli._common import BootstrapOption, PrefixOption, settings_from
from meshfl.errors import MeshflError

console = Console(stderr=True)


def predict(
    task: Annotated[str, typer.Option("--task", "-t", help="Vertical task id.")],
    ids: Annotated[Path, typer.Option("--ids", help="Entity ids, one a line (the first CSV column).")],
    out: Annotated[Path | None, typer.Option(help="Write id and class probabilities as CSV here.")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 300.0,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Probabilities from the task's latest version for ids the domains hold: PSI alignment of the ids with
    every domain, bottoms in the domains, top at governance; no id reaches the bus."""
    from governance.vertical.replay import find_split_task
    from meshfl.vertical.requests import latest_version, request_predictions

    settings = settings_from(bootstrap, topic_prefix)
    try:
        entities = [
            row[0].strip() for row in csv.reader(ids.read_text().splitlines()) if row and row[0].strip()
        ]
        split = find_split_task(settings, task)
        if split is None:
            raise MeshflError(f"no vertical task {task!r} on the tasks topic")
        version = latest_version(settings, task)
        if version is None:
            raise MeshflError(f"task {task!r} has no version yet")
        predictions = request_predictions(settings, split, version, entities, timeout=timeout)
    except (OSError, MeshflError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    lines = [["id", *[f"p{k}" for k in range(split.num_classes)]]]
    lines += [
        [entity, *[f"{p:.6f}" for p in predictions[entity]]] for entity in entities if entity in predictions
    ]
    text = "\n".join(",".join(row) for row in lines) + "\n"
    if out is not None:
        out.write_text(text)
    else:
        typer.echo(text, nl=False)
    console.print(
        f"version {version.version}: {len(predictions)} of {len(entities)} ids predicted"
        f" ({len(entities) - len(predictions)} not held by every domain)"
    )
