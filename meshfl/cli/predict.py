"""``meshfl predict``: inference with a vertical (split) model for new entity ids, across the domains."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshfl.cli._common import BootstrapOption, PrefixOption, settings_from
from meshfl.cli._console import LazyConsole
from meshfl.errors import ConfigError, MeshflError

if TYPE_CHECKING:
    from meshfl.identity import Signer
    from meshfl.settings import MeshflSettings

console = LazyConsole(stderr=True)


def _signer(
    settings: MeshflSettings, domain_dir: Path | None, principal: str | None, key: Path | None
) -> Signer:
    """Who the request is made as: a domain, a registered principal, or governance."""
    from meshfl.domain.config import load_domain
    from meshfl.identity import Signer
    from meshfl.identity.keys import load_private_key
    from meshfl.identity.trust import domain_signer, governance_signer

    if domain_dir is not None:
        return domain_signer(domain_dir, load_domain(domain_dir).name)
    if principal is not None or key is not None:
        if principal is None or key is None:
            raise ConfigError("--principal and --key go together")
        return Signer(principal, load_private_key(key))
    return governance_signer(settings)


def predict(
    task: Annotated[str, typer.Option("--task", "-t", help="Vertical task id.")],
    ids: Annotated[Path, typer.Option("--ids", help="Entity ids, one a line (the first CSV column).")],
    out: Annotated[Path | None, typer.Option(help="Write id and class probabilities as CSV here.")] = None,
    version: Annotated[
        int | None, typer.Option("--version", "-v", help="The version to predict with (default: the latest).")
    ] = None,
    domain_dir: Annotated[
        Path | None,
        typer.Option("--domain-dir", help="Ask as this domain (signed with its key); default: governance."),
    ] = None,
    principal: Annotated[
        str | None, typer.Option(help="Ask as this registered principal (with --key).")
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="The principal's private key file (with --principal).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 300.0,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Probabilities from a version of the task (the latest unless --version) for ids the domains hold:
    PSI alignment of the ids with every domain, bottoms in the domains, top at governance; no id reaches
    the bus. The request is signed: by governance (MESHFL_GOVERNANCE_PRIVATE_KEY), a domain
    (--domain-dir) or a principal governance registered (--principal, --key); a domain that no longer
    keeps the version's part ([split] keep_versions) refuses, and this command says so."""
    from governance.vertical.replay import find_split_task
    from meshfl.vertical.requests import request_predictions, split_versions

    settings = settings_from(bootstrap, topic_prefix)
    try:
        signer = _signer(settings, domain_dir, principal, key)
        entities = [
            row[0].strip() for row in csv.reader(ids.read_text().splitlines()) if row and row[0].strip()
        ]
        split = find_split_task(settings, task)
        if split is None:
            raise MeshflError(f"no vertical task {task!r} on the tasks topic")
        versions = split_versions(settings, task)
        if not versions:
            raise MeshflError(f"task {task!r} has no version yet")
        number = max(versions) if version is None else version
        if number not in versions:
            raise MeshflError(
                f"task {task!r} has no version {number} (versions {min(versions)}-{max(versions)})"
            )
        chosen = versions[number]
        predictions = request_predictions(settings, split, chosen, entities, timeout=timeout, signer=signer)
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
        f"version {chosen.version}: {len(predictions)} of {len(entities)} ids predicted"
        f" ({len(entities) - len(predictions)} not held by every domain)"
    )
