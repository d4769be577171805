"""A private test broker whose picked ports another program takes starts on other ports; a child broker
this process started counts as running while it runs, whatever its command line reads."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

import tests.brokers
from meshfl.broker import LocalBroker, free_port_block
from meshfl.broker._process import pid_alive, spawn, terminate
from tests.brokers import start_private_broker


def test_an_own_running_child_is_alive_even_if_its_command_line_lacks_the_marker(tmp_path: Path) -> None:
    pid = spawn(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        cwd=tmp_path,
        output=tmp_path / "out.log",
        pid_file=tmp_path / "child.pid",
    )
    try:
        assert pid_alive(pid, "server.properties-that-is-not-there")
    finally:
        terminate(pid, "time.sleep", grace=5.0, kill=True)
    assert not pid_alive(pid, "server.properties-that-is-not-there")


@pytest.mark.kafka
def test_a_private_broker_moves_off_ports_another_program_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = free_port_block(2)
    picks = iter([taken])
    monkeypatch.setattr(
        tests.brokers, "free_port_block", lambda count: next(picks, None) or free_port_block(count)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", taken + 1))  # the controller's port, as in the CI failure
        squatter.listen()
        broker, bootstrap = start_private_broker(
            tmp_path / "kafka", lambda home, port: LocalBroker(data_dir=home, port=port), timeout=120
        )
        try:
            assert broker.is_running()
            assert not bootstrap.endswith(f":{taken}")
        finally:
            broker.stop(kill=True)
