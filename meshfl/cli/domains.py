"""``meshfl domains``: write the example domains' data and show what a domain publishes.

Exit codes: 0 done, 1 a data file breaks its contract or cannot be read, 2 a bad domain config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from meshfl.errors import ConfigError, DataContractError, MeshflError

app = typer.Typer(
    help="The example domains: materialize their data, show their data products.", no_args_is_help=True
)


def configure_logging(log_format: str, level: str) -> None:
    from meshfl.logs import configure_logging as configure  # structlog loads when a command runs

    configure(log_format, level)


def _fail(exc: MeshflError) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2 if isinstance(exc, ConfigError) else 1) from exc


def _counts(counts: dict[int, int]) -> str:
    return " ".join(f"{label}:{n}" for label, n in sorted(counts.items()))


@app.command("materialize")
def materialize(
    root: Annotated[Path, typer.Option("--root", help="Folder of the domains.")] = Path("domains"),
    seed: Annotated[int, typer.Option("--seed", help="Seed of the test split and the Dirichlet draw.")] = 42,
) -> None:
    """Write each example domain's Parquet file and the global test sets (same bytes for a seed)."""
    configure_logging("auto", "WARNING")
    try:
        from meshfl.datasets import materialize  # scikit-learn loads only for this command

        report = materialize(root, seed=seed)
    except MeshflError as exc:
        _fail(exc)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Example domains under {root} (seed {seed})")
    for name in ("dataset", "domain", "rows", "label counts", "file"):
        table.add_column(name, justify="right" if name == "rows" else "left")
    for part in [*report.domains, *report.test_sets]:
        state = "written" if part.written else "unchanged"
        table.add_row(part.dataset, part.domain, str(part.rows), _counts(part.label_counts), state)
    Console().print(table)


@app.command("show")
def show(domain_dir: Annotated[Path, typer.Argument(help="A domain folder (with domain.toml).")]) -> None:
    """Print the descriptors a domain publishes: products, contracts and measured quality."""
    configure_logging("auto", "WARNING")
    try:
        from meshfl.domain.config import load_domain  # pyarrow loads only for this command

        config = load_domain(domain_dir)
        descriptors = config.descriptors()
    except (ConfigError, DataContractError) as exc:
        _fail(exc)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{config.name}[/bold]  owner {config.owner}  {config.description}")
    for descriptor in descriptors:
        rows = "file missing" if descriptor.num_rows is None else f"{descriptor.num_rows} rows"
        console.print(
            f"\n[bold]{descriptor.id}[/bold] v{descriptor.version} ({descriptor.status.value}), {rows}, "
            f"contract {descriptor.contract_id} v{descriptor.contract_version}, "
            f"tags {', '.join(descriptor.tags)}"
        )
        quality = Table(title="quality")
        for name in ("figure", "value", "unit", "threshold"):
            quality.add_column(name)
        for figure in descriptor.quality:
            threshold = "" if figure.threshold is None else f"{figure.threshold:g}"
            quality.add_row(figure.name, f"{figure.value:.4g}", figure.unit or "", threshold)
        console.print(quality)
        columns = Table(title="contract columns")
        for name in ("name", "logical type", "required", "unit", "classification"):
            columns.add_column(name)
        for column in descriptor.columns:
            required = "yes" if column.required else "no"
            columns.add_row(
                column.name, column.logical_type, required, column.unit or "", column.classification or ""
            )
        console.print(columns)
