"""Settings shared by every meshfl process.

Read, lowest priority first, from defaults, a TOML config file (``--config``, ``MESHFL_CONFIG`` or
``./meshfl.toml``), then ``MESHFL_*`` environment variables. ``kafka`` passes any librdkafka setting
straight through (``security.protocol``, ``sasl.mechanism``, ``ssl.ca.location`` ...), so TLS and SASL
work as with any Kafka client; from the environment use ``MESHFL_KAFKA='{"security.protocol": "SSL"}'``.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from meshfl.errors import ConfigError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meshfl"


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "meshfl"


ENV_PREFIX = "MESHFL_"


class MeshflSettings(BaseModel):
    """Connection, topic and framing settings; the same for agents, governance and auditors.

    Built like any model, it still reads the config file and the environment for the fields it is
    not given, so ``MeshflSettings(topic_prefix="x.")`` keeps the operator's broker address.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    def __init__(self, **values: Any) -> None:
        # Merged key by key, tables too (as pydantic-settings did): an env ``MESHFL_KAFKA`` adds to the
        # file's ``[kafka]`` table, never drops its security settings.
        super().__init__(**_merged(_from_file(), _from_env(type(self)), values))

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
    spill_bytes: int = Field(
        64 * 1024**2,
        ge=0,
        description="Payloads and model versions at least this large live in a file-backed mapping "
        "(meshfl.spill), out of resident memory; 0 = never.",
    )
    spill_dir: Path | None = Field(
        None, description="Directory of those (unnamed) files; the system's temporary directory if unset."
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


def _from_file() -> dict[str, Any]:
    path = _config_file()
    if path is None:
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:  # TOML is UTF-8 or nothing
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc


def _from_env(model: type[BaseModel]) -> dict[str, Any]:
    """``MESHFL_<FIELD>`` values by field; a field holding a mapping or list is given as JSON."""
    env = {name.upper(): value for name, value in os.environ.items()}
    found: dict[str, Any] = {}
    for field, info in model.model_fields.items():
        raw = env.get(ENV_PREFIX + field.upper())
        if raw is None:
            continue
        if get_origin(info.annotation) in (dict, list):
            try:
                found[field] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{ENV_PREFIX}{field.upper()} must be JSON: {exc}") from exc
        else:
            found[field] = raw
    return found


def _merged(*sources: dict[str, Any]) -> dict[str, Any]:
    """``sources`` merged, later ones winning; mappings present in two are merged recursively."""
    out: dict[str, Any] = {}
    for source in sources:
        for key, value in source.items():
            known = out.get(key)
            out[key] = _merged(known, value) if isinstance(known, dict) and isinstance(value, dict) else value
    return out


def _describe(exc: ValidationError) -> str:
    """The failed fields and why, without their values (a ``kafka`` value may hold a password)."""
    lines = [
        f"{'.'.join(str(part) for part in error['loc']) or '(settings)'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return "; ".join(lines)


def load_settings(**overrides: Any) -> MeshflSettings:
    """Build settings, turning validation failures into a ConfigError that says which field is wrong."""
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return MeshflSettings(**clean)
    except ValidationError as exc:
        raise ConfigError(f"invalid meshfl settings: {_describe(exc)}") from None
