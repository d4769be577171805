"""``meshfl keys``: a domain key made, registered, listed and revoked through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshfl.bus import ensure_topics
from meshfl.cli.keys import app as keys_app
from meshfl.identity.local import identity_env
from meshfl.identity.trust import read_registry
from meshfl.settings import MeshflSettings

pytestmark = pytest.mark.kafka


def test_init_register_list_revoke(settings: MeshflSettings, tmp_path: Path) -> None:
    ensure_topics(settings)
    runner = CliRunner(env=identity_env(settings, with_private_key=True))
    common = ["--bootstrap", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix]
    made = runner.invoke(keys_app, ["init", "--domain-dir", str(tmp_path / "retail")])
    assert made.exit_code == 0, made.output
    private = tmp_path / "retail" / "keys" / "signing.key"
    assert private.stat().st_mode & 0o777 == 0o600
    public = private.with_suffix(".pub")
    again = runner.invoke(keys_app, ["init", "--domain-dir", str(tmp_path / "retail")])
    assert again.exit_code == 2 and "exists" in again.output  # never a silent new identity

    registered = runner.invoke(
        keys_app, ["register", "--domain", "retail", "--public-key", str(public), *common]
    )
    assert registered.exit_code == 0, registered.output
    listed = json.loads(runner.invoke(keys_app, ["list", "--json", *common]).output)
    [row] = listed["keys"]
    assert row["domain"] == "retail" and row["revoked"] == "-"

    revoked = runner.invoke(keys_app, ["revoke", "--domain", "retail", "--key-id", row["key_id"], *common])
    assert revoked.exit_code == 0, revoked.output
    [record] = read_registry(settings).keys_of("retail")
    assert record.revoked_at is not None

    without_key = CliRunner(env={"MESHFL_GOVERNANCE_PRIVATE_KEY": ""}).invoke(
        keys_app, ["register", "--domain", "retail", "--public-key", str(public), *common]
    )
    assert without_key.exit_code == 2  # only governance registers keys
