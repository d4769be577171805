"""``meshfl config``: the settings a command would run with, from defaults, meshfl.toml and MESHFL_*."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from meshfl.cli._common import BootstrapOption, PrefixOption, settings_from

app = typer.Typer(help="The effective settings (secrets redacted).", no_args_is_help=True)

REDACTED = "******"
_SECRET_WORDS = ("password", "secret", "token", "credential", "private", ".pem", "key.pem", "sasl.jaas")


def _secret_key(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS) or lowered.endswith((".key", "ssl.key.location"))


def redacted(values: dict[str, Any]) -> dict[str, Any]:
    """The settings as JSON-ready values with every secret replaced by ``******``.

    Secret fields (``SecretStr``: the DP secret) and pass-through librdkafka settings whose names say
    password, secret, token, private key... are hidden; paths of key files are shown, their contents
    never read.
    """
    shown: dict[str, Any] = {}
    for name, value in values.items():
        if name == "kafka" and isinstance(value, dict):
            shown[name] = {k: REDACTED if _secret_key(k) else v for k, v in sorted(value.items())}
        elif hasattr(value, "get_secret_value"):
            shown[name] = REDACTED
        elif isinstance(value, Path):
            shown[name] = str(value)
        else:
            shown[name] = value
    return shown


@app.command("show")
def show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Print the effective settings and where the config file came from; secrets are redacted."""
    settings = settings_from(bootstrap, topic_prefix)
    values = redacted({name: getattr(settings, name) for name in type(settings).model_fields})
    source = os.environ.get("MESHFL_CONFIG") or ("meshfl.toml" if Path("meshfl.toml").is_file() else None)
    if as_json:
        typer.echo(json.dumps({"config_file": source, "settings": values}, indent=2, default=str))
        return
    typer.echo(f"# config file: {source or '(none: defaults and MESHFL_* environment only)'}")
    for name, value in values.items():
        typer.echo(f"{name} = {json.dumps(value, default=str)}")
