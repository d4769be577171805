"""``meshfl keys``: Ed25519 key pairs for domains and governance, and the trust registry on the bus.

Exit codes: 0 done, 1 the bus failed, 2 bad settings, keys or arguments.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from meshfl.cli._common import BootstrapOption, PrefixOption, settings_from
from meshfl.errors import ConfigError, MeshflError

# The library (torch for state hashes, librdkafka for the bus) is imported by the commands that run,
# so that ``meshfl --help`` stays light (tests/test_startup.py).

app = typer.Typer(help="Signing keys and the trust registry.", no_args_is_help=True)

DomainDirOption = Annotated[
    Path | None, typer.Option("--domain-dir", help="A domain's folder (its key is keys/signing.key).")
]


def _fail(exc: MeshflError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2 if isinstance(exc, ConfigError) else 1)


@app.command("init")
def init(
    domain_dir: DomainDirOption = None,
    governance: Annotated[
        Path | None, typer.Option("--governance", help="Write governance's key pair to this path.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key (new identity).")] = False,
) -> None:
    """Create a key pair: private key mode 0600 (never on the bus), public key beside it as .pub."""
    from meshfl.identity.keys import generate_private_key, key_id, write_key_pair
    from meshfl.identity.trust import domain_key_path

    if (domain_dir is None) == (governance is None):
        typer.echo("error: give exactly one of --domain-dir or --governance", err=True)
        raise typer.Exit(2)
    path = domain_key_path(domain_dir) if domain_dir is not None else governance
    assert path is not None
    key = generate_private_key()
    try:
        public = write_key_pair(path, key, overwrite=force)
    except ConfigError as exc:
        raise _fail(exc) from exc
    typer.echo(f"private key {path} (mode 0600), public key {public}, key id {key_id(key)}")
    if governance is not None:
        typer.echo(f"pin it in every participant: MESHFL_GOVERNANCE_PUBLIC_KEY={public.read_text().strip()}")


@app.command("register")
def register(
    domain_dir: DomainDirOption = None,
    domain: Annotated[str | None, typer.Option("--domain", help="Domain name (with --public-key).")] = None,
    public_key: Annotated[
        str | None, typer.Option("--public-key", help="ed25519:<base64> or a .pub file (with --domain).")
    ] = None,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Governance registers a domain's public key (signed with MESHFL_GOVERNANCE_PRIVATE_KEY)."""
    from meshfl.identity.keys import load_public_key
    from meshfl.identity.trust import governance_signer, publish_key_event, register_domain_dir

    settings = settings_from(bootstrap, topic_prefix)
    try:
        signer = governance_signer(settings)
        if domain_dir is not None:
            event = register_domain_dir(settings, signer, domain_dir)
        elif domain is not None and public_key is not None:
            event = publish_key_event(settings, signer, domain, load_public_key(public_key))
        else:
            raise ConfigError("give --domain-dir, or --domain with --public-key")
    except MeshflError as exc:
        raise _fail(exc) from exc
    typer.echo(f"registered key {event.key_id} for {event.domain}")


@app.command("revoke")
def revoke(
    domain: Annotated[str, typer.Option("--domain", help="The key's domain.")],
    key: Annotated[str, typer.Option("--key-id", help="Id of the key to revoke.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the log).")] = "revoked",
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Governance revokes a domain key: its signatures from now on are refused everywhere."""
    from meshfl.events import KeyAction
    from meshfl.identity.trust import governance_signer, publish_key_event, read_registry

    settings = settings_from(bootstrap, topic_prefix)
    try:
        signer = governance_signer(settings)
        record = next((r for r in read_registry(settings).keys_of(domain) if r.key_id == key), None)
        if record is None:
            raise ConfigError(f"no key {key} registered for {domain!r}")
        publish_key_event(settings, signer, domain, record.public_key, KeyAction.REVOKED, reason=reason)
    except MeshflError as exc:
        raise _fail(exc) from exc
    typer.echo(f"revoked key {key} of {domain}")


@app.command("rotate")
def rotate(
    domain_dir: Annotated[Path, typer.Option("--domain-dir", help="The domain's folder.")],
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """A new key for the domain, registered, then the old one revoked (restart the agent after)."""
    from meshfl.identity.trust import governance_signer, rotate_domain_key

    settings = settings_from(bootstrap, topic_prefix)
    try:
        registered, revoked = rotate_domain_key(settings, governance_signer(settings), domain_dir)
    except MeshflError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{registered.domain}: key {registered.key_id} registered, {revoked.key_id} revoked")


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@app.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """The trust registry as the keys topic holds it (only governance-signed key events count)."""
    from meshfl.identity.trust import read_registry

    settings = settings_from(bootstrap, topic_prefix)
    try:
        registry = read_registry(settings)
    except MeshflError as exc:
        raise _fail(exc) from exc
    rows = [
        {
            "domain": r.domain,
            "key_id": r.key_id,
            "registered": _when(r.registered_at),
            "revoked": _when(r.revoked_at),
        }
        for r in registry
    ]
    if as_json:
        typer.echo(json.dumps({"governance_key_id": registry.governance_key_id, "keys": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="trust registry", caption=f"governance key {registry.governance_key_id}")
    for column in ("domain", "key_id", "registered", "revoked"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row.values())
    Console().print(table)
