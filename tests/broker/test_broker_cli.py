"""``meshfl broker start|status|stop`` on a real broker, through typer's runner."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshfl.broker import free_port_block
from meshfl.cli.broker import app

runner = CliRunner()


@pytest.mark.kafka
def test_start_status_stop(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "broker")
    port = free_port_block(2)
    try:
        started = runner.invoke(app, ["start", "--port", str(port), "--data-dir", data_dir])
        assert started.exit_code == 0, started.output
        assert started.stdout.strip().splitlines()[-1] == f"bootstrap: 127.0.0.1:{port}"

        again = runner.invoke(app, ["start", "--data-dir", data_dir])  # port taken from the data dir
        assert again.exit_code == 0, again.output
        assert again.stdout.strip().splitlines()[-1] == f"bootstrap: 127.0.0.1:{port}"

        shown = runner.invoke(app, ["status", "--json", "--data-dir", data_dir])
        assert shown.exit_code == 0, shown.output
        status = json.loads(shown.stdout)
        assert status["state"] == "running" and status["nodes"][0]["pid"] > 0

        other = runner.invoke(app, ["start", "--port", str(port + 10), "--data-dir", data_dir])
        assert other.exit_code == 1
        assert "--data-dir" in other.stderr
    finally:
        stopped = runner.invoke(app, ["stop", "--data-dir", data_dir])
    assert stopped.exit_code == 0, stopped.output
    shown = runner.invoke(app, ["status", "--data-dir", data_dir])
    assert "state: stopped" in shown.stdout

    purged = runner.invoke(app, ["stop", "--purge", "--data-dir", data_dir])
    assert purged.exit_code == 0, purged.output
    assert not Path(data_dir).exists()


@pytest.mark.kafka
def test_start_on_a_taken_port_fails_with_exit_1(tmp_path: Path) -> None:
    port = free_port_block(2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = runner.invoke(app, ["start", "--port", str(port), "--data-dir", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert f"port {port}" in result.stderr and "--port" in result.stderr
    assert "bootstrap:" not in result.stdout
