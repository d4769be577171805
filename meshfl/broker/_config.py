"""The on-disk layout of a local KRaft cluster and the config files each node runs with.

Every node is a combined broker and controller (``process.roles=broker,controller``). Node ``i``
(1-based) listens for clients on ``port + 2(i-1)`` and for the controller quorum on the next port,
so one node uses 9092/9093 and three use 9092..9097. With several nodes the quorum is a dynamic
one (KIP-853): every node knows all controllers through ``controller.quorum.bootstrap.servers`` and
storage is formatted with the same ``--initial-controllers`` list everywhere.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from pydantic import BaseModel, Field

from meshfl.broker._security import BrokerSecurity, SecurityMode

LAYOUT_FILE = "cluster.json"
MAX_BROKERS = 5
_RESERVED_UUIDS = {"AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAQ"}


def new_kafka_uuid() -> str:
    """A random Kafka ``Uuid`` string: 16 bytes, base64url without padding, as ``kafka-storage random-uuid``.

    Like Kafka's own ``Uuid.randomUuid`` it never starts with ``-`` (a command line would take it for a
    flag) and is never one of the reserved ids.
    """
    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")
        if not text.startswith("-") and text not in _RESERVED_UUIDS:
            return text


class NodeSpec(BaseModel):
    """One combined broker+controller of the local cluster."""

    node_id: int
    host: str
    port: int
    controller_port: int
    directory_id: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def controller_address(self) -> str:
        return f"{self.host}:{self.controller_port}"


class ClusterLayout(BaseModel):
    """What a data dir was formatted for; kept as ``cluster.json`` so later commands find the same cluster."""

    cluster_id: str
    kafka_version: str
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65533)
    brokers: int = Field(ge=1, le=MAX_BROKERS)
    directory_ids: list[str]
    security: SecurityMode = SecurityMode.NONE

    @classmethod
    def new(
        cls,
        *,
        kafka_version: str,
        host: str,
        port: int,
        brokers: int,
        security: SecurityMode = SecurityMode.NONE,
    ) -> ClusterLayout:
        return cls(
            cluster_id=new_kafka_uuid(),
            kafka_version=kafka_version,
            host=host,
            port=port,
            brokers=brokers,
            directory_ids=[new_kafka_uuid() for _ in range(brokers)],
            security=security,
        )

    @property
    def nodes(self) -> list[NodeSpec]:
        return [
            NodeSpec(
                node_id=index + 1,
                host=self.host,
                port=self.port + 2 * index,
                controller_port=self.port + 2 * index + 1,
                directory_id=self.directory_ids[index],
            )
            for index in range(self.brokers)
        ]

    def node(self, node_id: int) -> NodeSpec:
        if not 1 <= node_id <= self.brokers:
            raise ValueError(f"node {node_id} does not exist; this cluster has nodes 1..{self.brokers}")
        return self.nodes[node_id - 1]

    @property
    def bootstrap(self) -> str:
        """Every node's client address, so clients survive the loss of any one node."""
        return ",".join(node.address for node in self.nodes)

    @property
    def initial_controllers(self) -> str:
        """The ``--initial-controllers`` argument of ``kafka-storage format`` (KIP-853)."""
        return ",".join(f"{n.node_id}@{n.controller_address}:{n.directory_id}" for n in self.nodes)

    @property
    def replication_factor(self) -> int:
        return min(3, self.brokers)

    @property
    def min_insync_replicas(self) -> int:
        """One less than the replication factor, so ``acks=all`` survives the loss of one node."""
        return max(1, self.replication_factor - 1)


def server_properties(
    layout: ClusterLayout, node: NodeSpec, log_dir: Path, security: BrokerSecurity | None = None
) -> str:
    """The ``server.properties`` of one node; with ``security``, SASL (and TLS) plus the authorizer."""
    rf = layout.replication_factor
    isr = layout.min_insync_replicas
    quorum = ",".join(n.controller_address for n in layout.nodes)
    if security is None:
        client, protocols = "PLAINTEXT", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    else:
        client, protocols = "CLIENT", f"CONTROLLER:SASL_PLAINTEXT,CLIENT:{security.protocol}"
    settings: dict[str, str | int] = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.bootstrap.servers": quorum,
        "listeners": f"{client}://{node.address},CONTROLLER://{node.controller_address}",
        "advertised.listeners": f"{client}://{node.address},CONTROLLER://{node.controller_address}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": client,
        "listener.security.protocol.map": protocols,
        "log.dirs": log_dir.as_posix(),
        "num.partitions": 1,
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        # 50 partitions each by default: creating them costs seconds on the first consumer group or
        # transaction, and a local cluster has few groups and producers.
        "offsets.topic.num.partitions": 5,
        "transaction.state.log.num.partitions": 5,
        "share.coordinator.state.topic.num.partitions": 5,
        "group.initial.rebalance.delay.ms": 0,
        "auto.create.topics.enable": "false",
        "transaction.max.timeout.ms": 900_000,
        # A killed node is fenced after 6 s instead of 9 s, so broker-loss tests move on sooner.
        "broker.heartbeat.interval.ms": 1000,
        "broker.session.timeout.ms": 6000,
    }
    if security is not None:
        settings.update(security.server_settings())
    lines = ["# Written by meshfl.broker; edits are overwritten at the next start."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def log4j2_properties(log_file: Path) -> str:
    """A log4j2 config that writes WARN and above to one rolling file (plus the start/stop lines)."""
    path = log_file.as_posix()
    return "\n".join(
        [
            "status = warn",
            "shutdownHook = disable",
            "appender.file.type = RollingFile",
            "appender.file.name = FILE",
            f"appender.file.fileName = {path}",
            f"appender.file.filePattern = {path}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 10MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 2",
            "rootLogger.level = WARN",
            "rootLogger.appenderRef.file.ref = FILE",
            "logger.raft.name = kafka.server.KafkaRaftServer",
            "logger.raft.level = INFO",
            # A few lines per start, so a node that never comes up shows how far it got.
            "logger.broker.name = kafka.server.BrokerServer",
            "logger.broker.level = INFO",
            "logger.controller.name = kafka.server.ControllerServer",
            "logger.controller.level = INFO",
            "",
        ]
    )
