"""``meshfl config show``: the effective settings, from a meshfl.toml and the environment, secrets hidden."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from meshfl.cli.config import REDACTED, redacted


def test_secrets_are_redacted_and_the_rest_shown(tmp_path: Path) -> None:
    (tmp_path / "meshfl.toml").write_text(
        'bootstrap_servers = "kafka-a:9093"\n'
        'topic_prefix = "prod."\n'
        'dp_secret = "a-very-long-dp-secret-of-governance-0123456789"\n'
        "[kafka]\n"
        '"security.protocol" = "SASL_SSL"\n'
        '"sasl.mechanism" = "SCRAM-SHA-512"\n'
        '"sasl.username" = "governance"\n'
        '"sasl.password" = "hunter2-but-longer"\n'
        '"ssl.ca.location" = "/etc/meshfl/ca.pem"\n'
        '"ssl.key.password" = "also-secret"\n'
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MESHFL_PARTITIONS": "3"}
    done = subprocess.run(
        [sys.executable, "-m", "meshfl", "config", "show", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": ":".join(sys.path)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["config_file"] == "meshfl.toml"
    values = shown["settings"]
    assert values["bootstrap_servers"] == "kafka-a:9093" and values["topic_prefix"] == "prod."
    assert values["partitions"] == 3  # the environment wins over the file
    assert values["dp_secret"] == REDACTED
    assert values["kafka"]["sasl.password"] == REDACTED
    assert values["kafka"]["ssl.key.password"] == REDACTED
    assert values["kafka"]["sasl.username"] == "governance"
    assert values["kafka"]["ssl.ca.location"] == "/etc/meshfl/ca.pem"
    assert (
        "hunter2" not in done.stdout and "also-secret" not in done.stdout and "0123456789" not in done.stdout
    )


def test_redaction_of_kafka_names() -> None:
    shown = redacted({"kafka": {"sasl.oauthbearer.client.secret": "x", "linger.ms": 5}, "n": 1})
    assert shown == {"kafka": {"linger.ms": 5, "sasl.oauthbearer.client.secret": REDACTED}, "n": 1}
