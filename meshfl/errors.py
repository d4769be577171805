"""The exception tree of meshfl.

    MeshflError
    ├── ConfigError          bad settings, domain config or task file
    ├── BrokerError          the local Kafka launcher could not do what was asked
    ├── BusError             a Kafka operation failed (translated from confluent_kafka.KafkaException)
    │   ├── ChunkError       a chunked payload is incomplete, corrupt or too large
    │   └── FencedError      a newer producer with the same transactional id took over
    ├── CodecError           bytes could not be framed or decoded as a meshfl event
    │   ├── UnknownSchemaError   the writer schema (fingerprint or registry id) is not known
    │   └── RegistryUnavailableError   the Schema Registry did not answer (transport, timeout, 5xx)
    ├── TensorCodecError     a tensor payload violates the documented layout
    ├── DataContractError    a data product does not satisfy a task's data contract
    ├── TrainingStopped      local training was asked to stop (SIGTERM) before it finished
    ├── SignatureError       an event is unsigned, badly signed, or signed by a key not trusted for it
    └── ReplayError          an audit replay could not be carried out

Daemons never let one of these escape for a single bad message: they record it (dead letter or
governance decision) and go on. They exit with a non-zero code only for errors of their own setup.
"""

from __future__ import annotations


class MeshflError(Exception):
    """Base of every error meshfl raises on purpose."""


class ConfigError(MeshflError):
    """Settings, a domain config or a task file is invalid."""


class BrokerError(MeshflError):
    """The local Kafka broker could not be resolved, started or stopped."""


class BusError(MeshflError):
    """A Kafka client operation failed."""


class ChunkError(BusError):
    """A chunked payload could not be reassembled (missing, corrupt or oversized)."""


class FencedError(BusError):
    """A newer instance holds this transactional id: this one must stop producing (it is a zombie)."""


class CodecError(MeshflError):
    """Bytes are not a well-framed, decodable meshfl event."""


class UnknownSchemaError(CodecError):
    """The writer schema named by a message is not known to this reader."""


class RegistryUnavailableError(CodecError):
    """The Schema Registry is unreachable or failing for now: retry later, never dead-letter for it."""


class TensorCodecError(MeshflError):
    """A tensor payload does not follow the documented binary layout."""


class DataContractError(MeshflError):
    """A data product cannot serve a task (missing columns, wrong types)."""


class TrainingStopped(MeshflError):
    """Local training was interrupted by a stop request; nothing of it is published."""


class SignatureError(MeshflError):
    """An event's signature is missing, invalid, or by a key not trusted for its sender.

    ``policy`` names the check that failed (``unsigned``, ``bad_signature``, ``unknown_key``,
    ``revoked_key``, ``impersonation``, ``replay``): governance puts it in its rejection decision.
    """

    def __init__(self, policy: str, reason: str) -> None:
        super().__init__(f"{policy}: {reason}")
        self.policy = policy
        self.reason = reason


class ReplayError(MeshflError):
    """An audit replay could not be carried out."""


def stops_the_daemon(exc: BaseException) -> bool:
    """Whether an error raised while handling one message is the environment's (the broker or the bus
    failing, a stop asked for), which stops a daemon, rather than that message's fault, which only
    refuses it. A chunk set that does not reassemble is the message's fault."""
    if isinstance(exc, ChunkError):
        return False
    return isinstance(exc, BrokerError | BusError | TrainingStopped) or not isinstance(exc, Exception)
