"""The events that cross the bus, as pydantic models mirroring the Avro schemas in ``schemas/``.

Each event class names its Avro schema (``AVRO_NAME``); ``meshfl.codec`` turns an event into a
framed Avro message and back. Domain code never sees Avro: it builds and reads these models.
Timestamps are timezone-aware UTC (Avro ``timestamp-millis``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, field_validator

NAMESPACE = "io.meshfl.v1"


def utcnow() -> datetime:
    """Now, truncated to the millisecond so that it survives an Avro round-trip unchanged."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class Event(_Model):
    """Base of every top-level event; ``AVRO_NAME`` is the full name of its Avro record."""

    AVRO_NAME: ClassVar[str]

    def to_avro(self) -> dict[str, Any]:
        """The Avro datum (plain dicts, lists, bytes, enum symbols as str)."""
        return self.model_dump(mode="python")

    @classmethod
    def from_avro(cls, datum: dict[str, Any]) -> Self:
        return cls.model_validate(datum)


# --- tensors ------------------------------------------------------------------------------------


def _as_buffer(value: object) -> bytes | memoryview:
    """``bytes`` as they are; any other buffer as a flat, read-only byte view (no copy)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        view = memoryview(value)
        if not view.c_contiguous:
            raise ValueError("a buffer field needs C-contiguous memory")
        return view.cast("B").toreadonly() if view.format != "B" or view.ndim != 1 else view.toreadonly()
    raise ValueError(f"expected bytes or a buffer, got {type(value).__name__}")


Buffer = Annotated[
    bytes | memoryview,
    PlainValidator(_as_buffer),
    PlainSerializer(bytes, when_used="json"),
]
"""Raw bytes that may be a read-only view of memory owned elsewhere (a decoded message, a tensor being
sent): the codec moves them without copying. Compare and hash them as bytes; ``bytes(x)`` owns a copy."""


class TensorDType(StrEnum):
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    INT64 = "int64"
    INT32 = "int32"
    INT16 = "int16"
    INT8 = "int8"
    UINT8 = "uint8"
    BOOL = "bool"


class Tensor(_Model):
    """One named tensor: C-order, little-endian raw bytes (see ``meshfl.tensors`` for the layout)."""

    name: str
    dtype: TensorDType
    shape: list[int]
    data: Buffer


# --- signatures (see meshfl.identity for the canonical form) ------------------------------------


class Signature(_Model):
    """A detached Ed25519 signature over the event's canonical form, with what it binds."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")  # JSON-safe in --json

    signer: str = Field(description="a domain name, or 'governance'")
    key_id: str = Field(description="32 hex digits: the first 16 bytes of SHA-256 of the raw public key")
    timestamp: datetime
    sequence: int = Field(description="per-sender, strictly increasing")
    value: bytes = Field(description="the 64-byte Ed25519 signature")
    scheme: int | None = Field(
        default=None, description="None: scheme 1 (SHA-256 state digests); 2: BLAKE3 (meshfl.identity)"
    )


_SIGNATURE_DOC = "Ed25519 signature by the sender (meshfl.identity); None when unsigned"


# --- data products (after Bitol's ODPS / ODCS) --------------------------------------------------


class DataProductStatus(StrEnum):
    PROPOSED = "proposed"
    DRAFT = "draft"
    ACTIVE = "active"
    DEPRECATED = "deprecated"
    RETIRED = "retired"


class Column(_Model):
    """A column of a data contract's schema (ODCS ``schema.properties``)."""

    name: str
    logical_type: str = Field(description="ODCS logical type: integer, number, string, boolean, date...")
    physical_type: str | None = None
    required: bool = True
    description: str = ""
    unit: str | None = None
    classification: str | None = Field(None, description="e.g. public, internal, restricted, pii")


class OutputPort(_Model):
    name: str
    type: str = Field(description="e.g. parquet, csv, table")
    location: str = Field(description="where the domain keeps it; never read outside the domain")
    description: str = ""
    contract_id: str | None = None


class QualityFigure(_Model):
    """A measured quality figure or SLO (ODCS ``quality`` / ``slaProperties``)."""

    name: str
    value: float
    unit: str | None = None
    threshold: float | None = None


class DataProductDescriptor(Event):
    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.DataProductDescriptor"

    id: str
    domain: str
    owner: str
    version: str
    status: DataProductStatus = DataProductStatus.ACTIVE
    name: str = ""
    description: str = ""
    output_ports: list[OutputPort] = Field(default_factory=list)
    contract_id: str = ""
    contract_version: str = ""
    columns: list[Column] = Field(default_factory=list)
    quality: list[QualityFigure] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    num_rows: int | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description=_SIGNATURE_DOC)


class DataProductRef(_Model):
    id: str
    version: str


# --- tasks --------------------------------------------------------------------------------------


class ModelSpec(_Model):
    """What to train: an architecture known to ``meshfl.modelspec`` and its sizes."""

    architecture: str = "mlp"
    input_dim: int
    hidden: list[int] = Field(default_factory=list)
    output_dim: int
    activation: str = "relu"
    dropout: float = 0.0


class StrategySpec(_Model):
    name: str = "fedavg"
    params: dict[str, float] = Field(default_factory=dict)


class FederationMode(StrEnum):
    SYNC = "sync"
    ASYNC = "async"


class RoundPolicy(_Model):
    min_domains: int = 1
    target_domains: int | None = Field(None, description="close as soon as this many are in")
    deadline_seconds: float | None = Field(None, description="close at the deadline with >= min_domains")
    max_staleness: int = 0
    buffer_size: int = Field(0, description="async mode: aggregate every K accepted updates")
    staleness_alpha: float = 0.5


class UpdateChecks(_Model):
    max_l2_norm: float | None = Field(None, description="bound on ||update - global||_2")
    norm_action: str = Field("reject", description="reject | clip")
    min_examples: int = 1


class PrivacyPolicy(_Model):
    """Central DP: clip each delta to clip_norm, add N(0, (noise_multiplier*clip)^2) to the sum, / n."""

    clip_norm: float
    noise_multiplier: float
    target_delta: float = 1e-5
    max_epsilon: float | None = None


class AdmissionPolicy(_Model):
    allowed_domains: list[str] = Field(default_factory=list, description="empty = any registered domain")
    suspended_domains: list[str] = Field(default_factory=list)
    required_tags: list[str] = Field(default_factory=list)


class TrainingTask(Event):
    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.TrainingTask"

    id: str
    description: str = ""
    owner: str = ""
    model: ModelSpec
    features: list[str]
    label: str
    num_classes: int
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    mode: FederationMode = FederationMode.SYNC
    rounds: int = Field(ge=1)
    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.05
    lr_schedule: str = Field("constant", description="constant | cosine (meshfl.domain.training)")
    optimizer: str = "sgd"
    seed: int = 0
    round_policy: RoundPolicy = Field(default_factory=RoundPolicy)
    update_checks: UpdateChecks = Field(default_factory=UpdateChecks)
    privacy: PrivacyPolicy | None = None
    admission: AdmissionPolicy = Field(default_factory=AdmissionPolicy)
    created_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description=_SIGNATURE_DOC)


# --- the federation -----------------------------------------------------------------------------


class ModelUpdate(Event):
    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.ModelUpdate"

    update_id: str
    task_id: str
    round: int
    base_version: int
    domain: str
    data_products: list[DataProductRef] = Field(default_factory=list)
    num_examples: int
    metrics: dict[str, float] = Field(default_factory=dict)
    tensors: list[Tensor]
    created_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description=_SIGNATURE_DOC)


class PrivacySpent(_Model):
    epsilon: float
    delta: float


class ModelVersion(Event):
    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.ModelVersion"

    task_id: str
    version: int
    parent_version: int | None
    round: int
    strategy: StrategySpec
    contributing_updates: list[str] = Field(default_factory=list, description="in aggregation order")
    contributing_domains: list[str] = Field(default_factory=list)
    tensors: list[Tensor]
    server_state: list[Tensor] = Field(default_factory=list, description="server optimizer state")
    sha256: str
    metrics: dict[str, float] = Field(default_factory=dict)
    privacy: PrivacySpent | None = None
    created_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description=_SIGNATURE_DOC)


class DecisionOutcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class GovernanceDecision(Event):
    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.GovernanceDecision"

    decision_id: str
    task_id: str
    update_id: str
    domain: str
    round: int
    outcome: DecisionOutcome
    policy: str
    reason: str
    source_partition: int | None = None
    source_offset: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description=_SIGNATURE_DOC)
    base_version: int | None = None


class AgentStatus(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    TRAINING = "training"
    STOPPING = "stopping"


class DomainHeartbeat(Event):
    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.DomainHeartbeat"

    domain: str
    agent_id: str
    status: AgentStatus
    data_products: list[str] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=list)
    current_round: int | None = None
    meshfl_version: str = ""
    sent_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description=_SIGNATURE_DOC)


class AgentProgress(Event):
    """Written in the same transaction as an update, so a restarted agent never publishes twice."""

    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.AgentProgress"

    domain: str
    task_id: str
    last_round: int
    last_update_id: str
    updated_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description=_SIGNATURE_DOC)


class Chunk(Event):
    """One piece of a payload above the topic's message size; reassembled by the consumer."""

    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.Chunk"

    message_id: str
    index: int
    count: int
    total_size: int
    sha256: str | None = Field(default=None, description="hex SHA-256 of the whole payload (older sets)")
    blake3: str | None = Field(default=None, description="hex BLAKE3-256 of the whole payload (writers)")
    data: Buffer

    @field_validator("index")
    @classmethod
    def _index_in_range(cls, value: int) -> int:
        if value < 0:
            raise ValueError("chunk index must be >= 0")
        return value


class KeyAction(StrEnum):
    REGISTERED = "registered"
    REVOKED = "revoked"


class KeyEvent(Event):
    """Governance registers or revokes a domain key (compacted ``keys`` topic, key ``domain/key_id``)."""

    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.KeyEvent"

    domain: str
    key_id: str
    public_key: bytes = Field(description="raw 32-byte Ed25519 public key")
    action: KeyAction
    effective_at: datetime = Field(default_factory=utcnow)
    reason: str = ""
    signature: Signature | None = Field(None, description=_SIGNATURE_DOC)


SIGNED_EVENT_TYPES: tuple[type[Event], ...] = (
    DataProductDescriptor,
    TrainingTask,
    ModelUpdate,
    ModelVersion,
    GovernanceDecision,
    DomainHeartbeat,
    AgentProgress,
    KeyEvent,
)
"""Every event but ``Chunk`` (transport framing: the reassembled event is what is signed)."""

EVENT_TYPES: tuple[type[Event], ...] = (
    DataProductDescriptor,
    TrainingTask,
    ModelUpdate,
    ModelVersion,
    GovernanceDecision,
    DomainHeartbeat,
    AgentProgress,
    KeyEvent,
    Chunk,
)

# The split-learning events live beside their kin in meshfl.vertical, governance's state record in
# meshfl.state_events; those modules need the classes above.
from meshfl.state_events import GovernanceState  # noqa: E402
from meshfl.vertical.events import SPLIT_EVENT_TYPES  # noqa: E402

SIGNED_EVENT_TYPES = (*SIGNED_EVENT_TYPES, GovernanceState)
EVENT_TYPES = (*EVENT_TYPES, GovernanceState, *SPLIT_EVENT_TYPES)
EVENTS_BY_AVRO_NAME: dict[str, type[Event]] = {cls.AVRO_NAME: cls for cls in EVENT_TYPES}
