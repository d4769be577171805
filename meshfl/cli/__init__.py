"""The ``meshfl`` command: one sub-command group a module, each a thin layer over the library."""

from __future__ import annotations

import typer

from meshfl.cli import (
    audit,
    broker,
    catalog,
    config,
    console,
    demo,
    domain,
    domains,
    governance,
    keys,
    models,
    predict,
)

app = typer.Typer(
    name="meshfl",
    help="Federated learning inside a data mesh, over Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(broker.app, name="broker")
app.add_typer(domains.app, name="domains")
app.add_typer(domain.app, name="domain")
app.add_typer(governance.app, name="governance")
app.add_typer(models.app, name="models")
app.add_typer(catalog.app, name="catalog")
app.add_typer(audit.app, name="audit")
app.add_typer(config.app, name="config")
app.add_typer(keys.app, name="keys")
app.command("demo")(demo.demo)
app.command("predict")(predict.predict)
app.command("console")(console.console)


def main() -> None:
    app()


__all__ = ["app", "main"]
