"""Shared fixtures. Tests that need Kafka get a real broker, never a mock, and never skip.

``kafka_bootstrap`` is, in order of preference: ``MESHFL_BOOTSTRAP_SERVERS`` when set (CI with a
service, a developer's own cluster); an ``apache/kafka`` container when a Docker engine answers; else
meshfl's own ``LocalBroker`` (Kafka from Maven jars, Java 17+) on free ports in a temporary data
dir. It starts lazily, once a session, only when a test asks for it; it is stopped at session end.
``schema_registry_url`` is a real Confluent-compatible Schema Registry (Apicurio Registry built from
Maven Central by ``meshfl.registry_server``) on a free port, started the same way; a failure fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshfl.broker import (
    LocalBroker,
    docker_available,
    free_port_block,
    kafka_version,
    new_kafka_uuid,
    wait_for_broker,
)
from meshfl.errors import BrokerError
from meshfl.identity.local import with_governance_keys
from meshfl.registry_server import LocalSchemaRegistry, RegistryServerError
from meshfl.settings import MeshflSettings
from tests.brokers import start_private_broker

KAFKA_IMAGE = f"apache/kafka:{kafka_version()}"


def _worker_port_range() -> None:
    """Parallel workers (pytest-xdist) each pick brokers' and registries' ports in a range of their own:
    a test that stops its broker and starts it again on the same ports must not find them taken by
    another worker's broker in between."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker.startswith("gw") or not count or os.environ.get("MESHFL_PORT_RANGE"):
        return
    width = 12_000 // max(1, int(count))
    low = 20_000 + int(worker[2:]) * width
    os.environ["MESHFL_PORT_RANGE"] = f"{low}-{low + width}"


_worker_port_range()
START_TIMEOUT_S = 120.0
REGISTRY_START_TIMEOUT_S = 240.0


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker shared by the whole test session."""
    explicit = os.environ.get("MESHFL_BOOTSTRAP_SERVERS", "").strip()
    if explicit:
        try:
            wait_for_broker(explicit, timeout=30.0)
        except BrokerError as exc:
            pytest.fail(f"MESHFL_BOOTSTRAP_SERVERS={explicit} does not answer: {exc}")
        yield explicit
    elif docker_available():
        yield from _container_broker()
    else:
        yield from _local_broker(tmp_path_factory.mktemp("kafka"))


@pytest.fixture(scope="session")
def governance_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's governance key pair lives (made once; every test runs signed)."""
    return tmp_path_factory.mktemp("governance-keys")


@pytest.fixture(scope="session")
def schema_registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real Confluent-compatible Schema Registry shared by the whole test session."""
    logs = tmp_path_factory.mktemp("schema-registry")
    registry = LocalSchemaRegistry(
        port=free_port_block(1), cache_dir=MeshflSettings().cache_dir, log_path=logs / "registry.log"
    )
    try:
        url = registry.start(timeout=REGISTRY_START_TIMEOUT_S)
    except RegistryServerError as exc:
        registry.stop()
        pytest.fail(
            "tests of the Schema Registry framing need a real registry: Java 17+ and Maven build one "
            f"(Apicurio Registry) into the meshfl cache. Starting it failed: {exc}"
        )
    try:
        yield url
    finally:
        registry.stop()


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path, governance_key_dir: Path) -> MeshflSettings:
    """Settings on the session's broker with a topic prefix of this test's own, governance's key pinned."""
    plain = MeshflSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        data_dir=tmp_path / "data",
    )
    return with_governance_keys(plain, governance_key_dir)


def _local_broker(data_dir: Path) -> Iterator[str]:
    try:
        broker, bootstrap = start_private_broker(
            data_dir, lambda home, port: LocalBroker(data_dir=home, port=port), timeout=START_TIMEOUT_S
        )
    except BrokerError as exc:
        pytest.fail(
            "tests marked `kafka` need a real broker: set MESHFL_BOOTSTRAP_SERVERS, run a Docker engine, "
            f"or have Java 17+ and Maven for meshfl's local broker. Starting it failed: {exc}"
        )
    try:
        yield bootstrap
    finally:
        broker.stop()


def _container_broker() -> Iterator[str]:
    """One KRaft node from the official image, its client port published on the same host port."""
    from docker.errors import DockerException
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.docker_client import DockerClient

    port = free_port_block(1)
    host = DockerClient().host()
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(port, port)
    env = {
        "CLUSTER_ID": new_kafka_uuid(),
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://0.0.0.0:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_TRANSACTION_MAX_TIMEOUT_MS": "900000",
    }
    container.with_envs(**env)
    bootstrap = f"{host}:{port}"
    try:
        container.start()
        wait_for_broker(bootstrap, timeout=START_TIMEOUT_S)
    except (DockerException, BrokerError) as exc:
        container.stop()
        pytest.fail(f"the {KAFKA_IMAGE} container did not come up on {bootstrap}: {exc}")
    try:
        yield bootstrap
    finally:
        container.stop()
