"""Settings shared by every meshfl process.

Read, lowest priority first, from defaults, a TOML config file (``--config``, ``MESHFL_CONFIG`` or
``./meshfl.toml``), then ``MESHFL_*`` environment variables. ``kafka`` passes any librdkafka setting
straight through (``security.protocol``, ``sasl.mechanism``, ``ssl.ca.location`` ...), so TLS and SASL
work as with any Kafka client; from the environment use ``MESHFL_KAFKA='{"security.protocol": "SSL"}'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from meshfl.errors import ConfigError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meshfl"


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "meshfl"


class MeshflSettings(BaseSettings):
    """Connection, topic and framing settings; the same for agents, governance and auditors."""

    model_config = SettingsConfigDict(env_prefix="MESHFL_", extra="forbid", validate_default=True)

    bootstrap_servers: str = Field(DEFAULT_BOOTSTRAP, description="Kafka bootstrap servers, host:port,...")
    kafka: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra librdkafka settings passed to every client."
    )
    topic_prefix: str = Field("meshfl.", description="Prefix of every meshfl topic name.")
    replication_factor: int = Field(
        -1,
        ge=-1,
        description="Replication factor of the topics meshfl creates; -1 takes the broker's "
        "default.replication.factor (and its min.insync.replicas), right on one node and on three.",
    )
    partitions: int = Field(1, ge=1, description="Partitions of the topics meshfl creates.")
    schema_registry_url: str | None = Field(
        None, description="Confluent Schema Registry URL; when set, messages use the registry wire format."
    )
    max_message_bytes: int = Field(
        900_000, ge=16_384, description="Payloads above this size are split into chunks."
    )
    max_payload_bytes: int = Field(
        4 * 1024**3, description="Largest reassembled payload a consumer accepts (memory guard)."
    )
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="Maven jars and other caches.")
    data_dir: Path = Field(default_factory=_default_data_dir, description="Local broker data and state.")
    dp_secret: SecretStr | None = Field(
        None,
        description="Key of the DP noise (HMAC-SHA256 -> ChaCha20), at least 32 bytes; shared by governance "
        "and auditors, never published.",
    )
    governance_public_key: str | None = Field(
        None,
        description="Governance's pinned Ed25519 public key, `ed25519:<base64>` or the path of its .pub "
        "file: every participant checks tasks, versions, decisions and key events against it.",
    )
    governance_private_key: Path | None = Field(
        None, description="Governance's private key file (mode 0600): only governance and its key tools."
    )
    signature_window_seconds: float = Field(
        900.0, gt=0, description="Largest gap between an event's signing time and its Kafka record time."
    )
    statistics_interval_ms: int = Field(
        0,
        ge=0,
        description="librdkafka statistics for the metrics endpoint (0 = off; --metrics-port sets it).",
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    @field_validator("replication_factor")
    @classmethod
    def _broker_default_or_positive(cls, value: int) -> int:
        if value == 0:
            raise ValueError("replication_factor must be -1 (the broker's default) or at least 1")
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("bootstrap_servers must name at least one host:port")
        return value.strip()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def dp_key(self) -> bytes:
        """The DP noise key as bytes (empty when unset: tasks without DP need none)."""
        return self.dp_secret.get_secret_value().encode() if self.dp_secret is not None else b""

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """The base librdkafka config of every client: bootstrap plus the pass-through settings.

        librdkafka's own log is kept to notices and worse (``log_level`` 5): its info lines go to
        stderr unstructured; set ``kafka.log_level`` to 7 when debugging a connection.
        """
        return {"bootstrap.servers": self.bootstrap_servers, "log_level": 5, **self.kafka, **overrides}


def _config_file() -> Path | None:
    explicit = os.environ.get("MESHFL_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"MESHFL_CONFIG points to {path}, which is not a file")
        return path
    local = Path("meshfl.toml")
    return local if local.is_file() else None


def load_settings(**overrides: Any) -> MeshflSettings:
    """Build settings, turning validation failures into a ConfigError that says which field is wrong."""
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return MeshflSettings(**clean)
    except ValidationError as exc:
        raise ConfigError(f"invalid meshfl settings: {exc}") from exc
