"""The cluster layout and config files, checked without starting Java."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

import meshfl.broker
from meshfl.broker import LocalBroker, new_kafka_uuid
from meshfl.broker._config import ClusterLayout, log4j2_properties, server_properties
from meshfl.errors import BrokerError


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def test_public_surface() -> None:
    assert sorted(meshfl.broker.__all__) == sorted(
        [
            "ADMIN_USER",
            "DEFAULT_PORT",
            "BrokerSecurity",
            "BrokerStatus",
            "LocalBroker",
            "NodeStatus",
            "SecurityMode",
            "docker_available",
            "find_java",
            "free_port_block",
            "kafka_version",
            "new_kafka_uuid",
            "resolve_kafka_jars",
            "wait_for_broker",
        ]
    )


def test_kafka_uuid_is_16_bytes_base64url_without_padding() -> None:
    ids = {new_kafka_uuid() for _ in range(200)}
    assert len(ids) == 200
    for text in ids:
        assert len(text) == 22 and "=" not in text and not text.startswith("-")
        assert len(base64.urlsafe_b64decode(text + "==")) == 16


def test_three_node_layout_uses_consecutive_port_pairs() -> None:
    layout = ClusterLayout.new(kafka_version="4.1.1", host="127.0.0.1", port=9092, brokers=3)
    assert [(n.node_id, n.port, n.controller_port) for n in layout.nodes] == [
        (1, 9092, 9093),
        (2, 9094, 9095),
        (3, 9096, 9097),
    ]
    assert layout.bootstrap == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    voters = layout.initial_controllers.split(",")
    expected = ["1@127.0.0.1:9093", "2@127.0.0.1:9095", "3@127.0.0.1:9097"]
    assert [v.rsplit(":", 1)[0] for v in voters] == expected
    assert [v.rsplit(":", 1)[1] for v in voters] == layout.directory_ids
    with pytest.raises(ValueError, match=r"nodes 1\.\.3"):
        layout.node(4)


def test_single_node_properties(tmp_path: Path) -> None:
    layout = ClusterLayout.new(kafka_version="4.1.1", host="127.0.0.1", port=19092, brokers=1)
    props = _props(server_properties(layout, layout.node(1), tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["log.dirs"] == (tmp_path / "data").as_posix()
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_three_node_properties_replicate_internal_topics(tmp_path: Path) -> None:
    layout = ClusterLayout.new(kafka_version="4.1.1", host="127.0.0.1", port=9092, brokers=3)
    props = _props(server_properties(layout, layout.node(2), tmp_path))
    assert props["node.id"] == "2"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093,127.0.0.1:9095,127.0.0.1:9097"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["min.insync.replicas"] == "2"


def test_log4j2_config_writes_to_the_given_file(tmp_path: Path) -> None:
    text = log4j2_properties(tmp_path / "server.log")
    assert f"appender.file.fileName = {(tmp_path / 'server.log').as_posix()}" in text
    assert "rootLogger.level = WARN" in text


def test_data_dir_made_for_another_layout_is_refused(tmp_path: Path) -> None:
    layout = ClusterLayout.new(kafka_version="4.1.1", host="127.0.0.1", port=19092, brokers=1)
    (tmp_path / "cluster.json").write_text(layout.model_dump_json())
    with pytest.raises(BrokerError, match=r"1 broker\(s\) on port 19092"):
        LocalBroker(data_dir=tmp_path, cache_dir=tmp_path / "cache", port=19100).start()
    with pytest.raises(BrokerError, match="--data-dir"):
        LocalBroker(data_dir=tmp_path, cache_dir=tmp_path / "cache", brokers=3).start()


def test_invalid_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="between 1 and 5"):
        LocalBroker(data_dir=tmp_path, brokers=7)
    with pytest.raises(BrokerError, match="port must be"):
        LocalBroker(data_dir=tmp_path, port=80)


def test_status_of_an_empty_data_dir_is_stopped(tmp_path: Path) -> None:
    status = LocalBroker(data_dir=tmp_path).status()
    assert status.state == "stopped" and not status.running and status.bootstrap is None


def test_purge_refuses_a_directory_that_is_not_a_cluster(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(BrokerError, match="not deleting"):
        LocalBroker(data_dir=tmp_path).purge()
    assert (tmp_path / "precious.txt").read_text() == "keep me"
