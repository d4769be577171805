"""The ``meshfl`` command: one sub-command group a module, each a thin layer over the library.

Typer turns every registered command's signature into click parameters before it runs one, which
costs more than the import of the whole CLI. ``main`` therefore builds only the group named on the
command line (``meshfl broker status`` builds the six ``broker`` commands, not all thirty); the
top-level ``--help``, completion and unknown names get the full tree, so they read as before.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from collections.abc import Sequence

GROUPS = ("broker", "domains", "domain", "governance", "models", "catalog", "audit", "config", "keys")
"""Sub-command groups, each the ``app`` of the module of the same name, in ``--help`` order."""
COMMANDS = {"demo": "demo", "predict": "predict", "console": "console"}
"""Top-level commands: name -> module holding the function of the same name."""


def build_app(only: str | None = None) -> typer.Typer:
    """The CLI with every group and command, or with just ``only`` (a name in GROUPS or COMMANDS)."""
    app = typer.Typer(
        name="meshfl",
        help="Federated learning inside a data mesh, over Apache Kafka.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
    )
    app.callback()(_group)  # a group even when it holds one command, so `meshfl demo` stays a word
    for name in GROUPS:
        if only in (None, name):
            app.add_typer(_module(name).app, name=name)
    for name, module in COMMANDS.items():
        if only in (None, name):
            app.command(name)(getattr(_module(module), name))
    return app


def _group() -> None:
    """No options of its own: the sub-commands carry them."""


def _module(name: str) -> Any:
    return importlib.import_module(f"meshfl.cli.{name}")


def _named(argv: Sequence[str]) -> str | None:
    """The group or command the arguments name, when building only it reads the same."""
    if not argv or any(key.endswith("_COMPLETE") for key in os.environ):
        return None
    first = argv[0]
    return first if first in GROUPS or first in COMMANDS else None


def main() -> None:
    only = _named(sys.argv[1:])
    build_app(only)(prog_name="meshfl")


def __getattr__(name: str) -> Any:
    if name == "app":  # the full tree, for CliRunner in tests
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GROUPS", "app", "build_app", "main"]
