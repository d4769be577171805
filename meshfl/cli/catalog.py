"""``meshfl catalog``: the data products the domains have registered on the bus.

Exit codes: 0 done, 1 the bus failed, 2 bad settings.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from meshfl.cli._common import BootstrapOption, PrefixOption, settings_from
from meshfl.errors import MeshflError

if TYPE_CHECKING:
    from meshfl.events import DataProductDescriptor
    from meshfl.settings import MeshflSettings

app = typer.Typer(help="The data-product catalog on the bus.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """The data-product catalog on the bus (a group, so that ``meshfl catalog list`` stays a sub-command)."""


def catalog_products(settings: MeshflSettings, *, domain: str | None = None) -> list[DataProductDescriptor]:
    """The latest descriptor of each product (the catalog topic is compacted by product id), counting
    only descriptors signed by their domain with a key governance registered (forged ones are logged)."""
    from meshfl.bus import read_all
    from meshfl.events import DataProductDescriptor
    from meshfl.identity.trust import EnvelopeVerifier, read_registry
    from meshfl.topics import Topic

    verifier = EnvelopeVerifier(
        read_registry(settings), window_seconds=settings.signature_window_seconds, reader="catalog"
    )
    latest: dict[str, DataProductDescriptor] = {}
    for envelope in read_all(settings, Topic.CATALOG):
        product = envelope.event
        if (
            isinstance(product, DataProductDescriptor)
            and (domain is None or product.domain == domain)
            and verifier.accept(envelope)
        ):
            latest[envelope.key or product.id] = product
    return sorted(latest.values(), key=lambda p: (p.domain, p.id))


@app.command("list")
def list_products(
    domain: Annotated[str | None, typer.Option("--domain", help="Only this domain's products.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Domain, id, version, status, number of columns, rows and tags of every product."""
    settings = settings_from(bootstrap, topic_prefix)
    try:
        products = catalog_products(settings, domain=domain)
    except MeshflError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps([p.model_dump(mode="json") for p in products], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="data products", caption=f"{len(products)} products")
    for column in ("domain", "id", "version", "status", "columns", "rows", "tags"):
        table.add_column(column, justify="right" if column in ("columns", "rows") else "left")
    for p in products:
        rows = "-" if p.num_rows is None else str(p.num_rows)
        table.add_row(p.domain, p.id, p.version, p.status.value, str(len(p.columns)), rows, ", ".join(p.tags))
    Console().print(table)
