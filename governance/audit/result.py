"""What a replay reports: per-version verdicts and findings, pydantic so that ``--json`` is the model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

Severity = Literal["error", "warning"]
ProgressCallback = Callable[[int, int], None]


class Finding(BaseModel):
    """Something the replay found wrong (``error``: verification fails) or worth a look (``warning``)."""

    severity: Severity
    kind: str
    message: str
    version: int | None = None
    update_id: str | None = None
    partition: int | None = None
    offset: int | None = None


class VersionCheck(BaseModel):
    """The verdict on one published version."""

    version: int
    round: int
    parent_version: int | None
    strategy: str
    contributing_domains: list[str]
    contributing_updates: list[str]
    published_sha256: str
    recomputed_sha256: str | None = None
    self_hash_ok: bool
    reproduced: bool
    parent_basis: Literal["task", "recomputed", "published", "trusted"] | None = None
    problems: list[str] = Field(default_factory=list)


class ReplayResult(BaseModel):
    task_id: str
    versions: list[VersionCheck]
    findings: list[Finding]
    events_read: int
    seconds: float

    @property
    def ok(self) -> bool:
        """True only if every checked version reproduced and nothing is an error."""
        return (
            bool(self.versions)
            and all(v.reproduced and v.self_hash_ok for v in self.versions)
            and not any(f.severity == "error" for f in self.findings)
        )
