"""A node that dies while the cluster starts is relaunched, and a start that still fails explains itself.

The "JVM" here is a real program that exits at once (``/bin/false``), so the launcher's own logic is
what runs: spawn, watch, relaunch, give up with each node's state and log tails. No Kafka involved.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import meshfl.broker._cluster as cluster_module
from meshfl.broker import LocalBroker, free_port_block
from meshfl.errors import BrokerError

FALSE = shutil.which("false")


def test_a_node_that_keeps_dying_is_relaunched_then_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert FALSE is not None, "`false` is part of every POSIX system"
    monkeypatch.setattr(cluster_module, "find_java", lambda: Path(FALSE))
    monkeypatch.setattr(cluster_module, "resolve_kafka_jars", lambda _cache: tmp_path / "libs")
    broker = LocalBroker(data_dir=tmp_path / "cluster", port=free_port_block(6), brokers=3)
    for node in (1, 2, 3):  # formatted already: only the launch can fail
        data = tmp_path / "cluster" / f"node-{node}" / "data"
        data.mkdir(parents=True)
        (data / "meta.properties").write_text(f"node.id={node}\n")
    with pytest.raises(BrokerError) as caught:
        broker.start(timeout=60)
    message = str(caught.value)
    assert "exited during start-up (exit code 1" in message
    assert "after 2 relaunch(es)" in message
    for node in (1, 2, 3):  # every node's state is named, with how it ended
        assert f"=== node {node} (" in message
    assert message.count("): exit code 1") == 3
    assert "is empty: the process wrote nothing before it ended" in message
    assert broker.status().state == "stopped"
