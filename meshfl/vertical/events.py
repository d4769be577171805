"""The split-learning events (vertical federation), as pydantic models mirroring ``schemas/Split*.avsc``.

Vertical federation after Li and Toor, "Empowering Data Mesh with Federated Learning" (arXiv 2403.17878):
domains hold different columns of the same entities; each trains a bottom network up to a cut layer,
governance trains the top network on the concatenated cut-layer outputs. Entity ids never travel: the
alignment messages carry only private-set-intersection ciphertexts, and everything after alignment names
rows by their position in the aligned order and batches by (epoch, attempt, batch).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from meshfl.events import NAMESPACE, Buffer, Event, Signature, Tensor, utcnow

GOVERNANCE = "governance"
"""The party name of the governance service in split messages (and its signer name)."""
SIGNATURE_DOC = "Ed25519 signature by the sender (meshfl.identity); None when unsigned"
PRINCIPAL_SEPARATOR = "~"
"""A prediction requester is named ``<principal>~<tag>``: routed by the whole name, signed by the
principal (governance or any identity governance registered a key for)."""


def principal_of(name: str) -> str:
    """Who signs for a party name: the part before ``~`` (a requester), else the name itself."""
    return name.split(PRINCIPAL_SEPARATOR, 1)[0]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


# --- the task -----------------------------------------------------------------------------------


class SplitLayer(_Part):
    """One layer of a split network."""

    kind: str = Field(description="linear | relu | batchnorm | dropout")
    out_features: int | None = Field(None, description="linear: its output width")
    p: float | None = Field(None, description="dropout: the drop probability")


class SplitDomainSpec(_Part):
    """What one domain contributes: its columns and its bottom network up to the cut."""

    domain: str = Field(description="the domain's name")
    data_product: str = Field(description="id of the data product holding the columns and the entity key")
    key: str = Field(description="the entity key column, aligned by private set intersection")
    columns: list[str] = Field(description="the feature columns, in input order")
    bottom: list[SplitLayer] = Field(description="the bottom network, input = len(columns)")
    cut_width: int = Field(description="width of the cut layer (the bottom's output)")


class SplitLabelsAt(StrEnum):
    GOVERNANCE = "governance"
    DOMAIN = "domain"


class SplitLabels(_Part):
    """Where the labels live: shared with governance, or kept by a label-owner domain with its own head."""

    domain: str = Field(description="the domain whose data product holds the label column")
    column: str = Field(description="the label column")
    at: SplitLabelsAt = Field(description="governance: labels shared by position; domain: never leave it")
    head: list[SplitLayer] = Field(
        default_factory=list, description="at = domain: the owner's head on the top's output"
    )


class SplitTask(Event):
    """A vertical (split-learning) task: the ``vertical`` kind of the task file format."""

    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.SplitTask"

    id: str
    description: str = ""
    owner: str = ""
    domains: list[SplitDomainSpec]
    top: list[SplitLayer]
    labels: SplitLabels
    num_classes: int
    epochs: int = Field(ge=1)
    batch_size: int = 256
    learning_rate: float = 1e-4
    optimizer: str = "adam"
    seed: int = 0
    max_in_flight: int = 8
    batch_timeout_seconds: float = 30.0
    test_fraction: float = 0.2
    created_at: datetime = Field(default_factory=utcnow)
    predictors: list[str] | None = None
    signature: Signature | None = Field(None, description=SIGNATURE_DOC)

    def expected_signer(self) -> str:
        """Who must have signed it (``meshfl.identity.sender_of``): governance."""
        return GOVERNANCE

    def may_predict(self, principal: str) -> bool:
        """Whether ``principal`` may ask for predictions of this task's versions: governance, the
        task's own domains, and the principals the task lists. A prediction is an oracle on the model
        and, through the alignment, on which ids each domain holds: no other registered key gets one."""
        parties = {spec.domain for spec in self.domains}
        return principal == GOVERNANCE or principal in parties or principal in (self.predictors or [])


# --- alignment ----------------------------------------------------------------------------------


class SplitAlignStep(StrEnum):
    COLLECT_REQUEST = "collect_request"
    COLLECT_REPLY = "collect_reply"
    SHARE_REQUEST = "share_request"
    SHARE_REPLY = "share_reply"


class SplitAlignment(Event):
    """One private-set-intersection message between a domain and the label holder (ciphertexts only)."""

    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.SplitAlignment"

    task_id: str
    session: str
    step: SplitAlignStep
    sender: str
    recipient: str
    setup: Buffer
    payload: Buffer
    created_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description=SIGNATURE_DOC)

    def expected_signer(self) -> str:
        """The sender's principal: the domain, or the principal of a prediction requester."""
        return principal_of(self.sender)


# --- control ------------------------------------------------------------------------------------


class SplitCommand(StrEnum):
    ALIGN = "align"
    START = "start"
    ABORT = "abort"
    COMPLETE = "complete"
    PREDICT = "predict"


class SplitEpoch(Event):
    """Governance's command to every party of a split task."""

    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.SplitEpoch"

    task_id: str
    command: SplitCommand
    session: str
    epoch: int
    attempt: int
    base_version: int | None = None
    base_parts: dict[str, str] = Field(default_factory=dict)
    train_rows: int = 0
    test_rows: int = 0
    reason: str = ""
    requester: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description=SIGNATURE_DOC)

    def expected_signer(self) -> str:
        """Governance; a prediction request is signed by its requester's principal."""
        return principal_of(self.requester) if self.command == SplitCommand.PREDICT else GOVERNANCE


class SplitReportKind(StrEnum):
    ALIGNED = "aligned"
    READY = "ready"
    DONE = "done"
    REFUSED = "refused"


class SplitReport(Event):
    """A party's report to governance: aligned, ready for an attempt, or done with it; or its refusal of
    a prediction request (to the requester, ``session`` = the request's)."""

    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.SplitReport"

    task_id: str
    party: str
    kind: SplitReportKind
    session: str
    epoch: int = 0
    attempt: int = 0
    rows: int = 0
    alignment_digest: str = ""
    sha256: str | None = None
    data_products: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    labels: list[Tensor] = Field(default_factory=list)
    reason: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description=SIGNATURE_DOC)

    def expected_signer(self) -> str:
        """The party it reports for, exactly (a report never speaks for another party)."""
        return self.party


# --- training -----------------------------------------------------------------------------------


class SplitPhase(StrEnum):
    TRAIN = "train"
    EVAL = "eval"
    PREDICT = "predict"


class SplitActivations(Event):
    """Cut-layer activations of one batch (domain to governance), or the top's output (to the label owner)."""

    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.SplitActivations"

    task_id: str
    epoch: int
    attempt: int
    batch: int
    phase: SplitPhase
    sender: str
    recipient: str = GOVERNANCE
    request_id: str = ""
    tensor: Tensor
    created_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description=SIGNATURE_DOC)

    def expected_signer(self) -> str:
        return self.sender


class SplitGradients(Event):
    """The gradient of the loss w.r.t. one recipient's activations of one batch."""

    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.SplitGradients"

    task_id: str
    epoch: int
    attempt: int
    batch: int
    sender: str
    recipient: str
    tensor: Tensor
    created_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description=SIGNATURE_DOC)

    def expected_signer(self) -> str:
        return self.sender


# --- versions -----------------------------------------------------------------------------------


class SplitPart(_Part):
    """A part of the split model that stays in its domain: only its hash and signature travel."""

    party: str = Field(description="the domain holding the part")
    role: str = Field(description="bottom | head")
    sha256: str = Field(description="meshfl.tensors canonical SHA-256 of the part's state")
    data_products: list[str] = Field(default_factory=list, description="'id@version' it trained on")
    signature: Signature | None = Field(None, description="the domain's signature of its done report")


class SplitModelVersion(Event):
    """One epoch's version of a split model: the top on the bus, the bottoms by hash."""

    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.SplitModelVersion"

    task_id: str
    version: int
    parent_version: int | None
    epoch: int
    attempt: int
    session: str
    train_rows: int
    top: list[Tensor]
    top_sha256: str
    parts: list[SplitPart]
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description=SIGNATURE_DOC)

    def expected_signer(self) -> str:
        return GOVERNANCE


SPLIT_EVENT_TYPES: tuple[type[Event], ...] = (
    SplitTask,
    SplitAlignment,
    SplitEpoch,
    SplitReport,
    SplitActivations,
    SplitGradients,
    SplitModelVersion,
)
