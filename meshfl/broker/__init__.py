"""A real Apache Kafka broker for development and tests, started from Maven jars without Docker.

    >>> from meshfl.broker import LocalBroker
    >>> bootstrap = LocalBroker(port=9092).start()   # "127.0.0.1:9092"

``LocalBroker`` resolves the Kafka jars once with Maven (``pom.xml`` beside this module) into the
meshfl cache, formats KRaft storage once, runs each node as a detached ``java`` process, and waits
until the cluster answers a metadata request. ``brokers=3`` gives a three-node cluster with a
three-voter controller quorum, so replication and broker loss can be tested on one machine.
``security=SecurityMode.SCRAM`` (or ``SCRAM_TLS``) configures Kafka's own SASL SCRAM-SHA-512, TLS
and ``StandardAuthorizer``; ``client_config()`` gives the launcher's admin settings.
"""

from __future__ import annotations

from meshfl.broker._cluster import DEFAULT_PORT, BrokerStatus, LocalBroker, NodeStatus
from meshfl.broker._config import new_kafka_uuid
from meshfl.broker._docker import docker_available
from meshfl.broker._maven import find_java, kafka_version, resolve_kafka_jars
from meshfl.broker._process import free_port_block, wait_for_broker
from meshfl.broker._security import ADMIN_USER, BrokerSecurity, SecurityMode

__all__ = [
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
