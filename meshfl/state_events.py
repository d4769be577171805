"""The governance-state record (``schemas/GovernanceState.avsc``): governance's state per updates partition.

Written in the same transaction as the decisions, versions and consumer offsets it summarises, on a
compacted topic (key ``partition-<n>``), so a restart reads the latest record and then only the log after
it (``governance.state_topic``) instead of every decision and version ever written. Signed by governance
like every governance event; a reader refuses a record without governance's signature.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from meshfl.events import NAMESPACE, Event, Signature, utcnow


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LogPosition(_Model):
    topic: str
    partition: int
    offset: int


class VersionPointer(_Model):
    version: int
    search_from: list[LogPosition]


class DecidedUpdate(_Model):
    update_id: str
    forget_at: int


class TaskSummary(_Model):
    task_id: str
    versions: list[VersionPointer]
    decided: list[DecidedUpdate]
    failed_round: int | None = None
    failed_reason: str | None = None


class OffsetDecision(_Model):
    offset: int
    update_id: str
    accepted: bool
    settled: bool


class GovernanceState(Event):
    AVRO_NAME: ClassVar[str] = f"{NAMESPACE}.GovernanceState"

    updates_topic: str
    updates_partition: int
    committed_offset: int
    log_ends: list[LogPosition]
    tasks: list[TaskSummary]
    open_decisions: list[OffsetDecision]
    written_at: datetime = Field(default_factory=utcnow)
    signature: Signature | None = Field(None, description="Ed25519 signature by governance")
